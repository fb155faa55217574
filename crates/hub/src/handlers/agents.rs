//! The fleet as admins and members see it (SPEC §6): list (paged, scoped for
//! members), show, revoke, remove, label; and how an agent record is rendered on
//! the wire.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use muster_proto::{
    AgentInfo, AgentList, ChangeLabelsRequest, FleetSummary, SessionHistory, SessionInfo, codes,
};
use muster_store::{AgentEnd, AgentRecord, AgentState, LabelEdit, StoreError};

use crate::audit::AuditExt;
use crate::clock::{now_ms, rfc3339};
use crate::error::{ApiFailure, ApiResult};
use crate::events::{AgentNote, Change};
use crate::extract::{ApiJson, Caller};
use crate::principal::Principal;
use crate::rules::hostname_matches;
use crate::state::AppState;
use crate::updates::LatestReleases;
use crate::validate::{MAX_LABELS, check_label};

pub fn agent_info(a: &AgentRecord, state: &AppState) -> AgentInfo {
    agent_info_with(a, state, &mut LatestReleases::default())
}

/// [`agent_info`] for one of many agents, sharing what was read of the releases.
pub fn agent_info_with(
    a: &AgentRecord,
    state: &AppState,
    latest: &mut LatestReleases,
) -> AgentInfo {
    let status = state.sessions.status_of(a);
    AgentInfo {
        id: a.id.clone(),
        name: a.name.clone(),
        hostname: a.facts.hostname.clone(),
        status,
        ip: a.facts.ip.clone(),
        os_info: a.facts.os_info.clone(),
        arch: a.facts.arch.clone(),
        agent_version: a.facts.agent_version.clone(),
        labels: a.facts.labels.clone(),
        packs: a.facts.packs.clone(),
        enrolled_at: rfc3339(a.enrolled_at),
        last_seen_at: a.last_seen_at.map(rfc3339),
        cert_expires_at: Some(rfc3339(a.cert_expires_at)),
        interfaces: a.facts.interfaces.clone(),
        generation: a.generation,
        clone_events: Vec::new(),
        outdated: latest.outdated(state, a),
        update: a.update.as_ref().and_then(crate::updates::info),
        problems: match status {
            muster_proto::AgentStatus::Degraded => state
                .sessions
                .fleet_health(&a.id)
                .map(|(_, p)| p)
                .unwrap_or_default(),
            _ => Vec::new(),
        },
    }
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    limit: Option<i64>,
    after: Option<String>,
}

/// The fleet, a page at a time (default 100, at most 1,000), in name order. The
/// cursor is the last agent's name and id; a member's scope filters as it goes.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", summary = "The fleet, a page at a time", params(PageQuery), responses((status = 200, description = "a page of agents in name order", body = muster_proto::AgentList), (status = 400, description = "invalid cursor or limit", body = muster_proto::ApiError)), security(("api_key" = ["member"]), ("session" = ["member"])))]
pub async fn list_agents(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<AgentList>> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut position: Option<(String, String)> = match &q.after {
        Some(cursor) => {
            let raw = b64
                .decode(cursor)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiFailure::bad_request("invalid page cursor"))?;
            let (name, id) = raw
                .split_once('\n')
                .ok_or_else(|| ApiFailure::bad_request("invalid page cursor"))?;
            Some((name.to_owned(), id.to_owned()))
        }
        None => None,
    };
    let mut page = Vec::new();
    let mut more = false;
    let mut latest = LatestReleases::default();
    loop {
        let batch = state
            .store
            .list_agents_page(
                position.as_ref().map(|(n, i)| (n.as_str(), i.as_str())),
                limit + 1,
            )
            .await?;
        let exhausted = batch.len() as i64 <= limit;
        for a in &batch {
            if page.len() as i64 == limit {
                more = true;
                break;
            }
            position = Some((a.name.clone(), a.id.clone()));
            if visible(&principal, a) {
                page.push(agent_info_with(a, &state, &mut latest));
            }
        }
        if more || exhausted {
            break;
        }
    }
    let next = more
        .then(|| position.map(|(n, i)| b64.encode(format!("{n}\n{i}"))))
        .flatten();
    Ok(Json(AgentList { agents: page, next }))
}

/// Whether a member key's `--agents` glob lets it see this agent (admins see all).
pub fn visible(principal: &Principal, agent: &AgentRecord) -> bool {
    match principal {
        Principal::Member(key) => key
            .agents_glob
            .as_deref()
            .is_none_or(|glob| hostname_matches(glob, &agent.name)),
        _ => true,
    }
}

/// An agent by UUID, or by name: the live agent holding it, else the most recently
/// revoked one (SPEC §6), so `revoke` then `remove` by name works.
pub async fn find_agent(state: &AppState, id_or_name: &str) -> ApiResult<AgentRecord> {
    let by_id = if uuid::Uuid::parse_str(id_or_name).is_ok() {
        state.store.get_agent(id_or_name).await?
    } else {
        None
    };
    let found = match by_id {
        Some(a) => Some(a),
        None => state.store.find_agent_by_name(id_or_name).await?,
    };
    found.ok_or_else(|| ApiFailure::not_found(format!("no agent {id_or_name:?}")))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", summary = "One agent", params(("id" = String, Path, description = "the agent's id (UUID) or name")), responses((status = 200, description = "the agent", body = muster_proto::AgentInfo), (status = 404, description = "no such agent", body = muster_proto::ApiError)), security(("api_key" = ["member"]), ("session" = ["member"])))]
pub async fn show_agent(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    let agent = find_agent(&state, &id).await?;
    // Outside a member's scope looks the same as absent: no existence leaks.
    if agent.state == AgentState::Removed || !visible(&principal, &agent) {
        return Err(ApiFailure::not_found(format!("no agent {id:?}")));
    }
    let mut info = agent_info(&agent, &state);
    if agent.cloned_at.is_some() {
        info.clone_events = state
            .store
            .clone_events(&agent.id)
            .await?
            .into_iter()
            .map(|e| muster_proto::CloneEventInfo {
                at: rfc3339(e.at),
                source: e.source,
                presented_generation: e.presented,
                expected_generation: e.expected,
                via: e.via,
            })
            .collect();
    }
    Ok(Json(info))
}

async fn end_agent(
    state: &AppState,
    caller: &Caller,
    id: &str,
    end: AgentEnd,
) -> ApiResult<Json<AgentInfo>> {
    let action = match end {
        AgentEnd::Revoke => "agent.revoked",
        AgentEnd::Remove => "agent.removed",
    };
    end_agent_as(state, caller, id, end, action).await
}

/// End `id`'s credentials (revoke or remove) as `action`, and close its session.
pub async fn end_agent_as(
    state: &AppState,
    caller: &Caller,
    id: &str,
    end: AgentEnd,
    action: &'static str,
) -> ApiResult<Json<AgentInfo>> {
    let agent = find_agent(state, id).await?;
    let now = now_ms();
    let audit = caller
        .audit(action, format!("agent:{}", agent.id))
        .at(now)
        .details(serde_json::json!({"name": agent.name}));
    let ended = state
        .store
        .end_agent(&agent.id, end, now, &audit)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiFailure::conflict(
                codes::CONFLICT,
                format!("agent {id:?} is already {}", agent.state.as_str()),
            ),
            other => other.into(),
        })?;
    tracing::info!(agent_id = %ended.id, action, "agent credentials ended");
    let change = match end {
        AgentEnd::Revoke => Change::Status,
        AgentEnd::Remove => Change::Removed,
    };
    state.events.publish(AgentNote::new(
        &ended,
        state.sessions.status_of(&ended),
        change,
    ));
    state.sessions.kick(
        &ended.id,
        match end {
            AgentEnd::Revoke => "the agent was revoked by an admin",
            AgentEnd::Remove => "the agent was removed by an admin",
        },
    );
    Ok(Json(agent_info(&ended, state)))
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/revoke", tag = "agents", summary = "Revoke an agent's credentials", params(("id" = String, Path, description = "the agent's id (UUID) or name")), responses((status = 200, description = "the agent, revoked", body = muster_proto::AgentInfo), (status = 404, description = "no such agent", body = muster_proto::ApiError), (status = 409, description = "the agent is already revoked or removed", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn revoke_agent(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    end_agent(&state, &caller, &id, AgentEnd::Revoke).await
}

#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "agents", summary = "Remove an agent from the fleet (revoking it)", params(("id" = String, Path, description = "the agent's id (UUID) or name")), responses((status = 200, description = "the agent, removed", body = muster_proto::AgentInfo), (status = 404, description = "no such agent", body = muster_proto::ApiError), (status = 409, description = "the agent is already revoked or removed", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn remove_agent(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    end_agent(&state, &caller, &id, AgentEnd::Remove).await
}

/// `POST /api/v1/agents/{id}/labels`: set and remove labels of a live agent in one
/// audited change (SPEC §6 `muster agents label`); answers with the agent after it.
#[utoipa::path(post, path = "/api/v1/agents/{id}/labels", tag = "agents", summary = "Set and remove an agent's labels", params(("id" = String, Path, description = "the agent's id (UUID) or name")), request_body = muster_proto::ChangeLabelsRequest, responses((status = 200, description = "the agent after the change", body = muster_proto::AgentInfo), (status = 400, description = "invalid labels, or nothing to change", body = muster_proto::ApiError), (status = 404, description = "no such agent", body = muster_proto::ApiError), (status = 409, description = "the agent is revoked or removed", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn change_labels(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(change): ApiJson<ChangeLabelsRequest>,
) -> ApiResult<Json<AgentInfo>> {
    if change.set.is_empty() && change.remove.is_empty() {
        return Err(ApiFailure::bad_request(
            "nothing to change: give labels to set or keys to remove",
        ));
    }
    if change.set.len() > MAX_LABELS || change.remove.len() > MAX_LABELS {
        return Err(ApiFailure::bad_request(format!(
            "an agent holds at most {MAX_LABELS} labels"
        )));
    }
    for (k, v) in &change.set {
        check_label(k, v)?;
    }
    for k in &change.remove {
        check_label(k, "")?;
        if change.set.contains_key(k) {
            return Err(ApiFailure::bad_request(format!(
                "label {k:?} is both set and removed"
            )));
        }
    }
    let agent = find_agent(&state, &id).await?;
    let not_live = || {
        ApiFailure::conflict(
            codes::CONFLICT,
            format!(
                "agent {id:?} is {}: its labels are history",
                agent.state.as_str()
            ),
        )
    };
    if agent.state != AgentState::Active {
        return Err(not_live());
    }
    let now = now_ms();
    let audit = caller
        .audit("agent.labels_changed", format!("agent:{}", agent.id))
        .at(now)
        .details(serde_json::json!({
            "name": agent.name, "set": change.set, "remove": change.remove,
        }));
    let edit = LabelEdit {
        set: change.set,
        remove: change.remove,
        max_labels: MAX_LABELS,
    };
    let changed = state
        .store
        .change_labels(&agent.id, &edit, now, &audit)
        .await
        .map_err(|e| match e {
            // The edit alone was fine; with what the agent holds it is too many.
            StoreError::Conflict(m) => ApiFailure::bad_request(m),
            // Revoked or removed meanwhile.
            StoreError::NotFound => not_live(),
            other => other.into(),
        })?;
    tracing::info!(agent_id = %changed.id, "agent labels changed");
    state.events.publish(AgentNote::new(
        &changed,
        state.sessions.status_of(&changed),
        Change::Details,
    ));
    Ok(Json(agent_info(&changed, &state)))
}

/// `GET /api/v1/agents/summary`: the fleet counted by status. A member key scoped
/// to some agents counts only those (walking them; unscoped callers get one
/// grouped query).
#[utoipa::path(get, path = "/api/v1/agents/summary", tag = "agents", operation_id = "agents_summary", summary = "The fleet counted by status", responses((status = 200, description = "the counts", body = muster_proto::FleetSummary)), security(("api_key" = ["member"]), ("session" = ["member"])))]
pub async fn summary(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<FleetSummary>> {
    let scoped = matches!(&principal, Principal::Member(k) if k.agents_glob.is_some());
    if !scoped {
        let mut summary = crate::live::fleet_counts(&state).await?;
        if !principal.is_admin() {
            // The approval queue is the admins' (its routes are admin-only).
            summary.counts.pending = 0;
        }
        return Ok(Json(summary));
    }
    let agents = state.store.list_agents(false).await?;
    let mut summary = crate::live::count_statuses(
        agents
            .iter()
            .filter(|a| visible(&principal, a))
            .map(|a| state.sessions.status_of(a)),
    );
    // Waiting requests are not anyone's agents yet: a scoped key sees none.
    summary.counts.pending = 0;
    Ok(Json(summary))
}

/// Sessions listed by `GET /api/v1/agents/{id}/sessions` (the most kept per agent).
const SESSIONS_SHOWN: i64 = crate::sessions::HISTORY_PER_AGENT;

/// `GET /api/v1/agents/{id}/sessions`: the agent's recorded sessions, newest first.
#[utoipa::path(get, path = "/api/v1/agents/{id}/sessions", tag = "agents", summary = "An agent's recent sessions", params(("id" = String, Path, description = "the agent's id (UUID) or name")), responses((status = 200, description = "newest first", body = muster_proto::SessionHistory), (status = 404, description = "no such agent", body = muster_proto::ApiError)), security(("api_key" = ["member"]), ("session" = ["member"])))]
pub async fn agent_sessions(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionHistory>> {
    let agent = find_agent(&state, &id).await?;
    if agent.state == AgentState::Removed || !visible(&principal, &agent) {
        return Err(ApiFailure::not_found(format!("no agent {id:?}")));
    }
    Ok(Json(session_history(&state, &agent.id).await?))
}

/// An agent's recorded sessions as the API and the dashboard show them.
pub async fn session_history(state: &AppState, agent_id: &str) -> ApiResult<SessionHistory> {
    let sessions = state
        .store
        .agent_sessions(agent_id, SESSIONS_SHOWN)
        .await?
        .into_iter()
        .map(|s| SessionInfo {
            connected_at: rfc3339(s.connected_at),
            disconnected_at: s.disconnected_at.map(rfc3339),
            address: s.address,
            reason: s.reason,
        })
        .collect();
    Ok(SessionHistory { sessions })
}
