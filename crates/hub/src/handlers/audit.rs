//! The audit log (SPEC §11): filtered listing and chain verification.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use muster_proto::{
    AuditCheckpoint, AuditEntryInfo, AuditList, AuditVerifyResult, VerifyAuditRequest,
};

use crate::checkpoint;
use crate::clock::rfc3339;
use crate::error::{ApiFailure, ApiResult};
use crate::extract::ApiJson;
use crate::handlers::agents::find_agent;
use crate::state::AppState;

#[derive(serde::Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub agent: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Unix milliseconds.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Keyset cursor: entries older than this `seq` (the last one of the page
    /// before), newest first.
    #[param(minimum = 1)]
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", summary = "The audit log, newest first", params(AuditQuery), responses((status = 200, description = "a page of entries", body = muster_proto::AuditList), (status = 400, description = "invalid cursor, range or limit", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn list_audit(
    State(state): State<Arc<AppState>>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditList>> {
    // Positions start at 1: a cursor below that was never handed out, and saying
    // so beats an empty page that reads like the end of the log.
    if q.before.is_some_and(|b| b < 1) {
        return Err(ApiFailure::bad_request(
            "invalid audit cursor: `before` must be an entry's seq (1 or more)",
        ));
    }
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
        before_seq: q.before,
        limit: q.limit.unwrap_or(1000).clamp(1, 10_000),
    };
    let entries = state.store.audit_entries(&filter).await?;
    let names = Names::of(
        &state,
        entries
            .iter()
            .flat_map(|r| [&r.entry.actor, &r.entry.target]),
    )
    .await?;
    Ok(Json(AuditList {
        entries: entries
            .into_iter()
            .map(|r| AuditEntryInfo {
                seq: r.seq,
                at: rfc3339(r.entry.at),
                actor_name: names.get(&r.entry.actor),
                target_name: names.get(&r.entry.target),
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

/// Current names of the agents and API keys a page of entries mentions, so a
/// listing reads `agent:<id> (web-01)` rather than bare ids: one query per 500
/// distinct agents and one read of the keys.
struct Names(HashMap<String, String>);

impl Names {
    async fn of<'a>(state: &AppState, refs: impl Iterator<Item = &'a String>) -> ApiResult<Names> {
        let mut agents = HashSet::new();
        let mut wants_keys = false;
        for r in refs {
            if let Some(id) = r.strip_prefix("agent:") {
                agents.insert(id.to_owned());
            } else if r.starts_with("key:") {
                wants_keys = true;
            }
        }
        let agents: Vec<String> = agents.into_iter().collect();
        let mut names: HashMap<String, String> = state
            .store
            .agent_names(&agents)
            .await?
            .into_iter()
            .map(|(id, name)| (format!("agent:{id}"), name))
            .collect();
        if wants_keys {
            for k in state.store.list_api_keys().await? {
                names.insert(format!("key:{}", k.id), k.name);
            }
        }
        Ok(Names(names))
    }

    fn get(&self, who: &str) -> Option<String> {
        self.0.get(who).cloned()
    }
}

/// `GET /api/v1/audit/verify`: walk the whole chain.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", summary = "Verify the audit log's hash chain", responses((status = 200, description = "the verdict", body = muster_proto::AuditVerifyResult)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn verify_audit(
    State(state): State<Arc<AppState>>,
) -> ApiResult<Json<AuditVerifyResult>> {
    verify(&state, None).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/audit/verify", tag = "audit", summary = "Verify the audit chain and that it still reaches a checkpoint", request_body = muster_proto::VerifyAuditRequest, responses((status = 200, description = "the verdict", body = muster_proto::AuditVerifyResult), (status = 400, description = "the checkpoint's signature does not verify", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
/// `POST /api/v1/audit/verify` with a checkpoint: walk the chain, and check that it
/// still reaches the entry the checkpoint saw, unchanged (nothing cut off behind it).
pub async fn verify_with_checkpoint(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<VerifyAuditRequest>,
) -> ApiResult<Json<AuditVerifyResult>> {
    verify(&state, req.checkpoint.as_ref()).await.map(Json)
}

async fn verify(state: &AppState, cp: Option<&AuditCheckpoint>) -> ApiResult<AuditVerifyResult> {
    if let Some(cp) = cp
        && !checkpoint::authentic(&state.keys, cp)
    {
        return Err(ApiFailure::bad_request(
            "the checkpoint's signature does not verify under this hub's secret: it was altered, or written by a hub of another fleet",
        ));
    }
    let v = state.store.verify_audit().await?;
    let mut result = AuditVerifyResult {
        ok: v.broken.is_none(),
        count: v.count,
        broken_seq: v.broken.as_ref().map(|b| b.0),
        problem: v.broken.map(|b| b.1),
        checkpoint_seq: cp.map(|c| c.seq),
    };
    if let Some(cp) = cp
        && result.ok
        && let Some(why) = checkpoint::gap(state, cp).await?
    {
        result.ok = false;
        result.broken_seq = Some(cp.seq.min(v.count as i64 + 1));
        result.problem = Some(why);
    }
    Ok(result)
}
