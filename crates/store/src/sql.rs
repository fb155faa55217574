//! [`Store`] over sqlx's `Any` driver: one set of portable SQL for SQLite and
//! PostgreSQL, with a dialect switch only where the two truly differ (how a write
//! transaction starts, connection pragmas).
//!
//! SQLite allows one writer at a time. Write transactions therefore start with
//! `BEGIN IMMEDIATE` (so two writers never deadlock upgrading read locks) and queue on
//! an in-process mutex first (so they wait in order instead of in SQLite's sleep
//! loop). PostgreSQL needs neither: each write is a single guarded statement.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, Transaction};
use tokio::sync::Mutex;

use crate::model::*;
use crate::{Result, Store, StoreError, migrate};

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
    write_lock: Option<Arc<Mutex<()>>>,
}

pub struct SqlStore {
    db: Db,
    /// Where the database is, for the listener of `watch_agent_changes` (PostgreSQL).
    url: String,
    /// Enrollments waiting to be committed together.
    enrollments: crate::group::EnrollQueue,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// The PostgreSQL channel on which hubs announce agents whose credentials changed.
macro_rules! agent_channel {
    () => {
        "muster_agents"
    };
}
pub(crate) const AGENT_CHANNEL: &str = agent_channel!();

/// The audit chain's lock on PostgreSQL (see `CHAIN_LOCK`), as a literal for `concat!`.
macro_rules! chain_lock {
    () => {
        "SELECT pg_advisory_xact_lock(7361728)"
    };
}

/// Every agent column, in the order `agent_from_row` reads them.
macro_rules! agent_columns {
    () => {
        "id, name, hostname, ip, os_info, arch, agent_version, labels, packs, \
         interfaces, state, key_hash, cert_serial, cert_pubkey, cert_expires_at, generation, \
         enrolled_at, updated_at, last_seen_at, revoked_at, removed_at, prev_cert_serial, \
         prev_cert_expires_at, cloned_at"
    };
}

/// `SELECT <every agent column> FROM agents <tail>`, as the `&'static str` sqlx wants.
macro_rules! agent_select {
    ($tail:literal) => {
        concat!("SELECT ", agent_columns!(), " FROM agents ", $tail)
    };
}

impl SqlStore {
    /// Connect, apply migrations, and return a ready store. `url` is `sqlite://…`
    /// (created when missing) or `postgres://…`.
    pub async fn connect(url: &str, audit_key: [u8; 32]) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let url = if postgres {
            url.to_owned()
        } else {
            sqlite_url(url)
        };
        let db = Db {
            pool: open_pool(&url, postgres, if postgres { 16 } else { 4 }).await?,
            postgres,
            audit_key,
            chained: true,
            write_lock: (!postgres).then(|| Arc::new(Mutex::new(()))),
        };
        let enrollments = crate::group::EnrollQueue::start(&db, &url).await?;
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

impl Db {
    /// One enrollment in its own transaction. The group commit falls back to this
    /// whenever a group is refused, so its answers are the reference.
    pub(crate) async fn enroll_one(&self, w: &EnrollWrite) -> Result<AgentRecord> {
        let (_guard, mut tx) = self.begin_chain_write().await?;
        if let Some(token_id) = &w.consume_token
            && !take_token_uses(&mut tx, token_id, 1, w.now).await?
        {
            let row = sqlx::query("SELECT * FROM tokens WHERE id = $1")
                .bind(token_id)
                .fetch_optional(&mut *tx)
                .await?;
            let token = row.as_ref().map(token_from_row).transpose()?;
            return Err(match token.map(|t| t.state(w.now)) {
                None => StoreError::TokenUnknown,
                Some(TokenState::Revoked) => StoreError::TokenRevoked,
                Some(TokenState::Expired) => StoreError::TokenExpired,
                Some(_) => StoreError::TokenExhausted,
            });
        }
        if let Some(rule_id) = &w.consume_rule {
            take_rule_use(&mut tx, rule_id, w.now).await?;
        }
        let agent = match w.mode {
            EnrollMode::New => {
                let sql = format!("{} RETURNING {AGENT_COLUMNS}", rows_sql(NEW_AGENT_ROW, 1));
                let mut rows = bind_new_agents(sqlx::query(AssertSqlSafe(sql)), &[w])
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(name_taken)?;
                agent_from_row(&rows.pop().ok_or(StoreError::NotFound)?)?
            }
            EnrollMode::Replace => {
                let agent = replace_agent(&mut tx, w).await?;
                self.notify_agent_changed(&mut tx, &agent.id).await?;
                agent
            }
        };
        if let Some(e) = &w.enrollment {
            let sql = rows_sql(ENROLLMENT_ROW, 1);
            bind_enrollments(sqlx::query(AssertSqlSafe(sql)), &[e])
                .execute(&mut *tx)
                .await
                .map_err(enrollment_taken)?;
        }
        if let Some(id) = &w.complete_request {
            complete_request_tx(&mut tx, id, w.now).await?;
        }
        self.append_audit_many(&mut tx, &[&w.audit], &self.audit_key, true)
            .await?;
        tx.commit().await?;
        Ok(agent)
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

    /// A write transaction that will append to the audit chain, already holding the
    /// chain's lock on PostgreSQL: one round trip fewer than taking it later, at the
    /// price of holding it for the whole (short) transaction.
    pub(crate) async fn begin_chain_write(
        &self,
    ) -> Result<(
        Option<tokio::sync::MutexGuard<'_, ()>>,
        Transaction<'static, Any>,
    )> {
        if !self.postgres {
            return self.begin_write().await;
        }
        let tx = self
            .pool
            .begin_with(concat!("BEGIN; ", chain_lock!()))
            .await?;
        Ok((None, tx))
    }

    pub(crate) async fn begin_write(
        &self,
    ) -> Result<(
        Option<tokio::sync::MutexGuard<'_, ()>>,
        Transaction<'static, Any>,
    )> {
        match &self.write_lock {
            Some(lock) => {
                let guard = lock.lock().await;
                let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                Ok((Some(guard), tx))
            }
            None => Ok((None, self.pool.begin().await?)),
        }
    }

    /// Append an entry to the audit chain inside the caller's transaction: the next
    /// position, and the HMAC over the previous entry's hash and this entry.
    async fn append_audit(&self, tx: &mut Transaction<'static, Any>, e: &AuditEntry) -> Result<()> {
        self.append_audit_with(tx, e, &self.audit_key).await
    }

    async fn append_audit_with(
        &self,
        tx: &mut Transaction<'static, Any>,
        e: &AuditEntry,
        key: &[u8; 32],
    ) -> Result<()> {
        self.append_audit_many(tx, &[e], key, false).await
    }

    /// Append entries in order, in one statement: each gets the next position and the
    /// HMAC over the previous entry's hash and itself.
    /// `chain_locked`: the transaction began with [`begin_chain_write`](Self::begin_chain_write).
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
            let sql = rows_sql(
                (
                    "INSERT INTO audit_log (id, at, actor, action, target, source, outcome, \
                     details) VALUES ",
                    "(?, ?, ?, ?, ?, ?, ?, ?)",
                ),
                entries.len(),
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for e in entries {
                q = bind_audit_entry(q, e);
            }
            q.execute(&mut **tx).await?;
            return Ok(());
        }
        if self.postgres && !chain_locked {
            // Hubs sharing a database append one at a time (SQLite writers are
            // already serialized).
            sqlx::query(CHAIN_LOCK).execute(&mut **tx).await?;
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
        let sql = rows_sql(
            (
                "INSERT INTO audit_log (id, at, actor, action, target, source, outcome, details, \
                 seq, hash) VALUES ",
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ),
            entries.len(),
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for e in entries {
            seq += 1;
            hash = crate::audit::chain_hash(key, &hash, seq, e);
            q = bind_audit_entry(q, e).bind(seq).bind(hash.clone());
        }
        q.execute(&mut **tx).await?;
        Ok(())
    }
}

/// Taken by every transaction that appends to the audit chain on PostgreSQL, so that
/// hubs sharing a database append one at a time.
const CHAIN_LOCK: &str = chain_lock!();

/// Every agent column, for a `RETURNING` built at run time.
pub(crate) const AGENT_COLUMNS: &str = agent_columns!();

/// A query built by the enrollment writes, before or after its binds.
pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

/// An `INSERT` as its head and one row's template, `?` standing for each bind.
pub(crate) type RowsInsert = (&'static str, &'static str);

/// A new agent: sixteen binds per row, in the order `bind_new_agents` gives them.
pub(crate) const NEW_AGENT_ROW: RowsInsert = (
    "INSERT INTO agents (id, name, hostname, ip, os_info, arch, agent_version, labels, packs, \
     interfaces, state, key_hash, cert_serial, cert_pubkey, cert_expires_at, generation, \
     enrolled_at, updated_at) VALUES ",
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, 1, ?, ?)",
);

/// An enrollment remembered for retries: six binds per row (`bind_enrollments`).
pub(crate) const ENROLLMENT_ROW: RowsInsert = (
    "INSERT INTO enrollments (enrollment_id, agent_id, credential, public_key, created, \
     created_at) VALUES ",
    "(?, ?, ?, ?, ?, ?)",
);

/// `head` followed by `n` copies of `row`, each `?` numbered in turn (`$1`, `$2`, …),
/// which both SQLite and PostgreSQL accept.
pub(crate) fn rows_sql((head, row): RowsInsert, n: usize) -> String {
    let mut sql = String::with_capacity(head.len() + n * (row.len() + 40));
    sql.push_str(head);
    let mut next = 1;
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        for c in row.chars() {
            if c == '?' {
                sql.push('$');
                sql.push_str(&next.to_string());
                next += 1;
            } else {
                sql.push(c);
            }
        }
    }
    sql
}

pub(crate) fn bind_new_agents<'q>(mut q: AnyQuery<'q>, writes: &[&EnrollWrite]) -> AnyQuery<'q> {
    for w in writes {
        // The row's fifteen, then `updated_at` (the same time as `enrolled_at`).
        q = bind_agent_write(q, w).bind(w.now);
    }
    q
}

/// What an enrollment writes to its agent's row, in the order both the new-agent
/// `INSERT` and the replacing `UPDATE` take it: id, name, the facts, the credentials,
/// the time.
fn bind_agent_write<'q>(q: AnyQuery<'q>, w: &EnrollWrite) -> AnyQuery<'q> {
    let f = &w.facts;
    q.bind(&w.agent_id)
        .bind(&w.name)
        .bind(&f.hostname)
        .bind(&f.ip)
        .bind(&f.os_info)
        .bind(&f.arch)
        .bind(&f.agent_version)
        .bind(json(&f.labels))
        .bind(json(&f.packs))
        .bind(json(&f.interfaces))
        .bind(&w.creds.key_hash)
        .bind(&w.creds.cert_serial)
        .bind(&w.creds.cert_pubkey)
        .bind(w.creds.cert_expires_at)
        .bind(w.now)
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

pub(crate) fn bind_enrollments<'q>(
    mut q: AnyQuery<'q>,
    records: &[&EnrollmentRecord],
) -> AnyQuery<'q> {
    for e in records {
        q = q
            .bind(&e.enrollment_id)
            .bind(&e.agent_id)
            .bind(&e.credential)
            .bind(&e.public_key)
            .bind(i64::from(e.created))
            .bind(e.created_at);
    }
    q
}

/// A taken name, from a failed agent insert or rename.
pub(crate) fn name_taken(e: sqlx::Error) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::NameInUse
    } else {
        e.into()
    }
}

/// A reused enrollment id, from a failed enrollments insert.
pub(crate) fn enrollment_taken(e: sqlx::Error) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict("this enrollment id is already being used".to_owned())
    } else {
        e.into()
    }
}

/// Take `n` uses of a token in one guarded statement, so that concurrent enrollments
/// cannot both take the last one. False when the token cannot give them all.
pub(crate) async fn take_token_uses(
    tx: &mut Transaction<'static, Any>,
    token_id: &str,
    n: i64,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE tokens SET uses = uses + $3 WHERE id = $1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $2) \
         AND (max_uses IS NULL OR uses + $3 <= max_uses)",
    )
    .bind(token_id)
    .bind(now)
    .bind(n)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(done == 1)
}

/// Take one use of a trust rule's hourly allowance. A fixed one-hour window: the
/// first use after it ends opens a new one.
pub(crate) async fn take_rule_use(
    tx: &mut Transaction<'static, Any>,
    rule_id: &str,
    now: i64,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE trust_rules SET \
         window_uses = CASE WHEN window_start <= $2 - 3600000 THEN 1 ELSE window_uses + 1 END, \
         window_start = CASE WHEN window_start <= $2 - 3600000 THEN $2 ELSE window_start END \
         WHERE id = $1 AND (window_start <= $2 - 3600000 OR window_uses < max_per_hour)",
    )
    .bind(rule_id)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(StoreError::RuleRateLimited);
    }
    Ok(())
}

/// Give back `n` uses taken in this transaction by enrollments that then found their
/// name taken.
pub(crate) async fn return_token_uses(
    tx: &mut Transaction<'static, Any>,
    token_id: &str,
    n: i64,
) -> Result<()> {
    sqlx::query("UPDATE tokens SET uses = uses - $2 WHERE id = $1")
        .bind(token_id)
        .bind(n)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Give back one use of a rule's allowance taken in this transaction.
pub(crate) async fn return_rule_use(
    tx: &mut Transaction<'static, Any>,
    rule_id: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE trust_rules SET window_uses = window_uses - 1 WHERE id = $1 AND window_uses > 0",
    )
    .bind(rule_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Give a live agent the identity of a re-enrollment. `NotFound` when it was revoked
/// or removed meanwhile.
pub(crate) async fn replace_agent(
    tx: &mut Transaction<'static, Any>,
    w: &EnrollWrite,
) -> Result<AgentRecord> {
    let row = bind_agent_write(
        sqlx::query(concat!(
            "UPDATE agents SET name = $2, hostname = $3, ip = $4, os_info = $5, arch = $6, \
         agent_version = $7, labels = $8, packs = $9, interfaces = $10, key_hash = $11, \
         cert_serial = $12, cert_pubkey = $13, cert_expires_at = $14, \
         generation = generation + 1, updated_at = $15 \
         WHERE id = $1 AND state = 'active' RETURNING ",
            agent_columns!()
        )),
        w,
    )
    .fetch_optional(&mut **tx)
    .await
    .map_err(name_taken)?;
    agent_from_row(&row.ok_or(StoreError::NotFound)?)
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

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> String {
    // Serializing plain maps and vectors of strings cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn from_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn token_from_row(row: &AnyRow) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: row.try_get("id")?,
        hash: row.try_get("hash")?,
        prefix: row.try_get("prefix")?,
        description: row.try_get("description")?,
        max_uses: row.try_get("max_uses")?,
        uses: row.try_get("uses")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        pattern: row.try_get("pattern")?,
        cidrs: from_json("tokens.cidrs", &row.try_get::<String, _>("cidrs")?)?,
        labels: from_json("tokens.labels", &row.try_get::<String, _>("labels")?)?,
        allow_replace: row.try_get::<i64, _>("allow_replace")? != 0,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

fn api_key_from_row(row: &AnyRow) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        hash: row.try_get("hash")?,
        prefix: row.try_get("prefix")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        agents_glob: row.try_get("agents_glob")?,
        probes: from_json("api_keys.probes", &row.try_get::<String, _>("probes")?)?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

pub(crate) fn agent_from_row(row: &AnyRow) -> Result<AgentRecord> {
    let state: String = row.try_get("state")?;
    Ok(AgentRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        facts: AgentFacts {
            hostname: row.try_get("hostname")?,
            ip: row.try_get("ip")?,
            os_info: row.try_get("os_info")?,
            arch: row.try_get("arch")?,
            agent_version: row.try_get("agent_version")?,
            labels: from_json::<BTreeMap<String, String>>(
                "agents.labels",
                &row.try_get::<String, _>("labels")?,
            )?,
            packs: from_json("agents.packs", &row.try_get::<String, _>("packs")?)?,
            interfaces: from_json(
                "agents.interfaces",
                &row.try_get::<String, _>("interfaces")?,
            )?,
        },
        state: AgentState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("agents.state: {state:?}")))?,
        key_hash: row.try_get("key_hash")?,
        cert_serial: row.try_get("cert_serial")?,
        cert_pubkey: row.try_get("cert_pubkey")?,
        cert_expires_at: row.try_get("cert_expires_at")?,
        generation: row.try_get("generation")?,
        enrolled_at: row.try_get("enrolled_at")?,
        updated_at: row.try_get("updated_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        revoked_at: row.try_get("revoked_at")?,
        removed_at: row.try_get("removed_at")?,
        prev_cert_serial: row.try_get("prev_cert_serial")?,
        prev_cert_expires_at: row.try_get("prev_cert_expires_at")?,
        cloned_at: row.try_get("cloned_at")?,
    })
}

/// Collect an approved request inside the caller's transaction: exactly once.
pub(crate) async fn complete_request_tx(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    now: i64,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE pending_requests SET status = 'completed', decided_at = COALESCE(decided_at, $2) \
         WHERE id = $1 AND status = 'approved'",
    )
    .bind(id)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(StoreError::Conflict(
            "the approved request was already used".to_owned(),
        ));
    }
    Ok(())
}

fn user_from_row(row: &AnyRow) -> Result<UserRecord> {
    Ok(UserRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        password_hash: row.try_get("password_hash")?,
        disabled_at: row.try_get("disabled_at")?,
        created_at: row.try_get("created_at")?,
    })
}

fn pending_from_row(row: &AnyRow) -> Result<PendingRecord> {
    Ok(PendingRecord {
        id: row.try_get("id")?,
        secret_hash: row.try_get("secret_hash")?,
        kind: row.try_get("kind")?,
        agent_id: row.try_get("agent_id")?,
        name: row.try_get("name")?,
        hostname: row.try_get("hostname")?,
        source: row.try_get("source")?,
        facts: row.try_get("facts")?,
        public_key: row.try_get("public_key")?,
        status: row.try_get("status")?,
        reason: row.try_get("reason")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        decided_at: row.try_get("decided_at")?,
        decided_by: row.try_get("decided_by")?,
    })
}

/// A unique row id for audit entries: time-ordered, then random.
pub(crate) fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos:032x}-{:016x}-{:08x}",
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

async fn get_agent_tx(tx: &mut Transaction<'static, Any>, id: &str) -> Result<Option<AgentRecord>> {
    let row = sqlx::query(agent_select!("WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(agent_from_row).transpose()
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        if self.db.postgres {
            "postgres"
        } else {
            "sqlite"
        }
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.db.pool).await?;
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM hub_meta WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.db.pool)
                .await?,
        )
    }

    async fn init_meta(&self, entries: &[(&str, String)]) -> Result<bool> {
        let (_guard, mut tx) = self.db.begin_write().await?;
        if self.db.postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7361727)")
                .execute(&mut *tx)
                .await?;
        }
        for (key, _) in entries {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT key FROM hub_meta WHERE key = $1")
                    .bind(*key)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_some() {
                return Ok(false);
            }
        }
        for (key, value) in entries {
            sqlx::query("INSERT INTO hub_meta (key, value) VALUES ($1, $2)")
                .bind(*key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn create_token(&self, t: &TokenRecord, audit: &AuditEntry) -> Result<()> {
        let (_guard, mut tx) = self.db.begin_write().await?;
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
        .execute(&mut *tx)
        .await?;
        self.db.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT * FROM tokens ORDER BY created_at, id")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn find_token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn revoke_token(&self, id: &str, now: i64, audit: &AuditEntry) -> Result<TokenRecord> {
        let (_guard, mut tx) = self.db.begin_write().await?;
        let rows = sqlx::query("SELECT * FROM tokens WHERE id = $1 OR prefix = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        let token = match rows.as_slice() {
            [row] => token_from_row(row)?,
            [] => return Err(StoreError::NotFound),
            _ => {
                return Err(StoreError::Conflict(format!(
                    "{id:?} matches several tokens; use the id"
                )));
            }
        };
        sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(&token.id)
            .execute(&mut *tx)
            .await?;
        let mut audit = audit.clone();
        audit.target = format!("token:{}", token.id);
        self.db.append_audit(&mut tx, &audit).await?;
        tx.commit().await?;
        Ok(TokenRecord {
            revoked_at: token.revoked_at.or(Some(now)),
            ..token
        })
    }

    async fn create_api_key(&self, k: &ApiKeyRecord, audit: Option<&AuditEntry>) -> Result<()> {
        let (_guard, mut tx) = self.db.begin_write().await?;
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
        .execute(&mut *tx)
        .await?;
        if let Some(audit) = audit {
            self.db.append_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn find_api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn get_agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        let row = sqlx::query(agent_select!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn find_agent_by_key_hash(&self, hash: &str) -> Result<Option<AgentRecord>> {
        let row = sqlx::query(agent_select!("WHERE key_hash = $1"))
            .bind(hash)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn find_live_agent_by_name(&self, name: &str) -> Result<Option<AgentRecord>> {
        let row = sqlx::query(agent_select!("WHERE name = $1 AND state = 'active'"))
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn list_agents(&self, include_removed: bool) -> Result<Vec<AgentRecord>> {
        let rows = if include_removed {
            sqlx::query(agent_select!("ORDER BY name, enrolled_at"))
                .fetch_all(&self.db.pool)
                .await?
        } else {
            sqlx::query(agent_select!(
                "WHERE state <> 'removed' ORDER BY name, enrolled_at"
            ))
            .fetch_all(&self.db.pool)
            .await?
        };
        rows.iter().map(agent_from_row).collect()
    }

    async fn list_agents_page(
        &self,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<AgentRecord>> {
        let (name, id) = after.unwrap_or(("", ""));
        let rows = sqlx::query(agent_select!(
            "WHERE state <> 'removed' AND (name > $1 OR (name = $1 AND id > $2)) \
             ORDER BY name, id LIMIT $3"
        ))
        .bind(name)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn find_enrollment(&self, enrollment_id: &str) -> Result<Option<EnrollmentRecord>> {
        let row = sqlx::query("SELECT * FROM enrollments WHERE enrollment_id = $1")
            .bind(enrollment_id)
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|row| -> Result<EnrollmentRecord> {
            Ok(EnrollmentRecord {
                enrollment_id: row.try_get("enrollment_id")?,
                agent_id: row.try_get("agent_id")?,
                credential: row.try_get("credential")?,
                public_key: row.try_get("public_key")?,
                created: row.try_get::<i64, _>("created")? != 0,
                created_at: row.try_get("created_at")?,
            })
        })
        .transpose()
    }

    async fn enroll(&self, w: &EnrollWrite) -> Result<AgentRecord> {
        self.enrollments.enroll(w).await
    }

    fn enroll_commits(&self) -> EnrollCommits {
        self.enrollments.commits()
    }

    async fn watch_agent_changes(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<AgentChange>>> {
        if !self.db.postgres {
            return Ok(None);
        }
        Ok(Some(crate::watch::watch(self.url.clone())))
    }

    async fn renew(&self, w: &RenewWrite) -> Result<AgentRecord> {
        let (_guard, mut tx) = self.db.begin_write().await?;
        let sql = if w.advance {
            concat!(
                "UPDATE agents SET prev_cert_serial = cert_serial, \
                 prev_cert_expires_at = cert_expires_at, cert_serial = $3, cert_pubkey = $4, \
                 cert_expires_at = $5, generation = generation + 1, updated_at = $6 \
                 WHERE id = $1 AND generation = $2 AND state = 'active' AND cloned_at IS NULL \
                 RETURNING ",
                agent_columns!()
            )
        } else {
            concat!(
                "UPDATE agents SET cert_serial = $3, cert_pubkey = $4, cert_expires_at = $5, \
                 updated_at = $6 \
                 WHERE id = $1 AND generation = $2 AND state = 'active' AND cloned_at IS NULL \
                 RETURNING ",
                agent_columns!()
            )
        };
        let row = sqlx::query(sql)
            .bind(&w.agent_id)
            .bind(w.expected_generation)
            .bind(&w.cert_serial)
            .bind(&w.cert_pubkey)
            .bind(w.cert_expires_at)
            .bind(w.now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::Conflict(
                "the agent's generation changed: another copy renewed first".to_owned(),
            ));
        };
        let agent = agent_from_row(&row)?;
        if let Some(id) = &w.complete_request {
            complete_request_tx(&mut tx, id, w.now).await?;
        }
        self.db.append_audit(&mut tx, &w.audit).await?;
        tx.commit().await?;
        Ok(agent)
    }

    async fn mark_cloned(&self, e: &CloneEvent, audit: &AuditEntry) -> Result<AgentRecord> {
        let (_guard, mut tx) = self.db.begin_write().await?;
        let row = sqlx::query(concat!(
            "UPDATE agents SET cloned_at = COALESCE(cloned_at, $2), updated_at = $2 \
             WHERE id = $1 RETURNING ",
            agent_columns!()
        ))
        .bind(&e.agent_id)
        .bind(e.at)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        sqlx::query(
            "INSERT INTO clone_events (id, agent_id, at, source, presented, expected, via) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid_like())
        .bind(&e.agent_id)
        .bind(e.at)
        .bind(&e.source)
        .bind(e.presented)
        .bind(e.expected)
        .bind(&e.via)
        .execute(&mut *tx)
        .await?;
        self.db.notify_agent_changed(&mut tx, &e.agent_id).await?;
        self.db.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        agent_from_row(&row)
    }

    async fn clone_events(&self, agent_id: &str) -> Result<Vec<CloneEvent>> {
        let rows = sqlx::query("SELECT * FROM clone_events WHERE agent_id = $1 ORDER BY at, id")
            .bind(agent_id)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(CloneEvent {
                    agent_id: r.try_get("agent_id")?,
                    at: r.try_get("at")?,
                    source: r.try_get("source")?,
                    presented: r.try_get("presented")?,
                    expected: r.try_get("expected")?,
                    via: r.try_get("via")?,
                })
            })
            .collect()
    }

    async fn queue_request(&self, r: &PendingRecord, audit: &AuditEntry) -> Result<PendingRecord> {
        let (_guard, mut tx) = self.db.begin_write().await?;
        let existing = sqlx::query("SELECT * FROM pending_requests WHERE secret_hash = $1")
            .bind(&r.secret_hash)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = existing {
            return pending_from_row(&row);
        }
        sqlx::query(
            "INSERT INTO pending_requests (id, secret_hash, kind, agent_id, name, hostname, source, \
             facts, public_key, status, reason, created_at, expires_at, decided_at, decided_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&r.id)
        .bind(&r.secret_hash)
        .bind(&r.kind)
        .bind(&r.agent_id)
        .bind(&r.name)
        .bind(&r.hostname)
        .bind(&r.source)
        .bind(&r.facts)
        .bind(&r.public_key)
        .bind(&r.status)
        .bind(&r.reason)
        .bind(r.created_at)
        .bind(r.expires_at)
        .bind(r.decided_at)
        .bind(&r.decided_by)
        .execute(&mut *tx)
        .await?;
        self.db.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(r.clone())
    }

    async fn find_request_by_secret(&self, secret_hash: &str) -> Result<Option<PendingRecord>> {
        let row = sqlx::query("SELECT * FROM pending_requests WHERE secret_hash = $1")
            .bind(secret_hash)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(pending_from_row).transpose()
    }

    async fn list_pending(&self, now: i64) -> Result<Vec<PendingRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM pending_requests WHERE status = 'pending' AND expires_at > $1 \
             ORDER BY created_at, id",
        )
        .bind(now)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(pending_from_row).collect()
    }

    async fn decide_request(
        &self,
        id: &str,
        approve: bool,
        reason: Option<&str>,
        by: &str,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<PendingRecord> {
        let (_guard, mut tx) = self.db.begin_write().await?;
        let row = sqlx::query(
            "UPDATE pending_requests SET status = $2, reason = $3, decided_at = $4, decided_by = $5 \
             WHERE id = $1 AND status = 'pending' AND expires_at > $4 RETURNING *",
        )
        .bind(id)
        .bind(if approve { "approved" } else { "denied" })
        .bind(reason)
        .bind(now)
        .bind(by)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        self.db.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        pending_from_row(&row)
    }

    async fn create_trust_rule(&self, r: &TrustRuleRecord, audit: &AuditEntry) -> Result<()> {
        let (_guard, mut tx) = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO trust_rules (id, pattern, cidrs, labels, max_per_hour, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&r.id)
        .bind(&r.pattern)
        .bind(json(&r.cidrs))
        .bind(json(&r.labels))
        .bind(r.max_per_hour)
        .bind(r.created_at)
        .bind(&r.created_by)
        .execute(&mut *tx)
        .await?;
        self.db.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_trust_rules(&self) -> Result<Vec<TrustRuleRecord>> {
        let rows = sqlx::query(
            "SELECT id, pattern, cidrs, labels, max_per_hour, created_at, created_by \
             FROM trust_rules ORDER BY created_at, id",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TrustRuleRecord {
                    id: r.try_get("id")?,
                    pattern: r.try_get("pattern")?,
                    cidrs: from_json("trust_rules.cidrs", &r.try_get::<String, _>("cidrs")?)?,
                    labels: from_json("trust_rules.labels", &r.try_get::<String, _>("labels")?)?,
                    max_per_hour: r.try_get("max_per_hour")?,
                    created_at: r.try_get("created_at")?,
                    created_by: r.try_get("created_by")?,
                })
            })
            .collect()
    }

    async fn remove_trust_rule(&self, id: &str, audit: &AuditEntry) -> Result<()> {
        let (_guard, mut tx) = self.db.begin_write().await?;
        let done = sqlx::query("DELETE FROM trust_rules WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        self.db.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_facts(&self, agent_id: &str, f: &AgentFacts, now: i64) -> Result<()> {
        let (_guard, mut tx) = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE agents SET hostname = $2, ip = $3, os_info = $4, arch = $5, agent_version = $6, \
             packs = $7, interfaces = $8, updated_at = $9 WHERE id = $1",
        )
        .bind(agent_id)
        .bind(&f.hostname)
        .bind(&f.ip)
        .bind(&f.os_info)
        .bind(&f.arch)
        .bind(&f.agent_version)
        .bind(json(&f.packs))
        .bind(json(&f.interfaces))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_entries(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
        // Filters are optional: `$n IS NULL OR column = $n` keeps one static query.
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, target, source, outcome, details FROM audit_log \
             WHERE ($1 IS NULL OR target = $1) AND ($2 IS NULL OR actor = $2) \
             AND ($3 IS NULL OR action = $3) AND ($4 IS NULL OR at >= $4) AND ($5 IS NULL OR at < $5) \
             ORDER BY seq DESC LIMIT $6",
        )
        .bind(f.target.as_deref())
        .bind(f.actor.as_deref())
        .bind(f.action.as_deref())
        .bind(f.since)
        .bind(f.until)
        .bind(f.limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    seq: r.try_get::<Option<i64>, _>("seq")?.unwrap_or(0),
                    entry: AuditEntry {
                        at: r.try_get("at")?,
                        actor: r.try_get("actor")?,
                        action: r.try_get("action")?,
                        target: r.try_get("target")?,
                        source: r.try_get("source")?,
                        outcome: r.try_get("outcome")?,
                        details: r.try_get("details")?,
                    },
                })
            })
            .collect()
    }

    async fn verify_audit(&self) -> Result<AuditVerdict> {
        let rows = sqlx::query(
            "SELECT seq, hash, at, actor, action, target, source, outcome, details FROM audit_log \
             ORDER BY seq IS NULL, seq",
        )
        .fetch_all(&self.db.pool)
        .await?;
        let mut prev_hash = String::new();
        for (expected, r) in (1i64..).zip(rows.iter()) {
            let seq: Option<i64> = r.try_get("seq")?;
            let Some(seq) = seq else {
                return Ok(AuditVerdict::broken(
                    rows.len(),
                    expected,
                    "an entry outside the chain was inserted",
                ));
            };
            if seq > expected {
                return Ok(AuditVerdict::broken(
                    rows.len(),
                    expected,
                    "the entry is missing (deleted)",
                ));
            }
            if seq < expected {
                return Ok(AuditVerdict::broken(
                    rows.len(),
                    seq,
                    "the position repeats (inserted)",
                ));
            }
            let entry = AuditEntry {
                at: r.try_get("at")?,
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                target: r.try_get("target")?,
                source: r.try_get("source")?,
                outcome: r.try_get("outcome")?,
                details: r.try_get("details")?,
            };
            let stored: Option<String> = r.try_get("hash")?;
            let want = crate::audit::chain_hash(&self.db.audit_key, &prev_hash, seq, &entry);
            if !crate::audit::same(stored.as_deref().unwrap_or(""), &want) {
                return Ok(AuditVerdict::broken(
                    rows.len(),
                    seq,
                    "the entry was changed or inserted",
                ));
            }
            prev_hash = want;
        }
        Ok(AuditVerdict {
            count: rows.len(),
            broken: None,
        })
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn change_api_key(
        &self,
        id: &str,
        change: KeyChange,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<ApiKeyRecord> {
        let (_guard, mut tx) = self.db.begin_write().await?;
        let row = match &change {
            KeyChange::Revoke => {
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING *",
                )
                .bind(id)
                .bind(now)
                .fetch_optional(&mut *tx)
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
                .fetch_optional(&mut *tx)
                .await?
            }
        };
        let key = api_key_from_row(&row.ok_or(StoreError::NotFound)?)?;
        self.db.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn record_key_use(&self, used: &[(String, i64)]) -> Result<()> {
        let (_guard, mut tx) = self.db.begin_write().await?;
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
        let (_guard, mut tx) = self.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, name, role, password_hash, disabled_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&u.id)
        .bind(&u.name)
        .bind(&u.role)
        .bind(&u.password_hash)
        .bind(u.disabled_at)
        .bind(u.created_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "a user named {:?} exists already",
                    u.name
                )));
            }
            other => other?,
        };
        self.db.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY name")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn find_user(&self, name: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn change_user(
        &self,
        name: &str,
        change: UserChange,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<UserRecord> {
        let (_guard, mut tx) = self.db.begin_write().await?;
        let row = match change {
            UserChange::Disable => {
                sqlx::query("UPDATE users SET disabled_at = COALESCE(disabled_at, $2) WHERE name = $1 RETURNING *")
                    .bind(name)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            UserChange::Enable => {
                sqlx::query("UPDATE users SET disabled_at = NULL WHERE name = $1 RETURNING *")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            UserChange::Remove => {
                sqlx::query("DELETE FROM users WHERE name = $1 RETURNING *")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?
            }
        };
        let user = user_from_row(&row.ok_or(StoreError::NotFound)?)?;
        if change == UserChange::Remove {
            sqlx::query("DELETE FROM user_sessions WHERE user_id = $1")
                .bind(&user.id)
                .execute(&mut *tx)
                .await?;
        }
        self.db.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
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
        let (_guard, mut tx) = self.db.begin_write().await?;
        sqlx::query("INSERT INTO user_sessions (hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(hash)
            .bind(user_id)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        self.db.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
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
        row.as_ref().map(user_from_row).transpose()
    }

    async fn delete_user_session(&self, hash: &str) -> Result<()> {
        let (_guard, mut tx) = self.db.begin_write().await?;
        sqlx::query("DELETE FROM user_sessions WHERE hash = $1")
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_audit(&self, audit: &AuditEntry) -> Result<()> {
        let (_guard, mut tx) = self.db.begin_write().await?;
        self.db.append_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rotate_secret(
        &self,
        meta: &[(&str, String)],
        new_audit_key: [u8; 32],
        audit: &AuditEntry,
    ) -> Result<usize> {
        let (_guard, mut tx) = self.db.begin_write().await?;
        if self.db.postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7361728)")
                .execute(&mut *tx)
                .await?;
        }
        for (key, value) in meta {
            sqlx::query("DELETE FROM hub_meta WHERE key = $1")
                .bind(*key)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO hub_meta (key, value) VALUES ($1, $2)")
                .bind(*key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        let rows = sqlx::query(
            "SELECT id, seq, at, actor, action, target, source, outcome, details FROM audit_log \
             WHERE seq IS NOT NULL ORDER BY seq",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut prev = String::new();
        for r in &rows {
            let seq: i64 = r.try_get("seq")?;
            let entry = AuditEntry {
                at: r.try_get("at")?,
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                target: r.try_get("target")?,
                source: r.try_get("source")?,
                outcome: r.try_get("outcome")?,
                details: r.try_get("details")?,
            };
            let hash = crate::audit::chain_hash(&new_audit_key, &prev, seq, &entry);
            sqlx::query("UPDATE audit_log SET hash = $2 WHERE id = $1")
                .bind(r.try_get::<String, _>("id")?)
                .bind(&hash)
                .execute(&mut *tx)
                .await?;
            prev = hash;
        }
        self.db
            .append_audit_with(&mut tx, audit, &new_audit_key)
            .await?;
        tx.commit().await?;
        Ok(rows.len() + 1)
    }

    async fn record_last_seen(&self, seen: &[(String, i64)]) -> Result<()> {
        // One statement per chunk: `CASE id WHEN $1 THEN $2 …` keeps it portable, and
        // small chunks keep it cheap: SQLite resolves each `$n` by name and walks
        // the CASE per row, both quadratic in the chunk size.
        const CHUNK: usize = 100;
        let (_guard, mut tx) = self.db.begin_write().await?;
        for chunk in seen.chunks(CHUNK) {
            let mut sql = String::from("UPDATE agents SET last_seen_at = CASE id");
            for i in 0..chunk.len() {
                sql.push_str(&format!(" WHEN ${} THEN ${}", 2 * i + 1, 2 * i + 2));
            }
            sql.push_str(" ELSE last_seen_at END WHERE id IN (");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", 2 * i + 1));
            }
            sql.push(')');
            // Only generated placeholders are spliced in; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, at) in chunk {
                query = query.bind(id.as_str()).bind(*at);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn end_agent(
        &self,
        id: &str,
        end: AgentEnd,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<AgentRecord> {
        let (_guard, mut tx) = self.db.begin_write().await?;
        let done = match end {
            AgentEnd::Revoke => sqlx::query(
                "UPDATE agents SET state = 'revoked', revoked_at = $2, updated_at = $2 \
                 WHERE id = $1 AND state = 'active'",
            ),
            AgentEnd::Remove => sqlx::query(
                "UPDATE agents SET state = 'removed', removed_at = $2, \
                 revoked_at = COALESCE(revoked_at, $2), updated_at = $2 \
                 WHERE id = $1 AND state <> 'removed'",
            ),
        }
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        self.db.notify_agent_changed(&mut tx, id).await?;
        self.db.append_audit(&mut tx, audit).await?;
        let agent = get_agent_tx(&mut tx, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(agent)
    }
}
