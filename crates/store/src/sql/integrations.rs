//! [`IntegrationStore`] for [`SqlStore`]: the `integrations` table. The secret
//! column holds ciphertext made by the hub; nothing here ever sees a plain one.

use async_trait::async_trait;

use crate::model::*;
use crate::sql::SqlStore;
use crate::sql::rows::{FromRow, decode_all, decode_one, is_unique_violation};
use crate::{IntegrationStore, Result, StoreError};

#[async_trait]
impl IntegrationStore for SqlStore {
    async fn create_integration(&self, i: &IntegrationRecord, audit: &AuditEntry) -> Result<()> {
        let mut w = self.db.begin_audited().await?;
        let inserted = sqlx::query(
            "INSERT INTO integrations (name, kind, url, auth, header_name, secret, status, \
             last_error, last_tested_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&i.name)
        .bind(&i.kind)
        .bind(&i.url)
        .bind(&i.auth)
        .bind(&i.header_name)
        .bind(&i.secret)
        .bind(&i.status)
        .bind(&i.last_error)
        .bind(i.last_tested_at)
        .bind(i.created_at)
        .bind(i.updated_at)
        .execute(&mut *w.tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "an integration named {:?} exists already",
                    i.name
                )));
            }
            other => other?,
        };
        w.commit(&[audit]).await
    }

    async fn list_integrations(&self) -> Result<Vec<IntegrationRecord>> {
        let rows = sqlx::query("SELECT * FROM integrations ORDER BY name")
            .fetch_all(&self.db.pool)
            .await?;
        decode_all(&rows)
    }

    async fn get_integration(&self, name: &str) -> Result<Option<IntegrationRecord>> {
        let row = sqlx::query("SELECT * FROM integrations WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await?;
        decode_one(row)
    }

    async fn record_integration_test(
        &self,
        name: &str,
        test: &IntegrationTest,
        audit: &AuditEntry,
    ) -> Result<IntegrationRecord> {
        let mut w = self.db.begin_audited().await?;
        let row = sqlx::query(
            "UPDATE integrations SET status = $2, last_error = $3, last_tested_at = $4, \
             updated_at = $4 WHERE name = $1 RETURNING *",
        )
        .bind(name)
        .bind(&test.status)
        .bind(&test.last_error)
        .bind(test.tested_at)
        .fetch_optional(&mut *w.tx)
        .await?;
        let integration = IntegrationRecord::from_row(&row.ok_or(StoreError::NotFound)?)?;
        w.commit(&[audit]).await?;
        Ok(integration)
    }

    async fn remove_integration(
        &self,
        name: &str,
        audit: &AuditEntry,
    ) -> Result<IntegrationRecord> {
        let mut w = self.db.begin_audited().await?;
        let row = sqlx::query("DELETE FROM integrations WHERE name = $1 RETURNING *")
            .bind(name)
            .fetch_optional(&mut *w.tx)
            .await?;
        let integration = IntegrationRecord::from_row(&row.ok_or(StoreError::NotFound)?)?;
        w.commit(&[audit]).await?;
        Ok(integration)
    }
}
