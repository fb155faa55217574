//! The connection to the database and the dialect switch: [`Db`] (pool, backend,
//! audit key), how a pool is opened, how a write transaction begins on each backend,
//! and the PostgreSQL announcement of changed agents.
//!
//! SQLite allows one writer at a time. Write transactions therefore start with
//! `BEGIN IMMEDIATE` (so two writers never deadlock upgrading read locks) and queue on
//! an in-process mutex first (so they wait in order instead of in SQLite's sleep
//! loop). PostgreSQL needs neither: each write is a single guarded statement.
//!
//! Nothing here knows the group commit or the listener: both build on it.

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Connection as _, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use crate::Result;

/// The PostgreSQL channel on which hubs announce agents whose credentials changed.
/// A macro, so that it can be spliced into the `pg_notify` query.
macro_rules! agent_channel {
    () => {
        "muster_agents"
    };
}
pub(crate) const AGENT_CHANNEL: &str = agent_channel!();

/// The audit chain's lock on PostgreSQL, taken by every transaction that appends
/// to the chain so that hubs sharing a database append one at a time; a literal
/// for `concat!` into `BEGIN`. Its id is `pg_locks::AUDIT_CHAIN` (a test checks).
macro_rules! chain_lock {
    () => {
        "SELECT pg_advisory_xact_lock(7361728)"
    };
}

/// A write transaction and, on SQLite, this process's turn to write (held until the
/// transaction ends).
pub(crate) type WriteTx<'a> = (Option<MutexGuard<'a, ()>>, Transaction<'static, Any>);

/// What every write needs: the pool, the dialect and the audit chain's key. Cheap to
/// clone, so that a group commit can run as a task of its own (see `group`).
#[derive(Clone)]
pub(crate) struct Db {
    pub(crate) pool: AnyPool,
    pub(crate) postgres: bool,
    /// Key of the audit chain's HMAC, derived from the hub secret by the caller.
    pub(crate) audit_key: [u8; 32],
    /// Always true in a hub; false only in the benchmark that measures what the
    /// chain costs (`cargo bench -p muster-store`).
    pub(crate) chained: bool,
    /// Present on SQLite only: serializes write transactions in this process.
    pub(crate) write_lock: Option<Arc<Mutex<()>>>,
}

impl Db {
    pub(crate) async fn begin_write(&self) -> Result<WriteTx<'_>> {
        match &self.write_lock {
            Some(lock) => {
                let guard = lock.lock().await;
                let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                Ok((Some(guard), tx))
            }
            None => Ok((None, self.pool.begin().await?)),
        }
    }

    /// A write transaction that will append to the audit chain, already holding the
    /// chain's lock on PostgreSQL: one round trip fewer than taking it later, at the
    /// price of holding it for the whole (short) transaction.
    pub(crate) async fn begin_chain_write(&self) -> Result<WriteTx<'_>> {
        if !self.postgres {
            return self.begin_write().await;
        }
        let tx = self
            .pool
            .begin_with(concat!("BEGIN; ", chain_lock!()))
            .await?;
        Ok((None, tx))
    }

    /// Tell every hub sharing this database that `agent_id`'s credentials ended or
    /// changed (revoked, removed, replaced, marked cloned), so that whichever holds its
    /// session re-checks it. Delivered at commit, to nobody if the transaction rolls
    /// back. SQLite serves one hub, which acts on its own changes directly.
    pub(crate) async fn notify_agent_changed(
        &self,
        tx: &mut Transaction<'static, Any>,
        agent_id: &str,
    ) -> Result<()> {
        if self.postgres {
            sqlx::query(concat!("SELECT pg_notify('", agent_channel!(), "', $1)"))
                .bind(agent_id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

/// A pool on `url` of up to `max` connections, set up for this store.
pub(crate) async fn open_pool(url: &str, postgres: bool, max: u32) -> Result<AnyPool> {
    if postgres {
        return Ok(AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?);
    }
    Ok(AnyPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        // An embedded database cannot drop a connection, so sqlx's ping before each
        // acquire would be a worker-thread round trip for nothing. (PostgreSQL keeps
        // it: after a server restart it weeds out dead connections.)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(30))
        // Found by the disk-full chaos drill (scripts/chaos): when COMMIT fails with
        // SQLITE_FULL, SQLite has already rolled the transaction back, so the ROLLBACK
        // sqlx sends on drop fails too and sqlx keeps counting the connection as in a
        // transaction: every later BEGIN on it failed ("non-zero transaction depth")
        // and the hub never wrote again until restarted. A connection still in a
        // transaction once its queued rollback ran (the ping flushes it) is closed;
        // the pool opens a fresh one. Released connections normally have depth 0 and
        // skip the ping.
        .after_release(|conn, _meta| {
            Box::pin(async move {
                if !conn.is_in_transaction() {
                    return Ok(true);
                }
                conn.ping().await?;
                Ok(!conn.is_in_transaction())
            })
        })
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // WAL lets readers run beside the writer; FULL makes each committed
                // enrollment survive a power cut, which matters more to us than the
                // extra fsync.
                sqlx::raw_sql(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                )
                .execute(conn)
                .await?;
                Ok(())
            })
        })
        .connect(url)
        .await?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_chain_lock_literal_is_the_named_id() {
        assert_eq!(
            chain_lock!(),
            format!(
                "SELECT pg_advisory_xact_lock({})",
                crate::pg_locks::AUDIT_CHAIN
            )
        );
    }
}
