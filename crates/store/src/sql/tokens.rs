//! [`TokenStore`] for [`SqlStore`]: the `tokens` table.

use async_trait::async_trait;

use crate::model::*;
use crate::sql::SqlStore;
use crate::sql::rows::{FromRow, decode_all, decode_one, json};
use crate::{Result, StoreError, TokenStore};

#[async_trait]
impl TokenStore for SqlStore {
    async fn create_token(&self, t: &TokenRecord, audit: &AuditEntry) -> Result<()> {
        let mut w = self.db.begin_audited().await?;
        sqlx::query(
            "INSERT INTO tokens (id, hash, prefix, description, max_uses, uses, expires_at, \
             revoked_at, pattern, cidrs, labels, allow_replace, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&t.id)
        .bind(&t.hash)
        .bind(&t.prefix)
        .bind(&t.description)
        .bind(t.max_uses)
        .bind(t.uses)
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .bind(&t.pattern)
        .bind(json(&t.cidrs))
        .bind(json(&t.labels))
        .bind(i64::from(t.allow_replace))
        .bind(t.created_at)
        .bind(&t.created_by)
        .execute(&mut *w.tx)
        .await?;
        w.commit(&[audit]).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT * FROM tokens ORDER BY created_at, id")
            .fetch_all(&self.db.pool)
            .await?;
        decode_all(&rows)
    }

    async fn find_token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.db.pool)
            .await?;
        decode_one(row)
    }

    async fn revoke_token(&self, id: &str, now: i64, audit: &AuditEntry) -> Result<TokenRecord> {
        let mut w = self.db.begin_audited().await?;
        let rows = sqlx::query("SELECT * FROM tokens WHERE id = $1 OR prefix = $1")
            .bind(id)
            .fetch_all(&mut *w.tx)
            .await?;
        let token = match rows.as_slice() {
            [row] => TokenRecord::from_row(row)?,
            [] => return Err(StoreError::NotFound),
            _ => {
                return Err(StoreError::Conflict(format!(
                    "{id:?} matches several tokens; use the id"
                )));
            }
        };
        if token.revoked_at.is_some() {
            // Revoking is idempotent: asking again changes nothing and records
            // nothing, so a retried or repeated command cannot pad the audit log.
            return Ok(token);
        }
        sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(&token.id)
            .execute(&mut *w.tx)
            .await?;
        // Recorded against the token's id, whichever way the caller named it.
        let mut audit = audit.clone();
        audit.target = format!("token:{}", token.id);
        w.commit(&[&audit]).await?;
        Ok(TokenRecord {
            revoked_at: Some(now),
            ..token
        })
    }
}
