//! The calling agent's own routes (SPEC §6, §8): its record as the hub sees it, and
//! unenrolling itself. Renewal and the session have their own modules.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use muster_proto::AgentInfo;
use muster_store::AgentEnd;

use crate::error::ApiResult;
use crate::extract::{CallingAgent, check_agent_cert};
use crate::handlers::agents::{agent_info, end_agent_as};
use crate::state::AppState;

/// `GET /api/v1/agent/me`. When the agent presents its client certificate too, that
/// certificate must be its current one: a replaced certificate is refused.
#[utoipa::path(get, path = "/api/v1/agent/me", tag = "agent", summary = "The calling agent's record", responses((status = 200, description = "the agent as the hub sees it", body = muster_proto::AgentInfo), (status = 403, description = "the client certificate presented is not the agent's current one", body = muster_proto::ApiError)), security(("agent_key" = ["agent"])))]
pub async fn agent_me(
    State(state): State<Arc<AppState>>,
    calling: CallingAgent,
) -> ApiResult<Json<AgentInfo>> {
    if let Some(cert) = &calling.cert {
        check_agent_cert(&calling.agent, cert)?;
    }
    Ok(Json(agent_info(&calling.agent, &state)))
}

/// `POST /api/v1/agent/unenroll`: an agent being uninstalled revokes itself, so it
/// does not linger as a ghost (SPEC §6). Needs its certificate as well as its key.
#[utoipa::path(post, path = "/api/v1/agent/unenroll", tag = "agent", summary = "Unenroll: the calling agent revokes itself", responses((status = 204, description = "revoked"), (status = 403, description = "the client certificate presented is not the agent's current one", body = muster_proto::ApiError)), security(("agent_key" = ["agent"], "agent_mtls" = [])))]
pub async fn unenroll(
    State(state): State<Arc<AppState>>,
    calling: CallingAgent,
) -> ApiResult<StatusCode> {
    calling.require_cert("unenrolling needs the agent's client certificate")?;
    end_agent_as(
        &state,
        &calling.caller,
        &calling.agent.id,
        AgentEnd::Revoke,
        "agent.unenrolled",
    )
    .await
    .map(|_| StatusCode::NO_CONTENT)
}
