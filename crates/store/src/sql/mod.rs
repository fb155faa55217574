//! [`SqlStore`]: the [`Store`] over sqlx's `Any` driver, one set of portable SQL for
//! SQLite and PostgreSQL, with a dialect switch only where the two truly differ (how
//! a write transaction starts, connection pragmas: see `db`).
//!
//! This module owns the store itself: connecting, migrating, and the parts it is
//! made of. Each concern's operations live in a file of their own (`tokens`,
//! `agents`, `approvals`, `access`, `audit`, `meta`), each implementing its
//! sub-trait. Below them, and below the group commit and the listener that the store
//! starts, sit the modules they share and that import none of them: `db`
//! (connection, dialect, transactions), `rows` (decoders), `chain` (audit appends)
//! and `enroll` (an enrollment's writes).

// First, so that its column macros are in scope in every module below.
#[macro_use]
pub(crate) mod rows;
pub(crate) mod chain;
pub(crate) mod db;
pub(crate) mod enroll;

mod access;
mod agents;
mod approvals;
mod audit;
mod hubs;
mod integrations;
mod meta;
mod probes;
mod sessions;
mod sso;

pub use sso::SSO_CLIENT_SECRET_KEY;
mod tokens;

use std::sync::Arc;

use sqlx::AnyPool;
use tokio::sync::Mutex;

use crate::group::EnrollQueue;
use crate::sql::db::{Db, open_pool};
use crate::{MetaStore, Result, migrate};

/// PostgreSQL connections a store pools by default (`muster hub --db-pool`).
pub const DEFAULT_PG_POOL: u32 = 16;

pub struct SqlStore {
    db: Db,
    /// Where the database is, for the listener of `watch_agent_changes` (PostgreSQL).
    url: String,
    /// Enrollments waiting to be committed together.
    enrollments: EnrollQueue,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Connect, apply migrations, and return a ready store. `url` is `sqlite://…`
    /// (created when missing) or `postgres://…`.
    pub async fn connect(url: &str, audit_key: [u8; 32]) -> Result<Self> {
        Self::connect_with_pool(url, audit_key, DEFAULT_PG_POOL).await
    }

    /// [`connect`](Self::connect) with `pg_pool` connections in the PostgreSQL pool
    /// (the store also holds one for committing enrollments and one listening for
    /// other hubs' changes). SQLite ignores it.
    pub async fn connect_with_pool(url: &str, audit_key: [u8; 32], pg_pool: u32) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let url = if postgres {
            url.to_owned()
        } else {
            sqlite_url(url)
        };
        let db = Db {
            pool: open_pool(&url, postgres, if postgres { pg_pool.max(2) } else { 4 }).await?,
            postgres,
            audit_key,
            chained: true,
            write_lock: (!postgres).then(|| Arc::new(Mutex::new(()))),
        };
        let enrollments = EnrollQueue::start(&db, &url).await?;
        let store = SqlStore {
            db,
            enrollments,
            url,
        };
        let mut tx = store.db.begin_write().await?.1;
        migrate::run(&mut tx, postgres).await?;
        tx.commit().await?;
        Ok(store)
    }

    /// Audit rows without the chain: for the benchmark that measures the chain's
    /// cost, never for a hub (nothing calls this outside `benches/`).
    #[doc(hidden)]
    pub fn unchained_for_benchmarks(mut self) -> Self {
        self.db.chained = false;
        self.enrollments.unchained_for_benchmarks();
        self
    }

    /// The underlying pool, for tests and tools that need raw SQL (backup, tamper tests).
    pub fn pool(&self) -> &AnyPool {
        &self.db.pool
    }
}

/// sqlx wants `mode=rwc` to create a missing SQLite file.
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}
