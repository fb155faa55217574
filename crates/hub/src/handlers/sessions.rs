//! `GET /api/v1/agent/session`: the upgrade to the agent's live WebSocket (SPEC §9).
//! The session itself runs in `crate::sessions`.

use std::sync::Arc;

use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;

use crate::clones::cloned_refusal;
use crate::error::ApiResult;
use crate::extract::CallingAgent;
use crate::state::AppState;

/// Needs both the agent key (checked by the route's role) and the agent's client
/// certificate. Buffers are small and frames bounded: an idle session must cost
/// kilobytes, not the 128 KiB tungstenite reads by default. The read buffer is
/// allocated up front and kept for the session's life, and an agent's frames are a
/// heartbeat of about 80 bytes: 256 bytes hold one, and the rare large frame (a
/// `hello` with many interfaces) grows it for as long as it needs (SPEC §12: 4 KiB
/// here was a fifth of a session's memory).
#[utoipa::path(get, path = "/api/v1/agent/session", tag = "agent", summary = "The agent's live session (WebSocket upgrade)", responses((status = 101, description = "switching to the WebSocket session"), (status = 400, description = "not a WebSocket upgrade request", body = muster_proto::ApiError), (status = 403, description = "the client certificate presented is not the agent's current one, or the agent is locked as cloned", body = muster_proto::ApiError), (status = 426, description = "the connection cannot be upgraded", body = muster_proto::ApiError)), security(("agent_key" = ["agent"], "agent_mtls" = [])))]
pub async fn agent_session(
    State(state): State<Arc<AppState>>,
    calling: CallingAgent,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    calling.require_cert("a session needs the agent's client certificate")?;
    if calling.agent.cloned_at.is_some() {
        return Err(cloned_refusal());
    }
    // Boxed: the upgrade keeps what its callback captured for the session's life.
    let (agent, source) = (Box::new(calling.agent), calling.caller.source);
    let frame = 64 * 1024;
    Ok(ws
        .read_buffer_size(256)
        .write_buffer_size(4096)
        .max_write_buffer_size(2 * frame)
        .max_message_size(frame)
        .max_frame_size(frame)
        .on_upgrade(move |socket| crate::sessions::run(state, agent, source, socket)))
}
