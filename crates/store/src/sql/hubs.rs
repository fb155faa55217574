//! [`HubStore`] for [`SqlStore`]: hub leases and agent presence (SPEC §12).
//!
//! Every write here is small and keyed (one lease row per hub, one presence row per
//! agent): nothing a hub does per connect or per renewal grows with the fleet.

use async_trait::async_trait;
use muster_proto::AgentHealth;

use crate::model::*;
use crate::sql::SqlStore;
use crate::sql::rows::decode_all;
use crate::{HubStore, Result};

fn health_word(h: AgentHealth) -> &'static str {
    match h {
        AgentHealth::Ok => "ok",
        AgentHealth::Degraded => "degraded",
    }
}

fn problems_json(problems: &[String]) -> String {
    serde_json::to_string(problems).unwrap_or_else(|_| "[]".to_owned())
}

#[async_trait]
impl HubStore for SqlStore {
    async fn renew_hub_lease(&self, l: &HubLease) -> Result<()> {
        let (_turn, mut tx) = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO hubs (id, address, version, started_at, renewed_at, expires_at, \
             online, degraded, stopped_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL) \
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, \
             version = excluded.version, started_at = excluded.started_at, \
             renewed_at = excluded.renewed_at, expires_at = excluded.expires_at, \
             online = excluded.online, degraded = excluded.degraded, stopped_at = NULL",
        )
        .bind(&l.id)
        .bind(&l.address)
        .bind(&l.version)
        .bind(l.started_at)
        .bind(l.renewed_at)
        .bind(l.expires_at)
        .bind(l.online)
        .bind(l.degraded)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_hub_lease(&self, hub: &str, at: i64) -> Result<()> {
        let (_turn, mut tx) = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE hubs SET stopped_at = $2, expires_at = $2, online = 0, degraded = 0 \
             WHERE id = $1",
        )
        .bind(hub)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        end_presence(&mut tx, hub, at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_hubs(&self) -> Result<Vec<HubRecord>> {
        let rows = sqlx::query("SELECT * FROM hubs ORDER BY address, id")
            .fetch_all(&self.db.pool)
            .await?;
        decode_all(&rows)
    }

    async fn forget_hubs(&self, before: i64) -> Result<u64> {
        let (_turn, mut tx) = self.db.begin_write().await?;
        let done = sqlx::query("DELETE FROM hubs WHERE expires_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(done)
    }

    async fn record_presence(&self, writes: &[PresenceWrite], written_at: i64) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let (_turn, mut tx) = self.db.begin_write().await?;
        for w in writes {
            match w {
                PresenceWrite::Connected {
                    agent_id,
                    hub,
                    session,
                    health,
                    problems,
                    at,
                } => {
                    // A connect written late (its hub's queue was behind) must not
                    // hide a newer session the agent opened on another hub.
                    sqlx::query(
                        "INSERT INTO presence \
                         (agent_id, hub, session, connected, health, problems, since, changed_at) \
                         VALUES ($1, $2, $3, 1, $4, $5, $6, $7) \
                         ON CONFLICT (agent_id) DO UPDATE SET hub = excluded.hub, \
                         session = excluded.session, connected = 1, health = excluded.health, \
                         problems = excluded.problems, since = excluded.since, \
                         changed_at = excluded.changed_at \
                         WHERE presence.since <= excluded.since",
                    )
                    .bind(agent_id)
                    .bind(hub)
                    .bind(session)
                    .bind(health_word(*health))
                    .bind(problems_json(problems))
                    .bind(*at)
                    .bind(written_at)
                    .execute(&mut *tx)
                    .await?;
                }
                PresenceWrite::Health {
                    agent_id,
                    session,
                    health,
                    problems,
                    ..
                } => {
                    sqlx::query(
                        "UPDATE presence SET health = $3, problems = $4, changed_at = $5 \
                         WHERE agent_id = $1 AND session = $2 AND connected = 1",
                    )
                    .bind(agent_id)
                    .bind(session)
                    .bind(health_word(*health))
                    .bind(problems_json(problems))
                    .bind(written_at)
                    .execute(&mut *tx)
                    .await?;
                }
                PresenceWrite::Disconnected {
                    agent_id, session, ..
                } => {
                    // `since` stays the session's start: a close (or a dead hub's
                    // rows ended by another) must never keep out a session that
                    // opened elsewhere in the meantime but was written after it.
                    sqlx::query(
                        "UPDATE presence SET connected = 0, changed_at = $3 \
                         WHERE agent_id = $1 AND session = $2 AND connected = 1",
                    )
                    .bind(agent_id)
                    .bind(session)
                    .bind(written_at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn presence_after(&self, after: (i64, &str), limit: i64) -> Result<Vec<PresenceRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM presence WHERE changed_at >= $1 AND (changed_at > $1 OR agent_id > $2) \
             ORDER BY changed_at, agent_id LIMIT $3",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        decode_all(&rows)
    }

    async fn end_hub_presence(&self, hub: &str, at: i64) -> Result<u64> {
        let (_turn, mut tx) = self.db.begin_write().await?;
        let done = end_presence(&mut tx, hub, at).await?;
        tx.commit().await?;
        Ok(done)
    }
}

async fn end_presence(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    hub: &str,
    at: i64,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE presence SET connected = 0, changed_at = $2 WHERE hub = $1 AND connected = 1",
    )
    .bind(hub)
    .bind(at)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}
