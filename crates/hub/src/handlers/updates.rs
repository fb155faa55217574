//! Self-updates (SPEC §10 "Updates"): `POST /api/v1/agents/{id}/update`, where an
//! admin asks a live agent to install a published release, and the calling agent's
//! own `POST /api/v1/agent/update-status` (a step of `muster update`, which finds
//! the release with `GET /api/v1/agent/latest`). The work is in `updates.rs`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use muster_proto::{UpdateOrder, UpdateReport, UpdateRequest};

use crate::error::ApiResult;
use crate::extract::{ApiJson, Caller, CallingAgent};
use crate::handlers::agents::find_agent;
use crate::state::AppState;

#[utoipa::path(post, path = "/api/v1/agents/{id}/update", tag = "agents", summary = "Ask a live agent to install a published release", params(("id" = String, Path, description = "the agent's id (UUID) or name")), request_body = muster_proto::UpdateRequest, responses((status = 200, description = "the order was sent", body = muster_proto::UpdateOrder), (status = 400, description = "invalid version", body = muster_proto::ApiError), (status = 404, description = "no such agent, or no release for its platform", body = muster_proto::ApiError), (status = 409, description = "the agent is offline, or the update would be a downgrade", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn update_agent(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateRequest>,
) -> ApiResult<Json<UpdateOrder>> {
    let agent = find_agent(&state, &id).await?;
    let audit = caller.audit("agent.update.requested", format!("agent:{}", agent.id));
    let order = crate::updates::order(&state, audit, &agent, &req).await?;
    tracing::info!(agent_id = %order.agent_id, version = %order.version, "update sent to agent");
    Ok(Json(order))
}

#[utoipa::path(post, path = "/api/v1/agent/update-status", tag = "agent", summary = "Report a step of a self-update", request_body = muster_proto::UpdateReport, responses((status = 204, description = "recorded"), (status = 400, description = "invalid report", body = muster_proto::ApiError)), security(("agent_key" = ["agent"])))]
pub async fn agent_report(
    State(state): State<Arc<AppState>>,
    calling: CallingAgent,
    ApiJson(r): ApiJson<UpdateReport>,
) -> ApiResult<StatusCode> {
    let a = &calling.agent;
    crate::updates::record_report(
        &state,
        a,
        &a.facts.agent_version,
        calling.caller.source,
        r.phase,
        &r.version,
        &r.message,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
