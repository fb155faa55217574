//! The writes an enrollment makes (take a token use or a rule's allowance, insert or
//! replace the agent, remember the enrollment id, collect an approved request), and
//! [`Db::enroll_one`], the enrollment in a transaction of its own.
//!
//! Shared by the single and the group commit (`group`), so that both write the same
//! rows; it knows neither `group` nor the `SqlStore` above it.

use sqlx::{Any, AssertSqlSafe, Transaction};

use crate::model::*;
use crate::sql::db::Db;
use crate::sql::rows::{
    AGENT_COLUMNS, AnyQuery, FromRow, RowsInsert, decode_one, is_unique_violation, json, rows_sql,
};
use crate::{Result, StoreError};

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

impl Db {
    /// One enrollment in its own transaction. The group commit falls back to this
    /// whenever a group is refused, so its answers are the reference.
    pub(crate) async fn enroll_one(&self, w: &EnrollWrite) -> Result<AgentRecord> {
        let mut t = self.begin_audited_chain().await?;
        if let Some(token_id) = &w.consume_token
            && !take_token_uses(&mut t.tx, token_id, 1, w.now).await?
        {
            let row = sqlx::query("SELECT * FROM tokens WHERE id = $1")
                .bind(token_id)
                .fetch_optional(&mut *t.tx)
                .await?;
            let token: Option<TokenRecord> = decode_one(row)?;
            return Err(match token.map(|t| t.state(w.now)) {
                None => StoreError::TokenUnknown,
                Some(TokenState::Revoked) => StoreError::TokenRevoked,
                Some(TokenState::Expired) => StoreError::TokenExpired,
                Some(_) => StoreError::TokenExhausted,
            });
        }
        if let Some(rule_id) = &w.consume_rule {
            take_rule_use(&mut t.tx, rule_id, w.now).await?;
        }
        let agent = match w.mode {
            EnrollMode::New => {
                let sql = format!("{} RETURNING {AGENT_COLUMNS}", rows_sql(NEW_AGENT_ROW, 1));
                let mut rows = bind_new_agents(sqlx::query(AssertSqlSafe(sql)), &[w])
                    .fetch_all(&mut *t.tx)
                    .await
                    .map_err(name_taken)?;
                AgentRecord::from_row(&rows.pop().ok_or(StoreError::NotFound)?)?
            }
            EnrollMode::Replace => {
                let agent = replace_agent(&mut t.tx, w).await?;
                self.notify_agent_changed(&mut t.tx, &agent.id).await?;
                agent
            }
        };
        if let Some(e) = &w.enrollment {
            let sql = rows_sql(ENROLLMENT_ROW, 1);
            bind_enrollments(sqlx::query(AssertSqlSafe(sql)), &[e])
                .execute(&mut *t.tx)
                .await
                .map_err(enrollment_taken)?;
        }
        if let Some(id) = &w.complete_request {
            complete_request_tx(&mut t.tx, id, w.now).await?;
        }
        t.commit(&[&w.audit]).await?;
        Ok(agent)
    }
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
fn name_taken(e: sqlx::Error) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::NameInUse
    } else {
        e.into()
    }
}

/// A reused enrollment id, from a failed enrollments insert.
fn enrollment_taken(e: sqlx::Error) -> StoreError {
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
    AgentRecord::from_row(&row.ok_or(StoreError::NotFound)?)
}

/// Collect an approved request inside the caller's transaction: exactly once. Used
/// by the enrollment and the renewal that an approval let through.
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
