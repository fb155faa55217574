//! [`AuditStore`] for [`SqlStore`]: reading the audit log, walking its chain, and
//! entries that record no other change. (Appending is `chain`'s.)

use async_trait::async_trait;
use sqlx::Row;

use crate::model::*;
use crate::sql::SqlStore;
use crate::sql::rows::FromRow;
use crate::{AuditStore, Result};

#[async_trait]
impl AuditStore for SqlStore {
    async fn audit_entries(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
        // Filters are optional: `$n IS NULL OR column = $n` keeps one static query.
        // The cursor is not: as `$7 IS NULL OR seq < $7` a PostgreSQL generic plan
        // could not start its walk of the `audit_log_seq` index at the cursor, and a
        // deep page would read every newer entry first. Entries from before the
        // chain (no `seq`) therefore appear only on the first page.
        const SELECT: &str = "SELECT seq, at, actor, action, target, source, outcome, details FROM audit_log \
             WHERE ($1 IS NULL OR target = $1) AND ($2 IS NULL OR actor = $2) \
             AND ($3 IS NULL OR action = $3) AND ($4 IS NULL OR at >= $4) AND ($5 IS NULL OR at < $5)";
        let sql = match f.before_seq {
            None => format!("{SELECT} ORDER BY seq DESC LIMIT $6"),
            Some(_) => format!("{SELECT} AND seq < $7 ORDER BY seq DESC LIMIT $6"),
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(f.target.as_deref())
            .bind(f.actor.as_deref())
            .bind(f.action.as_deref())
            .bind(f.since)
            .bind(f.until)
            .bind(f.limit);
        if let Some(before) = f.before_seq {
            query = query.bind(before);
        }
        let rows = query.fetch_all(&self.db.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    // Rows from before the chain have no position.
                    seq: r.try_get::<Option<i64>, _>("seq")?.unwrap_or(0),
                    entry: AuditEntry::from_row(r)?,
                })
            })
            .collect()
    }

    async fn verify_audit(&self) -> Result<AuditVerdict> {
        let rows = sqlx::query(
            "SELECT seq, hash, at, actor, action, target, source, outcome, details FROM audit_log \
             ORDER BY seq IS NULL, seq",
        )
        .fetch_all(&self.db.pool)
        .await?;
        let mut prev_hash = String::new();
        for (expected, r) in (1i64..).zip(rows.iter()) {
            let seq: Option<i64> = r.try_get("seq")?;
            let Some(seq) = seq else {
                return Ok(AuditVerdict::broken(
                    rows.len(),
                    expected,
                    "an entry outside the chain was inserted",
                ));
            };
            if seq > expected {
                return Ok(AuditVerdict::broken(
                    rows.len(),
                    expected,
                    "the entry is missing (deleted)",
                ));
            }
            if seq < expected {
                return Ok(AuditVerdict::broken(
                    rows.len(),
                    seq,
                    "the position repeats (inserted)",
                ));
            }
            let entry = AuditEntry::from_row(r)?;
            let stored: Option<String> = r.try_get("hash")?;
            let want = crate::audit::chain_hash(&self.db.audit_key, &prev_hash, seq, &entry);
            if !crate::audit::same(stored.as_deref().unwrap_or(""), &want) {
                return Ok(AuditVerdict::broken(
                    rows.len(),
                    seq,
                    "the entry was changed or inserted",
                ));
            }
            prev_hash = want;
        }
        Ok(AuditVerdict {
            count: rows.len(),
            broken: None,
        })
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>> {
        let row: Option<(i64, Option<String>)> = sqlx::query_as(
            "SELECT seq, hash FROM audit_log WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(row.map(|(seq, hash)| (seq, hash.unwrap_or_default())))
    }

    async fn audit_hash_at(&self, seq: i64) -> Result<Option<String>> {
        let hash: Option<Option<String>> =
            sqlx::query_scalar("SELECT hash FROM audit_log WHERE seq = $1")
                .bind(seq)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(hash.map(Option::unwrap_or_default))
    }

    async fn record_audit(&self, audit: &AuditEntry) -> Result<()> {
        self.db.begin_audited().await?.commit(&[audit]).await
    }

    async fn record_audits(&self, audit: &[AuditEntry]) -> Result<()> {
        if audit.is_empty() {
            return Ok(());
        }
        let refs: Vec<&AuditEntry> = audit.iter().collect();
        self.db.begin_audited().await?.commit(&refs).await
    }
}
