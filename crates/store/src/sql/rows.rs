//! How rows and records meet: one decoder per row type ([`FromRow`]), the JSON
//! columns, the agent column list, and multi-row `INSERT`s built at run time.
//!
//! Low in the crate on purpose: the concern files, the enrollment writes and the
//! group commit all read rows, so none of them may own the decoders.

use std::collections::BTreeMap;

use sqlx::Any;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::model::*;
use crate::{Result, StoreError};

/// Every agent column, in the order `AgentRecord::from_row` reads them. A macro, so
/// that it can be spliced into the `&'static str` queries sqlx wants.
macro_rules! agent_columns {
    () => {
        "id, name, hostname, ip, os_info, arch, agent_version, labels, packs, \
         interfaces, state, key_hash, cert_serial, cert_pubkey, cert_expires_at, generation, \
         enrolled_at, updated_at, last_seen_at, revoked_at, removed_at, prev_cert_serial, \
         prev_cert_expires_at, cloned_at, update_state, update_version, update_message, update_at"
    };
}

/// `SELECT <every agent column> FROM agents <tail>`, as the `&'static str` sqlx wants.
macro_rules! agent_select {
    ($tail:literal) => {
        concat!("SELECT ", agent_columns!(), " FROM agents ", $tail)
    };
}

/// Every agent column, for a `RETURNING` built at run time.
pub(crate) const AGENT_COLUMNS: &str = agent_columns!();

/// A record read from its table's row. Ours rather than sqlx's `FromRow`, because a
/// column holding bad JSON is [`StoreError::Corrupt`], not a database error.
pub(crate) trait FromRow: Sized {
    fn from_row(row: &AnyRow) -> Result<Self>;
}

/// The record in an optional row (a lookup).
pub(crate) fn decode_one<T: FromRow>(row: Option<AnyRow>) -> Result<Option<T>> {
    row.as_ref().map(T::from_row).transpose()
}

/// The records in `rows`, in order (a listing).
pub(crate) fn decode_all<T: FromRow>(rows: &[AnyRow]) -> Result<Vec<T>> {
    rows.iter().map(T::from_row).collect()
}

/// Ids per `IN (…)` list: far below every backend's limit on bound values, and
/// small enough that SQLite's lookup of each `$n` by name stays cheap.
const IN_CHUNK: usize = 500;

/// The rows of `sql` for every id of `ids`: run once per chunk of them, with `{in}`
/// in `sql` replaced by the chunk's placeholder list. `sql` is the code's own
/// (`'static`); only generated placeholders are spliced in, every id is bound.
pub(crate) async fn fetch_in(
    pool: &sqlx::AnyPool,
    sql: &'static str,
    ids: &[String],
) -> Result<Vec<AnyRow>> {
    let mut rows = Vec::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.replace("{in}", &list.join(", "))));
        for id in chunk {
            query = query.bind(id.as_str());
        }
        rows.extend(query.fetch_all(pool).await?);
    }
    Ok(rows)
}

impl FromRow for TokenRecord {
    fn from_row(row: &AnyRow) -> Result<Self> {
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
}

impl FromRow for ApiKeyRecord {
    fn from_row(row: &AnyRow) -> Result<Self> {
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
}

impl FromRow for AgentRecord {
    fn from_row(row: &AnyRow) -> Result<Self> {
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
            update: match row.try_get::<Option<String>, _>("update_state")? {
                Some(phase) => Some(AgentUpdate {
                    phase,
                    version: row
                        .try_get::<Option<String>, _>("update_version")?
                        .unwrap_or_default(),
                    message: row
                        .try_get::<Option<String>, _>("update_message")?
                        .unwrap_or_default(),
                    at: row.try_get::<Option<i64>, _>("update_at")?.unwrap_or(0),
                }),
                None => None,
            },
        })
    }
}

impl FromRow for EnrollmentRecord {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(EnrollmentRecord {
            enrollment_id: row.try_get("enrollment_id")?,
            agent_id: row.try_get("agent_id")?,
            credential: row.try_get("credential")?,
            public_key: row.try_get("public_key")?,
            created: row.try_get::<i64, _>("created")? != 0,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl FromRow for CloneEvent {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(CloneEvent {
            agent_id: row.try_get("agent_id")?,
            at: row.try_get("at")?,
            source: row.try_get("source")?,
            presented: row.try_get("presented")?,
            expected: row.try_get("expected")?,
            via: row.try_get("via")?,
        })
    }
}

impl FromRow for UserRecord {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(UserRecord {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            role: row.try_get("role")?,
            password_hash: row.try_get("password_hash")?,
            disabled_at: row.try_get("disabled_at")?,
            created_at: row.try_get("created_at")?,
            granted_role: row.try_get("granted_role")?,
            display_name: row.try_get("display_name")?,
            sso_issuer: row.try_get("sso_issuer")?,
            sso_subject: row.try_get("sso_subject")?,
            groups: from_json("users.groups", &row.try_get::<String, _>("groups")?)?,
            last_login_at: row.try_get("last_login_at")?,
        })
    }
}

impl FromRow for SsoGroupRecord {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(SsoGroupRecord {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            role: row.try_get("role")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl FromRow for IntegrationRecord {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(IntegrationRecord {
            name: row.try_get("name")?,
            kind: row.try_get("kind")?,
            url: row.try_get("url")?,
            auth: row.try_get("auth")?,
            header_name: row.try_get("header_name")?,
            secret: row.try_get("secret")?,
            status: row.try_get("status")?,
            last_error: row.try_get("last_error")?,
            last_tested_at: row.try_get("last_tested_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

impl FromRow for PendingRecord {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(PendingRecord {
            id: row.try_get("id")?,
            secret_hash: row.try_get("secret_hash")?,
            kind: row.try_get("kind")?,
            agent_id: row.try_get("agent_id")?,
            name: row.try_get("name")?,
            hostname: row.try_get("hostname")?,
            source: row.try_get("source")?,
            source_net: row.try_get("source_net")?,
            facts: row.try_get("facts")?,
            labels: from_json(
                "pending_requests.labels",
                &row.try_get::<String, _>("labels")?,
            )?,
            public_key: row.try_get("public_key")?,
            status: row.try_get("status")?,
            reason: row.try_get("reason")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            decided_at: row.try_get("decided_at")?,
            decided_by: row.try_get("decided_by")?,
        })
    }
}

impl FromRow for TrustRuleRecord {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(TrustRuleRecord {
            id: row.try_get("id")?,
            pattern: row.try_get("pattern")?,
            cidrs: from_json("trust_rules.cidrs", &row.try_get::<String, _>("cidrs")?)?,
            labels: from_json("trust_rules.labels", &row.try_get::<String, _>("labels")?)?,
            max_per_hour: row.try_get("max_per_hour")?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
        })
    }
}

/// The signed fields of an audit row; its position and hash are read by whoever
/// walks the chain, as each needs them.
impl FromRow for AuditEntry {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(AuditEntry {
            at: row.try_get("at")?,
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            target: row.try_get("target")?,
            source: row.try_get("source")?,
            outcome: row.try_get("outcome")?,
            details: row.try_get("details")?,
        })
    }
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> String {
    // Serializing plain maps and vectors of strings cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// A unique row id for audit entries and clone events: time-ordered, then random.
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

/// A query built at run time, before or after its binds.
pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

/// An `INSERT` as its head and one row's template, `?` standing for each bind.
pub(crate) type RowsInsert = (&'static str, &'static str);

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

impl FromRow for SessionRecord {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(SessionRecord {
            id: row.try_get("id")?,
            agent_id: row.try_get("agent_id")?,
            hub: row.try_get("hub")?,
            address: row.try_get("address")?,
            connected_at: row.try_get("connected_at")?,
            disconnected_at: row.try_get("disconnected_at")?,
            reason: row.try_get("reason")?,
        })
    }
}

impl FromRow for HubRecord {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(HubRecord {
            lease: HubLease {
                id: row.try_get("id")?,
                address: row.try_get("address")?,
                version: row.try_get("version")?,
                started_at: row.try_get("started_at")?,
                renewed_at: row.try_get("renewed_at")?,
                expires_at: row.try_get("expires_at")?,
                online: row.try_get("online")?,
                degraded: row.try_get("degraded")?,
            },
            stopped_at: row.try_get("stopped_at")?,
        })
    }
}

impl FromRow for PresenceRecord {
    fn from_row(row: &AnyRow) -> Result<Self> {
        let health: String = row.try_get("health")?;
        Ok(PresenceRecord {
            agent_id: row.try_get("agent_id")?,
            hub: row.try_get("hub")?,
            session: row.try_get("session")?,
            connected: row.try_get::<i64, _>("connected")? != 0,
            health: from_json("presence.health", &format!("\"{health}\""))?,
            problems: from_json("presence.problems", &row.try_get::<String, _>("problems")?)?,
            changed_at: row.try_get("changed_at")?,
        })
    }
}
