//! Muster's storage: the [`Store`] trait, shaped by the domain and split by concern
//! into sub-traits ([`MetaStore`], [`TokenStore`], [`AgentStore`], [`SessionStore`],
//! [`ApprovalStore`],
//! [`AccessStore`], [`SsoStore`], [`IntegrationStore`], [`AuditStore`]), and its one sqlx implementation ([`SqlStore`])
//! serving SQLite and PostgreSQL from the same SQL.
//!
//! Invariant: every operation that changes state carries its own transaction and
//! writes its audit entry inside it, so a change is committed with its record or not
//! at all. Database errors propagate typed; they are never turned into "not found".

mod audit;
mod group;
mod migrate;
mod model;
mod pg_locks;
mod sql;
mod watch;

pub use model::*;
pub use sql::{DEFAULT_PG_POOL, SSO_CLIENT_SECRET_KEY, SqlStore};

use async_trait::async_trait;

/// What can go wrong in a store operation, by what it means for the caller.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The token exists but every use is consumed.
    #[error("the enrollment token has no uses left")]
    TokenExhausted,
    /// The token exists but its TTL has passed.
    #[error("the enrollment token has expired")]
    TokenExpired,
    /// The token was revoked by an admin.
    #[error("the enrollment token was revoked")]
    TokenRevoked,
    /// No token with that hash (or id) exists.
    #[error("unknown enrollment token")]
    TokenUnknown,
    /// The approval queue holds as many waiting requests as it may, from this
    /// source network (`per_source`) or in all: retry later.
    #[error("too many requests are waiting for approval")]
    QueueFull { per_source: bool },
    /// The trust rule's hourly allowance is used up.
    #[error("the trust rule's hourly allowance is used up")]
    RuleRateLimited,
    /// Another live agent already holds the name.
    #[error("the name is in use by another agent")]
    NameInUse,
    /// Too many enrollments are waiting to be committed: retry shortly.
    #[error("too many enrollments are waiting to be committed")]
    Busy,
    /// The record the operation targets does not exist or is no longer live.
    #[error("not found")]
    NotFound,
    /// The operation raced with another one that changed the same record.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database holds a schema newer than this binary understands.
    #[error(
        "the database schema is version {found}, newer than this muster ({known}); upgrade muster"
    )]
    SchemaTooNew { found: i64, known: i64 },
    /// A row could not be decoded (bad JSON in a column): the database was edited by hand.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Whether the database could not be reached (as opposed to refusing the change):
    /// the caller should answer "retry later", not "internal error".
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
            )
        )
    }

    /// Whether the database refused a write because its disk is full (SQLite's
    /// SQLITE_FULL, PostgreSQL's `disk_full`, ENOSPC): nothing was written, and the
    /// same write succeeds once an operator has made room, so the caller should
    /// answer "retry later" and name the disk, not "internal error".
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(d)) => {
                if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // The extended result code; its low byte is the primary one.
                    d.code()
                        .and_then(|c| c.parse::<i32>().ok())
                        .is_some_and(|c| c & 0xff == SQLITE_FULL)
                } else {
                    d.code().as_deref() == Some("53100")
                }
            }
            StoreError::Database(sqlx::Error::Io(io)) => {
                io.kind() == std::io::ErrorKind::StorageFull
            }
            _ => false,
        }
    }
}

/// SQLite's primary result code for "database or disk is full".
const SQLITE_FULL: i32 = 13;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The hub's storage, one method per domain operation, split by concern into the
/// sub-traits below. Callers hold an `Arc<dyn Store>`: on a trait object every
/// sub-trait's methods are callable without importing it. Code that names a concrete
/// store imports the sub-traits it uses (or the crate's glob).
pub trait Store:
    MetaStore
    + TokenStore
    + AgentStore
    + SessionStore
    + HubStore
    + ApprovalStore
    + AccessStore
    + SsoStore
    + ProbeStore
    + IntegrationStore
    + AuditStore
    + 'static
{
}

impl<T> Store for T where
    T: MetaStore
        + TokenStore
        + AgentStore
        + SessionStore
        + HubStore
        + ApprovalStore
        + AccessStore
        + SsoStore
        + ProbeStore
        + IntegrationStore
        + AuditStore
        + 'static
{
}

/// The database itself and hub-wide settings.
#[async_trait]
pub trait MetaStore: Send + Sync {
    /// Which backend this is ("sqlite" or "postgres"), for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Cheap round trip proving the database answers.
    async fn ping(&self) -> Result<()>;

    /// Hub-wide settings (CA, secret check). Absent keys are `None`.
    async fn get_meta(&self, key: &str) -> Result<Option<String>>;

    /// Write hub-wide settings that must exist once: inserts every entry, or none
    /// if any key exists already. Returns whether they were written, so two hubs
    /// starting together on one database agree on a single CA.
    async fn init_meta(&self, entries: &[(&str, String)]) -> Result<bool>;

    /// The hub secret changes, in one transaction: the given settings replace their
    /// old values (secret check, CA key ciphertext, earlier hash keys), each
    /// integration named in `integration_secrets` gets its secret re-sealed under
    /// the new secret, the whole audit chain is re-signed under `new_audit_key`,
    /// and `audit` is appended. Returns the number of entries signed.
    async fn rotate_secret(
        &self,
        meta: &[(&str, String)],
        integration_secrets: &[(String, String)],
        new_audit_key: [u8; 32],
        audit: &AuditEntry,
    ) -> Result<usize>;
}

/// Enrollment tokens.
#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn create_token(&self, token: &TokenRecord, audit: &AuditEntry) -> Result<()>;
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    async fn find_token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>>;
    /// Revoke a token by id or display prefix. `NotFound` when no such token. A token
    /// revoked already is returned as it is, with nothing written (no second entry).
    async fn revoke_token(&self, id: &str, now: i64, audit: &AuditEntry) -> Result<TokenRecord>;
}

/// Agents: enrollment, renewal, clones, what they report, and their end.
#[async_trait]
pub trait AgentStore: Send + Sync {
    async fn get_agent(&self, id: &str) -> Result<Option<AgentRecord>>;
    /// The names of the agents with these ids (any state), as (id, name): for
    /// naming a page of audit entries in a few queries rather than one per agent.
    /// The agents with these ids (any state), in no particular order; unknown ids
    /// are left out.
    async fn get_agents(&self, ids: &[String]) -> Result<Vec<AgentRecord>>;
    async fn agent_names(&self, ids: &[String]) -> Result<Vec<(String, String)>>;
    async fn find_agent_by_key_hash(&self, hash: &str) -> Result<Option<AgentRecord>>;
    /// The live (not revoked, not removed) agent holding `name`.
    async fn find_live_agent_by_name(&self, name: &str) -> Result<Option<AgentRecord>>;
    /// Agents in name order; removed agents only when asked.
    async fn list_agents(&self, include_removed: bool) -> Result<Vec<AgentRecord>>;
    /// One page of the fleet view (not removed), in (name, id) order, after the
    /// given (name, id) position.
    async fn list_agents_page(
        &self,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<AgentRecord>>;
    /// [`list_agents_page`](Self::list_agents_page) narrowed in SQL by `filter`:
    /// every agent on the page that matches, perhaps with a few that do not (the
    /// match is a coarse `LIKE`, so callers check exactly).
    async fn list_agents_page_where(
        &self,
        after: Option<(&str, &str)>,
        filter: &AgentPageFilter,
        limit: i64,
    ) -> Result<Vec<AgentRecord>>;

    async fn find_enrollment(&self, enrollment_id: &str) -> Result<Option<EnrollmentRecord>>;

    /// The atomic enrollment: consume one token use (if any), create or update the
    /// agent with its new credentials, remember the enrollment id, write the audit
    /// entry. Commits all of it or nothing. Concurrent calls may share one
    /// transaction; each still gets the answer it would have got alone.
    async fn enroll(&self, write: &EnrollWrite) -> Result<AgentRecord>;

    /// How enrollments have been committed so far (for `/metrics`).
    fn enroll_commits(&self) -> EnrollCommits;

    /// Agents whose credentials were revoked, removed, replaced or marked cloned, by
    /// any hub sharing this database, as they commit. `None` where a database serves
    /// one hub (SQLite), which acts on its own changes directly.
    async fn watch_agent_changes(&self)
    -> Result<Option<tokio::sync::mpsc::Receiver<AgentChange>>>;

    /// Record a certificate renewal if the agent still holds `expected_generation`;
    /// `Conflict` when it does not (another copy renewed first).
    async fn renew(&self, write: &RenewWrite) -> Result<AgentRecord>;

    /// Lock an agent as cloned and keep the evidence, with its audit entry.
    async fn mark_cloned(&self, event: &CloneEvent, audit: &AuditEntry) -> Result<AgentRecord>;

    async fn clone_events(&self, agent_id: &str) -> Result<Vec<CloneEvent>>;

    /// Replace the host facts an agent reported at the start of a session.
    async fn update_facts(&self, agent_id: &str, facts: &AgentFacts, now: i64) -> Result<()>;

    /// Write the `last_seen_at` of many agents at once (a batch of heartbeats).
    async fn record_last_seen(&self, seen: &[(String, i64)]) -> Result<()>;

    /// Revoke or remove a live agent: its key stops working at once.
    async fn end_agent(
        &self,
        id: &str,
        end: AgentEnd,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<AgentRecord>;

    /// The agent an admin means by `name` (SPEC §6): the live one holding it, else
    /// the most recently revoked one, so that `revoke` then `remove` by name works.
    /// Removed agents are never found by name.
    async fn find_agent_by_name(&self, name: &str) -> Result<Option<AgentRecord>>;

    /// Apply an admin's label edit to a live agent, with its audit entry, in one
    /// transaction. `NotFound` when the agent is not live; `Conflict` when it would
    /// hold more than `edit.max_labels` labels.
    async fn change_labels(
        &self,
        id: &str,
        edit: &LabelEdit,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<AgentRecord>;

    /// Record a step of an agent's self-update on the agent, with its audit entry, in
    /// one transaction. `NotFound` when no such agent.
    async fn record_update(
        &self,
        agent_id: &str,
        update: &AgentUpdate,
        audit: &AuditEntry,
    ) -> Result<()>;
}

/// Agent session history (SPEC §13) and the fleet counted by status.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Apply sessions opening and closing, in order, in one transaction (a batch
    /// gathered by the hub: a reconnect storm is a few commits, not one per agent).
    /// Each opened session's agent loses its rows past `keep` (the oldest beyond
    /// `per_agent`, any that began before `not_before`). A close of a row closed
    /// already (or never written) changes nothing.
    async fn record_sessions(&self, writes: &[SessionWrite], keep: SessionRetention) -> Result<()>;
    /// Close the rows `hub` left open (it stopped without closing them: a crash),
    /// ending each at the agent's last recorded heartbeat, else at its start.
    /// Returns how many were closed.
    async fn close_open_sessions(&self, hub: &str, reason: &str) -> Result<u64>;
    /// Delete every session that began before `not_before`; returns how many.
    async fn prune_sessions(&self, not_before: i64) -> Result<u64>;
    /// An agent's sessions, newest first, at most `limit`.
    async fn agent_sessions(&self, agent_id: &str, limit: i64) -> Result<Vec<SessionRecord>>;
    /// Agents (not removed) counted by stored state, and requests waiting at `now`:
    /// one grouped query, cheap for a large fleet.
    async fn agent_counts(&self, now: i64) -> Result<AgentCounts>;
}

/// The hubs sharing the database, each under a lease it renews, and where each
/// agent's session is (SPEC §12): what lets every hub show the same fleet.
#[async_trait]
pub trait HubStore: Send + Sync {
    /// Take or renew a hub's lease (clearing a stop recorded by an earlier run).
    async fn renew_hub_lease(&self, lease: &HubLease) -> Result<()>;
    /// Give a lease back (a graceful stop): the hub's sessions stop counting now,
    /// and its presence rows are marked disconnected.
    async fn release_hub_lease(&self, hub: &str, at: i64) -> Result<()>;
    /// Every hub the database knows, live or not, by address.
    async fn list_hubs(&self) -> Result<Vec<HubRecord>>;
    /// Forget hubs whose lease ran out before `before`; returns how many.
    async fn forget_hubs(&self, before: i64) -> Result<u64>;
    /// Apply presence changes in order, in one transaction, stamping the rows
    /// written with `written_at` (what followers read by).
    async fn record_presence(&self, writes: &[PresenceWrite], written_at: i64) -> Result<()>;
    /// Presence rows changed after `(changed_at, agent_id)`, in that order, at most
    /// `limit`: how a hub follows the sessions the others hold.
    async fn presence_after(&self, after: (i64, &str), limit: i64) -> Result<Vec<PresenceRecord>>;
    /// Mark every session `hub` holds disconnected at `at` (it died, or starts
    /// again after a crash); returns how many.
    async fn end_hub_presence(&self, hub: &str, at: i64) -> Result<u64>;
}

/// Requests waiting for an admin's approval, and the trust rules that approve
/// without one.
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    /// Queue a request for approval; returns the stored request, or the existing one
    /// with the same secret (a poll). A new request past `limits` (when given) is
    /// refused with `QueueFull`; each new one also deletes a few expired requests, so
    /// the table never holds much more than the limits allow.
    async fn queue_request(
        &self,
        request: &PendingRecord,
        limits: Option<QueueLimits>,
        audit: &AuditEntry,
    ) -> Result<PendingRecord>;
    async fn find_request_by_secret(&self, secret_hash: &str) -> Result<Option<PendingRecord>>;
    /// Requests still waiting (not expired at `now`), oldest first.
    async fn list_pending(&self, now: i64) -> Result<Vec<PendingRecord>>;
    /// Approve or deny a waiting request; `NotFound` when it is not waiting.
    async fn decide_request(
        &self,
        id: &str,
        approve: bool,
        reason: Option<&str>,
        by: &str,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<PendingRecord>;

    async fn create_trust_rule(&self, rule: &TrustRuleRecord, audit: &AuditEntry) -> Result<()>;
    async fn list_trust_rules(&self) -> Result<Vec<TrustRuleRecord>>;
    /// `NotFound` when no such rule.
    async fn remove_trust_rule(&self, id: &str, audit: &AuditEntry) -> Result<()>;

    /// Approve every request waiting at `now` that `matches` accepts, in one
    /// transaction: all of them or, on any failure, none. Each gets its own audit
    /// entry: `audit` with the request as its target. Returns them, oldest first.
    async fn approve_matching(
        &self,
        matches: &(dyn for<'r> Fn(&'r PendingRecord) -> bool + Send + Sync),
        by: &str,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<Vec<PendingRecord>>;
}

/// Who may call the API: API keys, users and their login sessions.
#[async_trait]
pub trait AccessStore: Send + Sync {
    async fn create_api_key(&self, key: &ApiKeyRecord, audit: Option<&AuditEntry>) -> Result<()>;
    async fn find_api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>>;
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>>;
    /// Revoke or rotate a key; `NotFound` when there is no such (live, for rotate) key.
    async fn change_api_key(
        &self,
        id: &str,
        change: KeyChange,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<ApiKeyRecord>;
    /// Write `last_used_at` of keys, batched (one write a minute per key at most).
    async fn record_key_use(&self, used: &[(String, i64)]) -> Result<()>;

    async fn create_user(&self, user: &UserRecord, audit: &AuditEntry) -> Result<()>;
    async fn list_users(&self) -> Result<Vec<UserRecord>>;
    async fn find_user(&self, name: &str) -> Result<Option<UserRecord>>;
    /// `NotFound` when no such user.
    async fn change_user(
        &self,
        name: &str,
        change: UserChange,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<UserRecord>;
    async fn create_user_session(
        &self,
        hash: &str,
        user_id: &str,
        now: i64,
        expires_at: i64,
        audit: &AuditEntry,
    ) -> Result<()>;
    /// The user behind a live login session (whatever the user's state: the caller checks).
    async fn find_user_session(&self, hash: &str, now: i64) -> Result<Option<UserRecord>>;
    async fn delete_user_session(&self, hash: &str) -> Result<()>;
}

/// Probes and packs (SPEC §15): what each agent offers, and admins' decisions on
/// packs that need more than the baseline.
#[async_trait]
pub trait ProbeStore: Send + Sync {
    /// Replace the packs an agent announced (at a session's `hello`, when changed).
    async fn set_agent_catalog(
        &self,
        agent_id: &str,
        catalog: &[muster_proto::PackInfo],
    ) -> Result<()>;
    /// The packs the agent announced last (empty when it never did).
    async fn agent_catalog(&self, agent_id: &str) -> Result<Vec<muster_proto::PackInfo>>;
    async fn pack_decisions(&self, agent_id: &str) -> Result<Vec<PackDecisionRecord>>;
    /// The announced packs and the decisions of many agents at once (a probe's
    /// fan-out): agents that never announced any are left out.
    async fn agents_packs(
        &self,
        agent_ids: &[String],
    ) -> Result<(
        Vec<(String, Vec<muster_proto::PackInfo>)>,
        Vec<PackDecisionRecord>,
    )>;
    /// Record (or replace) a decision, with its audit entry.
    async fn decide_pack(&self, decision: &PackDecisionRecord, audit: &AuditEntry) -> Result<()>;
}

/// Single sign-on (SPEC §14): the provider set through the hub, the groups that
/// admit their members, and the users a provider signs in.
#[async_trait]
pub trait SsoStore: Send + Sync {
    /// The provider set through the hub, if any.
    async fn sso_settings(&self) -> Result<Option<SsoSettingsRecord>>;
    /// Set (`Some`) or clear (`None`) the provider, with its secret.
    async fn set_sso_settings(
        &self,
        settings: Option<&SsoSettingsRecord>,
        audit: &AuditEntry,
    ) -> Result<()>;
    /// `Conflict` when a group with this id is authorized already.
    async fn create_sso_group(&self, group: &SsoGroupRecord, audit: &AuditEntry) -> Result<()>;
    async fn list_sso_groups(&self) -> Result<Vec<SsoGroupRecord>>;
    /// `NotFound` when no such group.
    async fn remove_sso_group(&self, id: &str, audit: &AuditEntry) -> Result<SsoGroupRecord>;
    /// The user linked to this identity at this provider.
    async fn find_user_by_subject(&self, issuer: &str, subject: &str)
    -> Result<Option<UserRecord>>;
    /// A single sign-on, in one transaction: `user` is inserted (`new`) or its role,
    /// identity, display name, groups and last login are updated; a login session
    /// with this hash starts; `audit` is appended. All or nothing: `Conflict` when
    /// the name or the identity belongs to another user; `NotFound` when an existing
    /// user was removed or disabled meanwhile, or linked to another identity.
    async fn record_sso_login(
        &self,
        user: &UserRecord,
        new: bool,
        session_hash: &str,
        expires_at: i64,
        audit: &AuditEntry,
    ) -> Result<()>;
}

/// Integrations (SPEC §15): external APIs the hub probes, their credentials
/// (ciphertext only) and the outcome of their last test.
#[async_trait]
pub trait IntegrationStore: Send + Sync {
    /// `Conflict` when an integration with this name exists.
    async fn create_integration(
        &self,
        integration: &IntegrationRecord,
        audit: &AuditEntry,
    ) -> Result<()>;
    /// Every integration, by name.
    async fn list_integrations(&self) -> Result<Vec<IntegrationRecord>>;
    async fn get_integration(&self, name: &str) -> Result<Option<IntegrationRecord>>;
    /// Record a test's outcome (status, last error, when), with its audit entry;
    /// `NotFound` when no such integration (removed meanwhile).
    async fn record_integration_test(
        &self,
        name: &str,
        test: &IntegrationTest,
        audit: &AuditEntry,
    ) -> Result<IntegrationRecord>;
    /// `NotFound` when no such integration.
    async fn remove_integration(&self, name: &str, audit: &AuditEntry)
    -> Result<IntegrationRecord>;
}

/// The audit log: reading it, checking its chain, and entries that record no other
/// change. (Every other write appends its own entry in its own transaction.)
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Audit entries, newest first, filtered.
    async fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;

    /// Walk the whole audit chain and report the first entry that does not verify.
    async fn verify_audit(&self) -> Result<AuditVerdict>;

    /// The newest chained entry's position and hash (`None`: an empty log).
    async fn audit_head(&self) -> Result<Option<(i64, String)>>;

    /// The chain hash stored with entry `seq`, if there is such an entry.
    async fn audit_hash_at(&self, seq: i64) -> Result<Option<String>>;

    /// An audit entry that records no other change (a refused login).
    async fn record_audit(&self, audit: &AuditEntry) -> Result<()>;

    /// Entries that record no other change, in one transaction (a probe fan-out's
    /// runs).
    async fn record_audits(&self, audit: &[AuditEntry]) -> Result<()>;
}

/// A consistent copy of a SQLite database, taken while the hub keeps serving
/// (`VACUUM INTO` reads one snapshot), written to `out` with mode 0600 through a
/// temporary file and a rename, so a failure leaves no partial backup.
pub async fn backup_sqlite(db_url: &str, out: &std::path::Path) -> Result<()> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StoreError::Conflict(format!("{} is not a file path", out.display())))?;
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let io = |e: std::io::Error| StoreError::Database(sqlx::Error::Io(e));
    // VACUUM INTO wants a file that does not exist or is empty: create it private.
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io)?;
    }
    let result = async {
        let mut conn = sqlx::AnyConnection::connect(db_url).await?;
        let target = temp.to_string_lossy().replace('\'', "''");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("VACUUM INTO '{target}'")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        std::fs::rename(&temp, out).map_err(io)?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
