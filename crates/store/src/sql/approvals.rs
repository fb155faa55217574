//! [`ApprovalStore`] for [`SqlStore`]: the approval queue (`pending_requests`) and
//! the trust rules that approve without an admin (`trust_rules`).

use async_trait::async_trait;

use crate::model::*;
use crate::sql::SqlStore;
use crate::sql::chain::AuditedTx;
use crate::sql::rows::{FromRow, decode_all, decode_one, json};
use crate::{ApprovalStore, Result, StoreError};

/// Expired requests deleted with each new one: more than requests arrive, so the
/// backlog shrinks, and few enough that no insert does much work.
const SWEEP_PER_INSERT: i64 = 64;

/// Requests waiting at `now` (from `source_net`, or from anywhere), counted up to
/// `cap`: the count stops there, so it costs no more than the cap.
async fn waiting(
    w: &mut AuditedTx<'_>,
    source_net: Option<&str>,
    now: i64,
    cap: i64,
) -> Result<i64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT 1 FROM pending_requests WHERE status = 'pending' \
         AND expires_at > $1 AND ($2 IS NULL OR source_net = $2) LIMIT $3) AS w",
    )
    .bind(now)
    .bind(source_net)
    .bind(cap)
    .fetch_one(&mut *w.tx)
    .await?;
    Ok(n)
}

#[async_trait]
impl ApprovalStore for SqlStore {
    async fn queue_request(
        &self,
        r: &PendingRecord,
        limits: Option<QueueLimits>,
        audit: &AuditEntry,
    ) -> Result<PendingRecord> {
        // Holding the chain's lock from the start (PostgreSQL; SQLite writers are
        // serialized anyway) makes the counts below exact across hubs: two requests
        // cannot both take the last place.
        let mut w = self.db.begin_audited_chain().await?;
        let existing = sqlx::query("SELECT * FROM pending_requests WHERE secret_hash = $1")
            .bind(&r.secret_hash)
            .fetch_optional(&mut *w.tx)
            .await?;
        if let Some(row) = existing {
            // A poll: nothing to write, nothing to record.
            return PendingRecord::from_row(&row);
        }
        // Requests nobody decided in time, and denials past the time their requester
        // could still be asking, are only weight: a few go with every new request.
        sqlx::query(
            "DELETE FROM pending_requests WHERE id IN (SELECT id FROM pending_requests \
             WHERE status IN ('pending', 'denied') AND expires_at <= $1 \
             ORDER BY expires_at LIMIT $2)",
        )
        .bind(r.created_at)
        .bind(SWEEP_PER_INSERT)
        .execute(&mut *w.tx)
        .await?;
        if let Some(limits) = limits {
            let from_source =
                waiting(&mut w, Some(&r.source_net), r.created_at, limits.per_source).await?;
            // A full queue still keeps the sweep above: refusals are exactly when
            // the room it frees is wanted.
            if from_source >= limits.per_source {
                w.commit(&[]).await?;
                return Err(StoreError::QueueFull { per_source: true });
            }
            if waiting(&mut w, None, r.created_at, limits.total).await? >= limits.total {
                w.commit(&[]).await?;
                return Err(StoreError::QueueFull { per_source: false });
            }
        }
        sqlx::query(
            "INSERT INTO pending_requests (id, secret_hash, kind, agent_id, name, hostname, source, \
             source_net, facts, labels, public_key, status, reason, created_at, expires_at, \
             decided_at, decided_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(&r.id)
        .bind(&r.secret_hash)
        .bind(&r.kind)
        .bind(&r.agent_id)
        .bind(&r.name)
        .bind(&r.hostname)
        .bind(&r.source)
        .bind(&r.source_net)
        .bind(&r.facts)
        .bind(json(&r.labels))
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

    async fn approve_matching(
        &self,
        matches: &(dyn for<'r> Fn(&'r PendingRecord) -> bool + Send + Sync),
        by: &str,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<Vec<PendingRecord>> {
        let mut w = self.db.begin_audited().await?;
        let rows = sqlx::query(
            "SELECT * FROM pending_requests WHERE status = 'pending' AND expires_at > $1 \
             ORDER BY created_at, id",
        )
        .bind(now)
        .fetch_all(&mut *w.tx)
        .await?;
        let mut approved = Vec::new();
        for row in &rows {
            let request = PendingRecord::from_row(row)?;
            if !matches(&request) {
                continue;
            }
            // Guarded like a single decision: a request another admin (or hub)
            // decided since the read fails the whole approval, rolled back.
            let row = sqlx::query(
                "UPDATE pending_requests SET status = 'approved', decided_at = $2, \
                 decided_by = $3 WHERE id = $1 AND status = 'pending' RETURNING *",
            )
            .bind(&request.id)
            .bind(now)
            .bind(by)
            .fetch_optional(&mut *w.tx)
            .await?
            .ok_or_else(|| {
                StoreError::Conflict(format!(
                    "request {} was decided meanwhile; nothing was approved",
                    request.id
                ))
            })?;
            approved.push(PendingRecord::from_row(&row)?);
        }
        let entries: Vec<AuditEntry> = approved
            .iter()
            .map(|r| AuditEntry {
                target: format!("request:{}", r.id),
                ..audit.clone()
            })
            .collect();
        w.commit(&entries.iter().collect::<Vec<_>>()).await?;
        Ok(approved)
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
