//! Appending to the audit chain, and [`AuditedTx`]: the one way a write that records
//! an audit entry begins and commits, so that the change and its entry are committed
//! together or not at all.

use sqlx::{Any, AssertSqlSafe, Row, Transaction};
use tokio::sync::MutexGuard;

use crate::Result;
use crate::model::AuditEntry;
use crate::sql::db::Db;
use crate::sql::rows::{AnyQuery, RowsInsert, rows_sql, uuid_like};

/// An audit row without the chain (the benchmark's baseline): eight binds.
const PLAIN_AUDIT_ROW: RowsInsert = (
    "INSERT INTO audit_log (id, at, actor, action, target, source, outcome, details) VALUES ",
    "(?, ?, ?, ?, ?, ?, ?, ?)",
);

/// An audit row in the chain: the eight, then its position and hash.
const CHAINED_AUDIT_ROW: RowsInsert = (
    "INSERT INTO audit_log (id, at, actor, action, target, source, outcome, details, \
     seq, hash) VALUES ",
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
);

/// Audit rows per `INSERT`: ten binds each keeps a statement far below what either
/// database takes (PostgreSQL 65,535 binds, SQLite 32,766), however many entries one
/// transaction appends (a bulk approval writes one per request).
const ROWS_PER_STATEMENT: usize = 1000;

/// A write transaction that can only commit by appending its audit entries first.
/// Dropping it rolls the write back.
pub(crate) struct AuditedTx<'a> {
    /// The write's statements run here: `&mut *w.tx` as an executor.
    // Declared before `_turn`, so that an abandoned transaction is rolled back before
    // the next SQLite writer in this process gets its turn.
    pub(crate) tx: Transaction<'static, Any>,
    _turn: Option<MutexGuard<'a, ()>>,
    db: &'a Db,
    /// Whether the transaction began holding the chain's lock.
    chain_locked: bool,
}

impl Db {
    /// Begin a write that records an audit entry. On PostgreSQL the chain's lock is
    /// taken when the entry is appended, so the write itself runs beside other hubs'.
    pub(crate) async fn begin_audited(&self) -> Result<AuditedTx<'_>> {
        let (turn, tx) = self.begin_write().await?;
        Ok(AuditedTx {
            tx,
            _turn: turn,
            db: self,
            chain_locked: false,
        })
    }

    /// The same, holding the chain's lock from the start (see
    /// [`begin_chain_write`](Db::begin_chain_write)): for the enrollment, whose
    /// transaction is short and always busy.
    pub(crate) async fn begin_audited_chain(&self) -> Result<AuditedTx<'_>> {
        let (turn, tx) = self.begin_chain_write().await?;
        Ok(AuditedTx {
            tx,
            _turn: turn,
            db: self,
            chain_locked: true,
        })
    }

    /// Append entries in order, in one statement: each gets the next position and the
    /// HMAC over the previous entry's hash and itself.
    /// `chain_locked`: the transaction began with [`begin_chain_write`](Db::begin_chain_write).
    pub(crate) async fn append_audit_many(
        &self,
        tx: &mut Transaction<'static, Any>,
        entries: &[&AuditEntry],
        key: &[u8; 32],
        chain_locked: bool,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        if !self.chained {
            for chunk in entries.chunks(ROWS_PER_STATEMENT) {
                let sql = rows_sql(PLAIN_AUDIT_ROW, chunk.len());
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for e in chunk {
                    q = bind_audit_entry(q, e);
                }
                q.execute(&mut **tx).await?;
            }
            return Ok(());
        }
        if self.postgres && !chain_locked {
            // Hubs sharing a database append one at a time (SQLite writers are
            // already serialized).
            sqlx::query(crate::pg_locks::XACT_LOCK)
                .bind(crate::pg_locks::AUDIT_CHAIN)
                .execute(&mut **tx)
                .await?;
        }
        let tail = sqlx::query(
            "SELECT seq, hash FROM audit_log WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&mut **tx)
        .await?;
        let (mut seq, mut hash) = match tail {
            Some(row) => (
                row.try_get::<i64, _>("seq")?,
                row.try_get::<String, _>("hash")?,
            ),
            None => (0, String::new()),
        };
        for chunk in entries.chunks(ROWS_PER_STATEMENT) {
            let sql = rows_sql(CHAINED_AUDIT_ROW, chunk.len());
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for e in chunk {
                seq += 1;
                hash = crate::audit::chain_hash(key, &hash, seq, e);
                q = bind_audit_entry(q, e).bind(seq).bind(hash.clone());
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }
}

impl AuditedTx<'_> {
    /// Append `entries` (usually one; none for a write its caller chose not to
    /// record) under the hub's audit key, then commit.
    pub(crate) async fn commit(self, entries: &[&AuditEntry]) -> Result<()> {
        let db = self.db;
        self.commit_under(&db.audit_key, entries).await
    }

    /// The same under another key: the secret rotation appends its own entry under
    /// the key it has just re-signed the chain with.
    pub(crate) async fn commit_under(
        mut self,
        key: &[u8; 32],
        entries: &[&AuditEntry],
    ) -> Result<()> {
        self.db
            .append_audit_many(&mut self.tx, entries, key, self.chain_locked)
            .await?;
        self.tx.commit().await?;
        Ok(())
    }
}

fn bind_audit_entry<'q>(q: AnyQuery<'q>, e: &AuditEntry) -> AnyQuery<'q> {
    q.bind(uuid_like())
        .bind(e.at)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.source)
        .bind(&e.outcome)
        .bind(&e.details)
}
