//! Probe routes (SPEC §15): what an agent offers, running a probe on one agent or
//! across many, and an admin's decision on a pack that needs approval.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use muster_proto::{
    AgentPacks, PEER_PROBE_BATCH, PeerProbeRequest, ProbeRun, ProbeRunList, ProbeTarget,
    RunProbeRequest, codes,
};
use muster_store::{AgentRecord, AgentState, PackDecisionRecord};

use crate::audit::AuditExt;
use crate::clock::now_ms;
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, Caller};
use crate::handlers::agents::find_agent;
use crate::principal::Principal;
use crate::probes::{self, DEFAULT_TIMEOUT, MAX_TIMEOUT, may_run};
use crate::rules::hostname_matches;
use crate::state::AppState;

fn timeout_of(req: &RunProbeRequest) -> Duration {
    req.timeout_s
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT)
        .clamp(Duration::from_secs(1), MAX_TIMEOUT)
}

/// A member key sees only the agents its glob matches: others are "not found".
fn visible(principal: &Principal, agent: &AgentRecord) -> bool {
    match principal {
        Principal::Member(k) => k
            .agents_glob
            .as_deref()
            .is_none_or(|g| hostname_matches(g, &agent.name)),
        _ => true,
    }
}

async fn scoped_agent(state: &AppState, caller: &Caller, id: &str) -> ApiResult<AgentRecord> {
    let agent = find_agent(state, id).await?;
    if !visible(&caller.principal, &agent) {
        return Err(ApiFailure::not_found(format!("no agent {id:?}")));
    }
    Ok(agent)
}

/// `GET /api/v1/agents/{id}/probes`.
#[utoipa::path(get, path = "/api/v1/agents/{id}/probes", tag = "probes", operation_id = "list_probes", summary = "The packs and probes an agent offers", params(("id" = String, Path, description = "the agent's id (UUID) or name")), responses((status = 200, description = "the agent's packs", body = muster_proto::AgentPacks), (status = 404, description = "no such agent", body = muster_proto::ApiError)), security(("api_key" = ["member"]), ("session" = ["member"])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentPacks>> {
    let agent = scoped_agent(&state, &caller, &id).await?;
    Ok(Json(AgentPacks {
        agent_id: agent.id.clone(),
        agent: agent.name.clone(),
        packs: probes::packs_of(&state, &agent).await?,
    }))
}

/// A caller refused a probe by its scopes: audited as `probe.denied` on `target`
/// (within the source's refusal budget), and 403 naming the probe and `what` it
/// was asked of. Integrations share it: a scoped key treats them as targets too.
pub(super) async fn refuse(
    state: &AppState,
    caller: &Caller,
    target: String,
    details: serde_json::Value,
    probe: &str,
    what: &str,
) -> ApiFailure {
    let entry = caller
        .audit("probe.denied", target)
        .outcome("denied")
        .details(details);
    state
        .refusals
        .record(
            &*state.store,
            &state.metrics,
            caller.source,
            || async move { entry },
        )
        .await;
    ApiFailure::forbidden(
        codes::FORBIDDEN,
        format!("this key may not run {probe} on {what}"),
    )
}

/// `POST /api/v1/agents/{id}/probes/{probe}`.
#[utoipa::path(post, path = "/api/v1/agents/{id}/probes/{probe}", tag = "probes", summary = "Run a probe on one agent", params(("id" = String, Path, description = "the agent's id (UUID) or name"), ("probe" = String, Path, pattern = "^[A-Za-z0-9_-]*\\.[A-Za-z0-9._-]*$", max_length = 100, description = "pack.probe, e.g. system.uptime")), request_body = muster_proto::RunProbeRequest, responses((status = 200, description = "the run, whatever its outcome", body = muster_proto::ProbeRun), (status = 400, description = "invalid probe name or parameters", body = muster_proto::ApiError), (status = 403, description = "this key's scope does not allow that probe", body = muster_proto::ApiError), (status = 404, description = "no such agent", body = muster_proto::ApiError), (status = 409, description = "the agent cannot run probes now", body = muster_proto::ApiError)), security(("api_key" = ["member"]), ("session" = ["member"])))]
pub async fn run_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, probe)): Path<(String, String)>,
    ApiJson(req): ApiJson<RunProbeRequest>,
) -> ApiResult<Json<ProbeRun>> {
    probes::check_probe_name(&probe)?;
    probes::check_params(&req.params)?;
    if req.agents.is_some() || req.label.is_some() {
        return Err(ApiFailure::bad_request(
            "agents and label select agents for POST /api/v1/probes/{probe}, not here",
        ));
    }
    let agent = scoped_agent(&state, &caller, &id).await?;
    if !may_run(&caller.principal, &agent.name, &probe) {
        let details = serde_json::json!({ "probe": probe, "name": agent.name });
        let target = format!("agent:{}", agent.id);
        return Err(refuse(&state, &caller, target, details, &probe, &agent.name).await);
    }
    let mut runs = probes::fan_out(
        &state,
        &caller.actor(),
        caller.source,
        vec![agent],
        &probe,
        &req.params,
        timeout_of(&req),
    )
    .await?;
    runs.pop()
        .map(Json)
        .ok_or_else(|| ApiFailure::internal("a probe run vanished", &"empty fan-out"))
}

/// `POST /api/v1/probes/{probe}`: every live agent matching `agents` (a name glob)
/// and `label` (`key=value`) that the caller may run the probe on.
#[utoipa::path(post, path = "/api/v1/probes/{probe}", tag = "probes", summary = "Run a probe on the agents matching a glob or label", params(("probe" = String, Path, pattern = "^[A-Za-z0-9_-]*\\.[A-Za-z0-9._-]*$", max_length = 100, description = "pack.probe, e.g. system.uptime")), request_body = muster_proto::RunProbeRequest, responses((status = 200, description = "one run per matching agent", body = muster_proto::ProbeRunList), (status = 400, description = "invalid probe name, parameters or selection", body = muster_proto::ApiError), (status = 403, description = "this key's scope does not allow that probe", body = muster_proto::ApiError)), security(("api_key" = ["member"]), ("session" = ["member"])))]
pub async fn run_many(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(probe): Path<String>,
    ApiJson(req): ApiJson<RunProbeRequest>,
) -> ApiResult<Json<ProbeRunList>> {
    probes::check_probe_name(&probe)?;
    probes::check_params(&req.params)?;
    if req.agents.is_none() && req.label.is_none() {
        return Err(ApiFailure::bad_request(
            "say which agents: agents (a name glob, e.g. \"web-*\" or \"*\") and/or label (key=value)",
        ));
    }
    if let Some(glob) = &req.agents {
        crate::rules::parse_pattern(glob).map_err(ApiFailure::bad_request)?;
    }
    let label = match req.label.as_deref() {
        Some(l) => Some(
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| ApiFailure::bad_request("label must be key=value"))?,
        ),
        None => None,
    };
    let agents: Vec<AgentRecord> = state
        .store
        .list_agents(false)
        .await?
        .into_iter()
        .filter(|a| a.state == AgentState::Active)
        .filter(|a| {
            req.agents
                .as_deref()
                .is_none_or(|g| hostname_matches(g, &a.name))
        })
        .filter(|a| {
            label
                .as_ref()
                .is_none_or(|(k, v)| a.facts.labels.get(k) == Some(v))
        })
        .filter(|a| visible(&caller.principal, a) && may_run(&caller.principal, &a.name, &probe))
        .collect();
    let runs = probes::fan_out(
        &state,
        &caller.actor(),
        caller.source,
        agents,
        &probe,
        &req.params,
        timeout_of(&req),
    )
    .await?;
    Ok(Json(ProbeRunList { runs }))
}

#[utoipa::path(post, path = "/api/v1/hub/probes", tag = "probes", summary = "Another hub asks this one to run a probe on agents whose sessions it holds", request_body = muster_proto::PeerProbeRequest, responses((status = 200, description = "one run per agent", body = muster_proto::ProbeRunList), (status = 400, description = "invalid probe name, parameters or batch", body = muster_proto::ApiError)), security(("hub_token" = ["hub"])))]
/// `POST /api/v1/hub/probes` (another hub of the fleet): run a probe on agents
/// whose sessions this hub holds. The asking hub checked the caller's scopes and
/// audits the runs; agents whose session is not here answer offline.
pub async fn run_for_hub(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<PeerProbeRequest>,
) -> ApiResult<Json<ProbeRunList>> {
    probes::check_probe_name(&req.probe)?;
    probes::check_params(&req.params)?;
    if req.agents.len() > PEER_PROBE_BATCH {
        return Err(ApiFailure::bad_request(format!(
            "at most {PEER_PROBE_BATCH} agents per request"
        )));
    }
    if req.agents.iter().any(|id| id.len() > 40) {
        return Err(ApiFailure::bad_request("an agent id is too long"));
    }
    let timeout = Duration::from_millis(req.timeout_ms).clamp(Duration::from_secs(1), MAX_TIMEOUT);
    // Runs are labelled with the id; the asking hub puts the names back.
    let agents = req
        .agents
        .into_iter()
        .map(|id| ProbeTarget {
            name: id.clone(),
            id,
        })
        .collect();
    let runs = probes::run_here(&state, agents, &req.probe, &req.params, timeout).await;
    Ok(Json(ProbeRunList { runs }))
}

/// `POST /api/v1/agents/{id}/packs/{pack}/approve` and `…/deny` (admins): the
/// decision covers the needs the pack declares now.
#[utoipa::path(post, path = "/api/v1/agents/{id}/packs/{pack}/{decision}", tag = "probes", summary = "Approve or deny a pack an agent offers", params(("id" = String, Path, description = "the agent's id (UUID) or name"), ("pack" = String, Path, description = "the pack's name"), ("decision" = String, Path, pattern = "^(approve|deny)$", description = "approve or deny")), responses((status = 200, description = "the agent's packs after the decision", body = muster_proto::AgentPacks), (status = 404, description = "no such agent, pack or decision", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn decide(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, pack, decision)): Path<(String, String, String)>,
) -> ApiResult<Json<AgentPacks>> {
    let decision = match decision.as_str() {
        "approve" => "approved",
        "deny" => "denied",
        other => return Err(ApiFailure::not_found(format!("no pack action {other:?}"))),
    };
    let agent = find_agent(&state, &id).await?;
    let catalog = state.store.agent_catalog(&agent.id).await?;
    let Some(found) = catalog.iter().find(|p| p.name == pack) else {
        let names: Vec<&str> = catalog.iter().map(|p| p.name.as_str()).collect();
        return Err(ApiFailure::not_found(format!(
            "{} announced no pack {pack:?} (it has: {})",
            agent.name,
            names.join(", ")
        )));
    };
    let record = PackDecisionRecord {
        agent_id: agent.id.clone(),
        pack: pack.clone(),
        decision: decision.to_owned(),
        needs: if decision == "approved" {
            found.needs.clone()
        } else {
            Vec::new()
        },
        decided_by: caller.actor(),
        decided_at: now_ms(),
    };
    let entry = caller
        .audit(&format!("pack.{decision}"), format!("agent:{}", agent.id))
        .details(serde_json::json!({ "pack": pack, "needs": found.needs, "name": agent.name }));
    state.store.decide_pack(&record, &entry).await?;
    Ok(Json(AgentPacks {
        agent_id: agent.id.clone(),
        agent: agent.name.clone(),
        packs: probes::packs_of(&state, &agent).await?,
    }))
}
