//! [`ApprovalStore`] for [`SqlStore`]: the approval queue (`pending_requests`) and
//! the trust rules that approve without an admin (`trust_rules`).

use async_trait::async_trait;

use crate::model::*;
use crate::sql::SqlStore;
use crate::sql::rows::{FromRow, decode_all, decode_one, json};
use crate::{ApprovalStore, Result, StoreError};

#[async_trait]
impl ApprovalStore for SqlStore {
    async fn queue_request(&self, r: &PendingRecord, audit: &AuditEntry) -> Result<PendingRecord> {
        let mut w = self.db.begin_audited().await?;
        let existing = sqlx::query("SELECT * FROM pending_requests WHERE secret_hash = $1")
            .bind(&r.secret_hash)
            .fetch_optional(&mut *w.tx)
            .await?;
        if let Some(row) = existing {
            // A poll: nothing to write, nothing to record.
            return PendingRecord::from_row(&row);
        }
        sqlx::query(
            "INSERT INTO pending_requests (id, secret_hash, kind, agent_id, name, hostname, source, \
             facts, public_key, status, reason, created_at, expires_at, decided_at, decided_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&r.id)
        .bind(&r.secret_hash)
        .bind(&r.kind)
        .bind(&r.agent_id)
        .bind(&r.name)
        .bind(&r.hostname)
        .bind(&r.source)
        .bind(&r.facts)
        .bind(&r.public_key)
        .bind(&r.status)
        .bind(&r.reason)
        .bind(r.created_at)
        .bind(r.expires_at)
        .bind(r.decided_at)
        .bind(&r.decided_by)
        .execute(&mut *w.tx)
        .await?;
        w.commit(&[audit]).await?;
        Ok(r.clone())
    }

    async fn find_request_by_secret(&self, secret_hash: &str) -> Result<Option<PendingRecord>> {
        let row = sqlx::query("SELECT * FROM pending_requests WHERE secret_hash = $1")
            .bind(secret_hash)
            .fetch_optional(&self.db.pool)
            .await?;
        decode_one(row)
    }

    async fn list_pending(&self, now: i64) -> Result<Vec<PendingRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM pending_requests WHERE status = 'pending' AND expires_at > $1 \
             ORDER BY created_at, id",
        )
        .bind(now)
        .fetch_all(&self.db.pool)
        .await?;
        decode_all(&rows)
    }

    async fn decide_request(
        &self,
        id: &str,
        approve: bool,
        reason: Option<&str>,
        by: &str,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<PendingRecord> {
        let mut w = self.db.begin_audited().await?;
        let row = sqlx::query(
            "UPDATE pending_requests SET status = $2, reason = $3, decided_at = $4, decided_by = $5 \
             WHERE id = $1 AND status = 'pending' AND expires_at > $4 RETURNING *",
        )
        .bind(id)
        .bind(if approve { "approved" } else { "denied" })
        .bind(reason)
        .bind(now)
        .bind(by)
        .fetch_optional(&mut *w.tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        w.commit(&[audit]).await?;
        PendingRecord::from_row(&row)
    }

    async fn create_trust_rule(&self, r: &TrustRuleRecord, audit: &AuditEntry) -> Result<()> {
        let mut w = self.db.begin_audited().await?;
        sqlx::query(
            "INSERT INTO trust_rules (id, pattern, cidrs, labels, max_per_hour, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&r.id)
        .bind(&r.pattern)
        .bind(json(&r.cidrs))
        .bind(json(&r.labels))
        .bind(r.max_per_hour)
        .bind(r.created_at)
        .bind(&r.created_by)
        .execute(&mut *w.tx)
        .await?;
        w.commit(&[audit]).await
    }

    async fn list_trust_rules(&self) -> Result<Vec<TrustRuleRecord>> {
        let rows = sqlx::query(
            "SELECT id, pattern, cidrs, labels, max_per_hour, created_at, created_by \
             FROM trust_rules ORDER BY created_at, id",
        )
        .fetch_all(&self.db.pool)
        .await?;
        decode_all(&rows)
    }

    async fn remove_trust_rule(&self, id: &str, audit: &AuditEntry) -> Result<()> {
        let mut w = self.db.begin_audited().await?;
        let done = sqlx::query("DELETE FROM trust_rules WHERE id = $1")
            .bind(id)
            .execute(&mut *w.tx)
            .await?
            .rows_affected();
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        w.commit(&[audit]).await
    }
}
