//! [`SessionStore`] for [`SqlStore`]: the bounded history of agent sessions (one
//! insert when a session opens, one update when it closes) and the fleet counts.

use async_trait::async_trait;
use sqlx::Row;

use crate::model::*;
use crate::sql::SqlStore;
use crate::sql::rows::decode_all;
use crate::{Result, SessionStore};

#[async_trait]
impl SessionStore for SqlStore {
    async fn record_sessions(&self, writes: &[SessionWrite], keep: SessionRetention) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let (_turn, mut tx) = self.db.begin_write().await?;
        for w in writes {
            match w {
                SessionWrite::Open(s) => {
                    sqlx::query(
                        "INSERT INTO agent_sessions \
                         (id, agent_id, hub, address, connected_at, disconnected_at, reason) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&s.id)
                    .bind(&s.agent_id)
                    .bind(&s.hub)
                    .bind(&s.address)
                    .bind(s.connected_at)
                    .bind(s.disconnected_at)
                    .bind(&s.reason)
                    .execute(&mut *tx)
                    .await?;
                    // This agent's rows past the newest `per_agent` or too old: a
                    // handful at most, found through the (agent_id, connected_at) index.
                    sqlx::query(
                        "DELETE FROM agent_sessions WHERE agent_id = $1 AND (connected_at < $2 \
                         OR id NOT IN (SELECT id FROM agent_sessions WHERE agent_id = $1 \
                         ORDER BY connected_at DESC, id DESC LIMIT $3))",
                    )
                    .bind(&s.agent_id)
                    .bind(keep.not_before)
                    .bind(keep.per_agent.max(1))
                    .execute(&mut *tx)
                    .await?;
                }
                SessionWrite::Close { id, at, reason } => {
                    sqlx::query(
                        "UPDATE agent_sessions SET disconnected_at = $2, reason = $3 \
                         WHERE id = $1 AND disconnected_at IS NULL",
                    )
                    .bind(id)
                    .bind(*at)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn close_open_sessions(&self, hub: &str, reason: &str) -> Result<u64> {
        let (_turn, mut tx) = self.db.begin_write().await?;
        // The end is not known: the agent's last heartbeat written (batched, so at
        // most one flush interval early), else the start.
        let done = sqlx::query(
            "UPDATE agent_sessions SET reason = $2, disconnected_at = COALESCE(\
             (SELECT a.last_seen_at FROM agents a WHERE a.id = agent_sessions.agent_id \
              AND a.last_seen_at >= agent_sessions.connected_at), agent_sessions.connected_at) \
             WHERE hub = $1 AND disconnected_at IS NULL",
        )
        .bind(hub)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(done)
    }

    async fn prune_sessions(&self, not_before: i64) -> Result<u64> {
        let (_turn, mut tx) = self.db.begin_write().await?;
        let done = sqlx::query("DELETE FROM agent_sessions WHERE connected_at < $1")
            .bind(not_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(done)
    }

    async fn agent_sessions(&self, agent_id: &str, limit: i64) -> Result<Vec<SessionRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM agent_sessions WHERE agent_id = $1 \
             ORDER BY connected_at DESC, id DESC LIMIT $2",
        )
        .bind(agent_id)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        decode_all(&rows)
    }

    async fn agent_counts(&self, now: i64) -> Result<AgentCounts> {
        // Grouped by state alone, counting cloned ones with COUNT(column): answered
        // from the (state, cloned_at) index without touching the rows.
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n, COUNT(cloned_at) AS cloned FROM agents GROUP BY state",
        )
        .fetch_all(&self.db.pool)
        .await?;
        let mut counts = AgentCounts::default();
        for row in rows {
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            let cloned: i64 = row.try_get("cloned")?;
            match state.as_str() {
                "removed" => {}
                "active" => {
                    counts.active += n - cloned;
                    counts.cloned += cloned;
                }
                _ => counts.revoked += n,
            }
        }
        counts.pending = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pending_requests WHERE status = 'pending' AND expires_at > $1",
        )
        .bind(now)
        .fetch_one(&self.db.pool)
        .await?;
        Ok(counts)
    }
}
