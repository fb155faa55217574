//! `GET /api/v1/hubs`: the hubs sharing the database, each with its lease (SPEC §12).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use muster_proto::{HubInfo, HubList, HubState};

use crate::clock::{now_ms, rfc3339};
use crate::error::ApiResult;
use crate::state::AppState;

#[utoipa::path(get, path = "/api/v1/hubs", tag = "hubs", operation_id = "list_hubs", summary = "The hubs sharing the database", responses((status = 200, description = "the hubs, live first", body = muster_proto::HubList)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<HubList>> {
    Ok(Json(hub_list(&state).await?))
}

/// Every hub the database knows: live ones first, then by address.
pub async fn hub_list(state: &AppState) -> ApiResult<HubList> {
    let now = now_ms();
    let mut hubs: Vec<HubInfo> = state
        .store
        .list_hubs()
        .await?
        .into_iter()
        .map(|h| {
            let this_hub = h.lease.id == state.hub_id;
            let hub_state = if h.stopped_at.is_some() {
                HubState::Stopped
            } else if h.lease.expires_at > now {
                HubState::Live
            } else {
                HubState::Expired
            };
            // This hub knows its own sessions better than its last renewal does.
            let sessions = if this_hub {
                state.sessions.count() as i64
            } else {
                h.lease.online + h.lease.degraded
            };
            HubInfo {
                id: h.lease.id,
                address: h.lease.address,
                version: h.lease.version,
                state: hub_state,
                sessions,
                started_at: rfc3339(h.lease.started_at),
                renewed_at: rfc3339(h.lease.renewed_at),
                lease_age_ms: (now - h.lease.renewed_at).max(0),
                expires_at: rfc3339(h.lease.expires_at),
                this_hub,
            }
        })
        .collect();
    hubs.sort_by(|a, b| {
        (a.state != HubState::Live, &a.address, &a.id).cmp(&(
            b.state != HubState::Live,
            &b.address,
            &b.id,
        ))
    });
    Ok(HubList { hubs })
}
