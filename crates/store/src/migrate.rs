//! The one ordered set of migrations, embedded in the binary and applied at start.
//!
//! A `muster_schema` row holds the applied version. Newer code applies what is
//! missing in one transaction; older code refuses a newer database rather than
//! guessing at it. On PostgreSQL an advisory lock keeps two hubs starting together
//! from racing.
//!
//! Where the two dialects truly differ, a migration writes the PostgreSQL-only
//! part as `/*pg: … :pg*/`: a comment to SQLite, uncommented for PostgreSQL.

use sqlx::{Any, Transaction};

use crate::{Result, StoreError};

/// Migrations in order; the version of each is its position, from 1.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_foundation.sql"),
    include_str!("../migrations/0002_renewal_and_clones.sql"),
    include_str!("../migrations/0003_pending_requests.sql"),
    include_str!("../migrations/0004_trust_rules.sql"),
    include_str!("../migrations/0005_audit_chain.sql"),
    include_str!("../migrations/0006_key_scopes.sql"),
    include_str!("../migrations/0007_users.sql"),
    include_str!("../migrations/0008_agent_pages.sql"),
    include_str!("../migrations/0009_queue_limits.sql"),
    include_str!("../migrations/0010_agent_updates.sql"),
    include_str!("../migrations/0011_agent_sessions.sql"),
    include_str!("../migrations/0012_agent_counts.sql"),
    include_str!("../migrations/0013_agent_name_lower.sql"),
    include_str!("../migrations/0014_hub_leases.sql"),
    include_str!("../migrations/0015_sso.sql"),
    include_str!("../migrations/0016_probes.sql"),
    include_str!("../migrations/0017_integrations.sql"),
];

pub(crate) fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

pub(crate) async fn run(tx: &mut Transaction<'static, Any>, postgres: bool) -> Result<()> {
    if postgres {
        sqlx::query(crate::pg_locks::XACT_LOCK)
            .bind(crate::pg_locks::MIGRATIONS)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS muster_schema (version BIGINT NOT NULL)")
        .execute(&mut **tx)
        .await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM muster_schema")
        .fetch_one(&mut **tx)
        .await?;
    let current = current.unwrap_or(0);
    if current > latest() {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: latest(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let sql = if postgres {
            sql.replace("/*pg:", "").replace(":pg*/", "")
        } else {
            (*sql).to_owned()
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut **tx)
            .await?;
        let version = i as i64 + 1;
        if current == 0 && i == 0 {
            sqlx::query("INSERT INTO muster_schema (version) VALUES ($1)")
                .bind(version)
                .execute(&mut **tx)
                .await?;
        } else {
            sqlx::query("UPDATE muster_schema SET version = $1")
                .bind(version)
                .execute(&mut **tx)
                .await?;
        }
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}
