//! [`AccessStore`] for [`SqlStore`]: who may call the API. API keys (`api_keys`),
//! users (`users`) and their login sessions (`user_sessions`).

use async_trait::async_trait;

use crate::model::*;
use crate::sql::SqlStore;
use crate::sql::rows::{FromRow, decode_all, decode_one, is_unique_violation, json};
use crate::{AccessStore, Result, StoreError};

#[async_trait]
impl AccessStore for SqlStore {
    async fn create_api_key(&self, k: &ApiKeyRecord, audit: Option<&AuditEntry>) -> Result<()> {
        let mut w = self.db.begin_audited().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, hash, prefix, name, role, agents_glob, expires_at, \
             revoked_at, created_at, last_used_at, probes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&k.id)
        .bind(&k.hash)
        .bind(&k.prefix)
        .bind(&k.name)
        .bind(&k.role)
        .bind(&k.agents_glob)
        .bind(k.expires_at)
        .bind(k.revoked_at)
        .bind(k.created_at)
        .bind(k.last_used_at)
        .bind(json(&k.probes))
        .execute(&mut *w.tx)
        .await?;
        // `None` writes the key unrecorded: the trait leaves that choice to the caller.
        w.commit(audit.as_slice()).await
    }

    async fn find_api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.db.pool)
            .await?;
        decode_one(row)
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.db.pool)
            .await?;
        decode_all(&rows)
    }

    async fn change_api_key(
        &self,
        id: &str,
        change: KeyChange,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<ApiKeyRecord> {
        let mut w = self.db.begin_audited().await?;
        let row = match &change {
            KeyChange::Revoke => {
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING *",
                )
                .bind(id)
                .bind(now)
                .fetch_optional(&mut *w.tx)
                .await?
            }
            // The old value's hash is overwritten: it stops matching at once.
            KeyChange::Rotate { hash, prefix } => {
                sqlx::query(
                    "UPDATE api_keys SET hash = $2, prefix = $3 WHERE id = $1 AND revoked_at IS NULL \
                     RETURNING *",
                )
                .bind(id)
                .bind(hash)
                .bind(prefix)
                .fetch_optional(&mut *w.tx)
                .await?
            }
        };
        let key = ApiKeyRecord::from_row(&row.ok_or(StoreError::NotFound)?)?;
        w.commit(&[audit]).await?;
        Ok(key)
    }

    async fn record_key_use(&self, used: &[(String, i64)]) -> Result<()> {
        let (_turn, mut tx) = self.db.begin_write().await?;
        for (id, at) in used {
            sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
                .bind(id)
                .bind(*at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_user(&self, u: &UserRecord, audit: &AuditEntry) -> Result<()> {
        let mut w = self.db.begin_audited().await?;
        let inserted = insert_user(&mut w.tx, u).await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "a user named {:?} exists already",
                    u.name
                )));
            }
            other => other?,
        };
        w.commit(&[audit]).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY name")
            .fetch_all(&self.db.pool)
            .await?;
        decode_all(&rows)
    }

    async fn find_user(&self, name: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await?;
        decode_one(row)
    }

    async fn change_user(
        &self,
        name: &str,
        change: UserChange,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<UserRecord> {
        let mut w = self.db.begin_audited().await?;
        let row = match change {
            UserChange::Disable => {
                sqlx::query("UPDATE users SET disabled_at = COALESCE(disabled_at, $2) WHERE name = $1 RETURNING *")
                    .bind(name)
                    .bind(now)
                    .fetch_optional(&mut *w.tx)
                    .await?
            }
            UserChange::Enable => {
                sqlx::query("UPDATE users SET disabled_at = NULL WHERE name = $1 RETURNING *")
                    .bind(name)
                    .fetch_optional(&mut *w.tx)
                    .await?
            }
            UserChange::Remove => {
                sqlx::query("DELETE FROM users WHERE name = $1 RETURNING *")
                    .bind(name)
                    .fetch_optional(&mut *w.tx)
                    .await?
            }
        };
        let user = UserRecord::from_row(&row.ok_or(StoreError::NotFound)?)?;
        if change == UserChange::Remove {
            // A removed user's logins end with it.
            sqlx::query("DELETE FROM user_sessions WHERE user_id = $1")
                .bind(&user.id)
                .execute(&mut *w.tx)
                .await?;
        }
        w.commit(&[audit]).await?;
        Ok(user)
    }

    async fn create_user_session(
        &self,
        hash: &str,
        user_id: &str,
        now: i64,
        expires_at: i64,
        audit: &AuditEntry,
    ) -> Result<()> {
        let mut w = self.db.begin_audited().await?;
        sqlx::query("INSERT INTO user_sessions (hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(hash)
            .bind(user_id)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *w.tx)
            .await?;
        w.commit(&[audit]).await
    }

    async fn find_user_session(&self, hash: &str, now: i64) -> Result<Option<UserRecord>> {
        let row = sqlx::query(
            "SELECT u.* FROM user_sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.hash = $1 AND s.expires_at > $2",
        )
        .bind(hash)
        .bind(now)
        .fetch_optional(&self.db.pool)
        .await?;
        decode_one(row)
    }

    async fn delete_user_session(&self, hash: &str) -> Result<()> {
        let (_turn, mut tx) = self.db.begin_write().await?;
        sqlx::query("DELETE FROM user_sessions WHERE hash = $1")
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Write a whole user row (`create_user`, and a first single sign-on).
pub(crate) async fn insert_user(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    u: &UserRecord,
) -> std::result::Result<sqlx::any::AnyQueryResult, sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, name, role, password_hash, disabled_at, created_at, \
         granted_role, display_name, sso_issuer, sso_subject, groups, last_login_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&u.id)
    .bind(&u.name)
    .bind(&u.role)
    .bind(&u.password_hash)
    .bind(u.disabled_at)
    .bind(u.created_at)
    .bind(&u.granted_role)
    .bind(&u.display_name)
    .bind(&u.sso_issuer)
    .bind(&u.sso_subject)
    .bind(json(&u.groups))
    .bind(u.last_login_at)
    .execute(&mut **tx)
    .await
}
