//! [`MetaStore`] for [`SqlStore`]: the database itself (backend, ping) and the
//! hub-wide settings in `hub_meta`, including the secret rotation that re-signs the
//! audit chain.

use async_trait::async_trait;
use sqlx::Row;

use crate::model::*;
use crate::sql::SqlStore;
use crate::sql::rows::FromRow;
use crate::{MetaStore, Result};

#[async_trait]
impl MetaStore for SqlStore {
    fn backend(&self) -> &'static str {
        if self.db.postgres {
            "postgres"
        } else {
            "sqlite"
        }
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.db.pool).await?;
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM hub_meta WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.db.pool)
                .await?,
        )
    }

    async fn init_meta(&self, entries: &[(&str, String)]) -> Result<bool> {
        let (_turn, mut tx) = self.db.begin_write().await?;
        if self.db.postgres {
            // Two hubs starting together on one database: one writes, the other sees it.
            sqlx::query(crate::pg_locks::XACT_LOCK)
                .bind(crate::pg_locks::META_INIT)
                .execute(&mut *tx)
                .await?;
        }
        for (key, _) in entries {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT key FROM hub_meta WHERE key = $1")
                    .bind(*key)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_some() {
                return Ok(false);
            }
        }
        for (key, value) in entries {
            sqlx::query("INSERT INTO hub_meta (key, value) VALUES ($1, $2)")
                .bind(*key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn rotate_secret(
        &self,
        meta: &[(&str, String)],
        integration_secrets: &[(String, String)],
        new_audit_key: [u8; 32],
        audit: &AuditEntry,
    ) -> Result<usize> {
        let mut w = self.db.begin_audited().await?;
        if self.db.postgres {
            // The whole chain is re-signed: no hub may append meanwhile.
            sqlx::query(crate::pg_locks::XACT_LOCK)
                .bind(crate::pg_locks::AUDIT_CHAIN)
                .execute(&mut *w.tx)
                .await?;
        }
        for (key, value) in meta {
            sqlx::query("DELETE FROM hub_meta WHERE key = $1")
                .bind(*key)
                .execute(&mut *w.tx)
                .await?;
            sqlx::query("INSERT INTO hub_meta (key, value) VALUES ($1, $2)")
                .bind(*key)
                .bind(value)
                .execute(&mut *w.tx)
                .await?;
        }
        for (name, secret) in integration_secrets {
            sqlx::query("UPDATE integrations SET secret = $2 WHERE name = $1")
                .bind(name)
                .bind(secret)
                .execute(&mut *w.tx)
                .await?;
        }
        let rows = sqlx::query(
            "SELECT id, seq, at, actor, action, target, source, outcome, details FROM audit_log \
             WHERE seq IS NOT NULL ORDER BY seq",
        )
        .fetch_all(&mut *w.tx)
        .await?;
        let mut prev = String::new();
        for r in &rows {
            let seq: i64 = r.try_get("seq")?;
            let entry = AuditEntry::from_row(r)?;
            let hash = crate::audit::chain_hash(&new_audit_key, &prev, seq, &entry);
            sqlx::query("UPDATE audit_log SET hash = $2 WHERE id = $1")
                .bind(r.try_get::<String, _>("id")?)
                .bind(&hash)
                .execute(&mut *w.tx)
                .await?;
            prev = hash;
        }
        // Its own entry continues the chain under the new key.
        w.commit_under(&new_audit_key, &[audit]).await?;
        Ok(rows.len() + 1)
    }
}
