//! The audit log (SPEC §11): filtered listing and chain verification.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use muster_proto::{AuditEntryInfo, AuditList, AuditVerifyResult};

use crate::clock::rfc3339;
use crate::error::ApiResult;
use crate::handlers::agents::find_agent;
use crate::state::AppState;

#[derive(serde::Deserialize)]
pub struct AuditQuery {
    agent: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    /// Unix milliseconds.
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<i64>,
}

pub async fn list_audit(
    State(state): State<Arc<AppState>>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditList>> {
    let target = match q.agent {
        Some(a) => Some(format!(
            "agent:{}",
            match find_agent(&state, &a).await {
                Ok(agent) => agent.id,
                // No name leads to a removed agent; its id still finds its history.
                Err(f) if f.status == StatusCode::NOT_FOUND => a,
                Err(f) => return Err(f),
            }
        )),
        None => None,
    };
    let filter = muster_store::AuditFilter {
        target,
        actor: q.actor,
        action: q.action,
        since: q.since,
        until: q.until,
        limit: q.limit.unwrap_or(1000).clamp(1, 10_000),
    };
    let entries = state.store.audit_entries(&filter).await?;
    Ok(Json(AuditList {
        entries: entries
            .into_iter()
            .map(|r| AuditEntryInfo {
                seq: r.seq,
                at: rfc3339(r.entry.at),
                actor: r.entry.actor,
                action: r.entry.action,
                target: r.entry.target,
                source: r.entry.source,
                outcome: r.entry.outcome,
                details: serde_json::from_str(&r.entry.details).unwrap_or(serde_json::Value::Null),
            })
            .collect(),
    }))
}

pub async fn verify_audit(
    State(state): State<Arc<AppState>>,
) -> ApiResult<Json<AuditVerifyResult>> {
    let v = state.store.verify_audit().await?;
    Ok(Json(AuditVerifyResult {
        ok: v.broken.is_none(),
        count: v.count,
        broken_seq: v.broken.as_ref().map(|b| b.0),
        problem: v.broken.map(|b| b.1),
    }))
}
