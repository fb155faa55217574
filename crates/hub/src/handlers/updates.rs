//! `POST /api/v1/agents/{id}/update` (SPEC §10 "Updates"): an admin asks a live
//! agent to install a published release; the work is in `updates.rs`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use muster_proto::{UpdateOrder, UpdateRequest};

use crate::error::ApiResult;
use crate::extract::{ApiJson, Caller};
use crate::handlers::agents::find_agent;
use crate::state::AppState;

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
