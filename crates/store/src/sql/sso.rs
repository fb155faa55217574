//! [`SsoStore`] for [`SqlStore`]: the provider set through the hub
//! (`sso_settings`, its secret in `hub_meta`), the groups that admit their members
//! (`sso_groups`), and the users a provider signs in (`users`, `user_sessions`).

use async_trait::async_trait;
use sqlx::Row;

use crate::model::*;
use crate::sql::SqlStore;
use crate::sql::access::insert_user;
use crate::sql::rows::{FromRow, decode_all, decode_one, from_json, is_unique_violation, json};
use crate::{Result, SsoStore, StoreError};

/// Where the client secret's ciphertext lives (`hub_meta`), so that a secret
/// rotation re-encrypts it.
pub const SSO_CLIENT_SECRET_KEY: &str = "sso_client_secret";

#[async_trait]
impl SsoStore for SqlStore {
    async fn sso_settings(&self) -> Result<Option<SsoSettingsRecord>> {
        // One statement: the row and its secret as of the same moment.
        let Some(row) = sqlx::query(
            "SELECT s.*, m.value AS client_secret FROM sso_settings s \
             LEFT JOIN hub_meta m ON m.key = $1 WHERE s.id = 1",
        )
        .bind(SSO_CLIENT_SECRET_KEY)
        .fetch_optional(&self.db.pool)
        .await?
        else {
            return Ok(None);
        };
        let secret: Option<String> = row.try_get("client_secret")?;
        Ok(Some(SsoSettingsRecord {
            issuer: row.try_get("issuer")?,
            client_id: row.try_get("client_id")?,
            client_secret: secret,
            display_name: row.try_get("display_name")?,
            groups_claim: row.try_get("groups_claim")?,
            scopes: from_json("sso_settings.scopes", &row.try_get::<String, _>("scopes")?)?,
            updated_at: row.try_get("updated_at")?,
        }))
    }

    async fn set_sso_settings(
        &self,
        settings: Option<&SsoSettingsRecord>,
        audit: &AuditEntry,
    ) -> Result<()> {
        let mut w = self.db.begin_audited().await?;
        sqlx::query("DELETE FROM sso_settings")
            .execute(&mut *w.tx)
            .await?;
        sqlx::query("DELETE FROM hub_meta WHERE key = $1")
            .bind(SSO_CLIENT_SECRET_KEY)
            .execute(&mut *w.tx)
            .await?;
        if let Some(s) = settings {
            sqlx::query(
                "INSERT INTO sso_settings (id, issuer, client_id, display_name, groups_claim, \
                 scopes, updated_at) VALUES (1, $1, $2, $3, $4, $5, $6)",
            )
            .bind(&s.issuer)
            .bind(&s.client_id)
            .bind(&s.display_name)
            .bind(&s.groups_claim)
            .bind(json(&s.scopes))
            .bind(s.updated_at)
            .execute(&mut *w.tx)
            .await?;
            if let Some(secret) = &s.client_secret {
                sqlx::query("INSERT INTO hub_meta (key, value) VALUES ($1, $2)")
                    .bind(SSO_CLIENT_SECRET_KEY)
                    .bind(secret)
                    .execute(&mut *w.tx)
                    .await?;
            }
        }
        w.commit(&[audit]).await
    }

    async fn create_sso_group(&self, g: &SsoGroupRecord, audit: &AuditEntry) -> Result<()> {
        let mut w = self.db.begin_audited().await?;
        let inserted = sqlx::query(
            "INSERT INTO sso_groups (id, name, role, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&g.id)
        .bind(&g.name)
        .bind(&g.role)
        .bind(g.created_at)
        .execute(&mut *w.tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "group {:?} is authorized already",
                    g.id
                )));
            }
            other => other?,
        };
        w.commit(&[audit]).await
    }

    async fn list_sso_groups(&self) -> Result<Vec<SsoGroupRecord>> {
        let rows = sqlx::query("SELECT * FROM sso_groups ORDER BY name, id")
            .fetch_all(&self.db.pool)
            .await?;
        decode_all(&rows)
    }

    async fn remove_sso_group(&self, id: &str, audit: &AuditEntry) -> Result<SsoGroupRecord> {
        let mut w = self.db.begin_audited().await?;
        let row = sqlx::query("DELETE FROM sso_groups WHERE id = $1 RETURNING *")
            .bind(id)
            .fetch_optional(&mut *w.tx)
            .await?;
        let group = SsoGroupRecord::from_row(&row.ok_or(StoreError::NotFound)?)?;
        w.commit(&[audit]).await?;
        Ok(group)
    }

    async fn find_user_by_subject(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM users WHERE sso_issuer = $1 AND sso_subject = $2")
            .bind(issuer)
            .bind(subject)
            .fetch_optional(&self.db.pool)
            .await?;
        decode_one(row)
    }

    async fn record_sso_login(
        &self,
        u: &UserRecord,
        new: bool,
        session_hash: &str,
        expires_at: i64,
        audit: &AuditEntry,
    ) -> Result<()> {
        let mut w = self.db.begin_audited().await?;
        let written = if new {
            insert_user(&mut w.tx, u).await
        } else {
            // Only while the user is still there and enabled, and linked to this
            // identity, to none, or at another provider (the issuer changed): a
            // change made meanwhile wins.
            sqlx::query(
                "UPDATE users SET role = $2, display_name = $3, sso_issuer = $4, \
                 sso_subject = $5, groups = $6, last_login_at = $7 \
                 WHERE id = $1 AND disabled_at IS NULL \
                 AND (sso_subject IS NULL OR sso_issuer <> $4 OR sso_subject = $5)",
            )
            .bind(&u.id)
            .bind(&u.role)
            .bind(&u.display_name)
            .bind(&u.sso_issuer)
            .bind(&u.sso_subject)
            .bind(json(&u.groups))
            .bind(u.last_login_at)
            .execute(&mut *w.tx)
            .await
        };
        match written {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "a user named {:?} or with this identity exists already",
                    u.name
                )));
            }
            Ok(done) if done.rows_affected() == 0 => return Err(StoreError::NotFound),
            other => {
                other?;
            }
        }
        sqlx::query(
            "INSERT INTO user_sessions (hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(session_hash)
        .bind(&u.id)
        .bind(u.last_login_at.unwrap_or(u.created_at))
        .bind(expires_at)
        .execute(&mut *w.tx)
        .await?;
        w.commit(&[audit]).await
    }
}
