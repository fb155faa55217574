//! [`ProbeStore`] for [`SqlStore`]: the packs each agent announced
//! (`agents.catalog`) and admins' decisions on them (`pack_decisions`).

use async_trait::async_trait;
use sqlx::Row;

use crate::model::*;
use crate::sql::SqlStore;
use crate::sql::rows::{fetch_in, from_json, json};
use crate::{ProbeStore, Result};

#[async_trait]
impl ProbeStore for SqlStore {
    async fn set_agent_catalog(
        &self,
        agent_id: &str,
        catalog: &[muster_proto::PackInfo],
    ) -> Result<()> {
        let (_turn, mut tx) = self.db.begin_write().await?;
        sqlx::query("UPDATE agents SET catalog = $2 WHERE id = $1")
            .bind(agent_id)
            .bind(json(&catalog))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn agent_catalog(&self, agent_id: &str) -> Result<Vec<muster_proto::PackInfo>> {
        let text: Option<String> = sqlx::query_scalar("SELECT catalog FROM agents WHERE id = $1")
            .bind(agent_id)
            .fetch_optional(&self.db.pool)
            .await?;
        match text {
            Some(t) => from_json("agents.catalog", &t),
            None => Ok(Vec::new()),
        }
    }

    async fn pack_decisions(&self, agent_id: &str) -> Result<Vec<PackDecisionRecord>> {
        let rows = sqlx::query("SELECT * FROM pack_decisions WHERE agent_id = $1 ORDER BY pack")
            .bind(agent_id)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(decision_of).collect()
    }

    async fn agents_packs(
        &self,
        agent_ids: &[String],
    ) -> Result<(
        Vec<(String, Vec<muster_proto::PackInfo>)>,
        Vec<PackDecisionRecord>,
    )> {
        let sql = "SELECT id, catalog FROM agents WHERE catalog <> '[]' AND id IN ({in})";
        let catalogs = fetch_in(&self.db.pool, sql, agent_ids)
            .await?
            .iter()
            .map(|r| {
                let text: String = r.try_get("catalog")?;
                Ok((r.try_get("id")?, from_json("agents.catalog", &text)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let sql = "SELECT * FROM pack_decisions WHERE agent_id IN ({in})";
        let decisions = fetch_in(&self.db.pool, sql, agent_ids)
            .await?
            .iter()
            .map(decision_of)
            .collect::<Result<Vec<_>>>()?;
        Ok((catalogs, decisions))
    }

    async fn decide_pack(&self, d: &PackDecisionRecord, audit: &AuditEntry) -> Result<()> {
        let mut w = self.db.begin_audited().await?;
        sqlx::query("DELETE FROM pack_decisions WHERE agent_id = $1 AND pack = $2")
            .bind(&d.agent_id)
            .bind(&d.pack)
            .execute(&mut *w.tx)
            .await?;
        sqlx::query(
            "INSERT INTO pack_decisions (agent_id, pack, decision, needs, decided_by, decided_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&d.agent_id)
        .bind(&d.pack)
        .bind(&d.decision)
        .bind(json(&d.needs))
        .bind(&d.decided_by)
        .bind(d.decided_at)
        .execute(&mut *w.tx)
        .await?;
        w.commit(&[audit]).await
    }
}

fn decision_of(r: &sqlx::any::AnyRow) -> Result<PackDecisionRecord> {
    Ok(PackDecisionRecord {
        agent_id: r.try_get("agent_id")?,
        pack: r.try_get("pack")?,
        decision: r.try_get("decision")?,
        needs: from_json("pack_decisions.needs", &r.try_get::<String, _>("needs")?)?,
        decided_by: r.try_get("decided_by")?,
        decided_at: r.try_get("decided_at")?,
    })
}
