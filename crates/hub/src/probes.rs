//! Running probes (SPEC §15): who may run what where, the state of each agent's
//! packs, one run over an agent's live session, and a fan-out across many agents
//! with bounded concurrency. Every run is audited (caller, agent, probe,
//! parameters, outcome: never the output).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use muster_proto::{
    AgentPack, HubMessage, PEER_PROBE_BATCH, PackHealth, PackInfo, ProbeOutcome, ProbeRun,
    ProbeTarget,
};
use muster_store::{AgentRecord, AuditEntry, PackDecisionRecord};

use crate::audit::{self, AuditExt};
use crate::calls::Reply;
use crate::error::{ApiFailure, ApiResult};
use crate::principal::Principal;
use crate::rules::hostname_matches;
use crate::state::AppState;

/// Default and longest wait for one agent's answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// Agents asked at once in a fan-out.
const FAN_OUT: usize = 512;

/// Whether `principal` may run `probe` on `agent`: admins anything; a member key
/// within its agent glob and its probe list (each entry a probe name or a glob such
/// as `system.*`; none: no probe); a member user (no scopes) anything read-only.
pub fn may_run(principal: &Principal, agent_name: &str, probe: &str) -> bool {
    match principal {
        Principal::Admin(_) | Principal::User(_) => true,
        Principal::Member(key) => {
            key.agents_glob
                .as_deref()
                .is_none_or(|glob| hostname_matches(glob, agent_name))
                && key
                    .probes
                    .iter()
                    .any(|p| p == probe || hostname_matches(p, probe))
        }
        Principal::Agent(_) | Principal::Hub => false,
    }
}

/// Parameters as the agent will get them: a few, short, printable.
pub fn check_params(params: &BTreeMap<String, String>) -> ApiResult<()> {
    if params.len() > 16 {
        return Err(ApiFailure::bad_request("at most 16 parameters"));
    }
    for (k, v) in params {
        let key_ok = !k.is_empty()
            && k.len() <= 64
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !key_ok {
            return Err(ApiFailure::bad_request(format!(
                "parameter name {k:?}: letters, digits and _ only, 1 to 64"
            )));
        }
        if v.len() > 1024 || v.chars().any(char::is_control) {
            return Err(ApiFailure::bad_request(format!(
                "parameter {k}: at most 1024 printable characters"
            )));
        }
    }
    Ok(())
}

/// A probe name as the wire carries it: `pack.probe`.
pub fn check_probe_name(probe: &str) -> ApiResult<()> {
    let ok = probe.len() <= 100
        && probe.contains('.')
        && probe
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiFailure::bad_request(format!(
            "{probe:?} is not a probe name (pack.probe, e.g. system.disks)"
        )))
    }
}

/// A pack's state on the hub: `failed` (its self-check), `denied`, `pending` (it
/// needs more than the hub grants and an admin approved), or `ready`.
pub fn pack_state(
    pack: &PackInfo,
    decisions: &[PackDecisionRecord],
    grants: &[String],
) -> &'static str {
    if pack.health == PackHealth::Failed {
        return "failed";
    }
    let decision = decisions.iter().find(|d| d.pack == pack.name);
    if decision.is_some_and(|d| d.decision == "denied") {
        return "denied";
    }
    let approved: &[String] = decision.map_or(&[], |d| &d.needs);
    if pack
        .needs
        .iter()
        .all(|n| grants.contains(n) || approved.contains(n))
    {
        "ready"
    } else {
        "pending"
    }
}

/// An agent's packs with their state.
pub async fn packs_of(state: &AppState, agent: &AgentRecord) -> ApiResult<Vec<AgentPack>> {
    let catalog = state.store.agent_catalog(&agent.id).await?;
    let decisions = state.store.pack_decisions(&agent.id).await?;
    Ok(with_state(state, catalog, &decisions))
}

fn with_state(
    state: &AppState,
    catalog: Vec<PackInfo>,
    decisions: &[PackDecisionRecord],
) -> Vec<AgentPack> {
    catalog
        .into_iter()
        .map(|pack| AgentPack {
            state: pack_state(&pack, decisions, &state.pack_grants).to_owned(),
            pack,
        })
        .collect()
}

/// Run `probe` on `agents` wherever their sessions are: here, at the other hub
/// holding them (one request per hub and [`PEER_PROBE_BATCH`] agents), or nowhere
/// (offline). Never fails: what went wrong is each run's outcome.
pub async fn run_anywhere(
    state: &AppState,
    agents: Vec<ProbeTarget>,
    probe: &str,
    params: &BTreeMap<String, String>,
    timeout: Duration,
) -> Vec<ProbeRun> {
    let mut runs = Vec::new();
    let mut here = Vec::new();
    let mut there: HashMap<String, Vec<ProbeTarget>> = HashMap::new();
    for agent in agents {
        if state.sessions.session_of(&agent.id).is_some() {
            here.push(agent);
        } else if let Some((_, address)) = state.sessions.remote_holder(&agent.id) {
            there.entry(address).or_default().push(agent);
        } else {
            runs.push(ProbeRun::unanswered(
                &agent,
                probe,
                ProbeOutcome::Offline,
                "the agent has no live session",
            ));
        }
    }
    let asks = there.into_iter().flat_map(|(address, agents)| {
        agents
            .chunks(PEER_PROBE_BATCH)
            .map(|c| (address.clone(), c.to_vec()))
            .collect::<Vec<_>>()
    });
    let remote = futures_util::future::join_all(asks.map(|(address, agents)| {
        crate::forward::ask(state, address, agents, probe, params, timeout)
    }));
    let (local, remote) = tokio::join!(run_here(state, here, probe, params, timeout), remote);
    runs.extend(local);
    runs.extend(remote.into_iter().flatten());
    runs
}

/// Run `probe` on agents whose sessions this hub holds, at most [`FAN_OUT`] at
/// once; their packs are read in two queries for the lot. An agent whose session
/// is not here (it just moved) is offline.
pub async fn run_here(
    state: &AppState,
    agents: Vec<ProbeTarget>,
    probe: &str,
    params: &BTreeMap<String, String>,
    timeout: Duration,
) -> Vec<ProbeRun> {
    if agents.is_empty() {
        return Vec::new();
    }
    let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
    let (catalogs, decisions) = match state.store.agents_packs(&ids).await {
        Ok(found) => found,
        Err(e) => {
            let why = format!("reading the agents' packs: {e}");
            return agents
                .iter()
                .map(|a| ProbeRun::unanswered(a, probe, ProbeOutcome::Error, why.clone()))
                .collect();
        }
    };
    let mut decided: HashMap<String, Vec<PackDecisionRecord>> = HashMap::new();
    for d in decisions {
        decided.entry(d.agent_id.clone()).or_default().push(d);
    }
    let mut packs: HashMap<String, Vec<AgentPack>> = catalogs
        .into_iter()
        .map(|(id, catalog)| {
            let mine = decided.get(&id).map_or(&[][..], Vec::as_slice);
            let packs = with_state(state, catalog, mine);
            (id, packs)
        })
        .collect();
    // Owned values into boxed futures: a stream of futures borrowing each item
    // would not be `Send` for every lifetime, which axum's handlers need.
    futures_util::stream::iter(agents)
        .map(
            |a| -> std::pin::Pin<Box<dyn Future<Output = ProbeRun> + Send + '_>> {
                let packs = packs.remove(&a.id).unwrap_or_default();
                Box::pin(async move {
                    let started = Instant::now();
                    let mut run = run_on(state, &a, &packs, probe, params, timeout).await;
                    run.duration_ms = started.elapsed().as_millis() as u64;
                    run
                })
            },
        )
        .buffer_unordered(FAN_OUT)
        .collect()
        .await
}

/// One run over the agent's session on this hub, `packs` being its packs.
async fn run_on(
    state: &AppState,
    agent: &ProbeTarget,
    packs: &[AgentPack],
    probe: &str,
    params: &BTreeMap<String, String>,
    timeout: Duration,
) -> ProbeRun {
    let fail = |outcome, error: String| ProbeRun::unanswered(agent, probe, outcome, error);
    if state.sessions.session_of(&agent.id).is_none() {
        return fail(
            ProbeOutcome::Offline,
            "the agent has no live session on this hub".to_owned(),
        );
    }
    let Some(pack) = packs
        .iter()
        .find(|p| p.pack.probes.iter().any(|q| q.name == probe))
    else {
        let offered: Vec<&str> = packs
            .iter()
            .flat_map(|p| p.pack.probes.iter().map(|q| q.name.as_str()))
            .collect();
        return fail(
            ProbeOutcome::Error,
            format!(
                "the agent offers no probe {probe:?} (it offers: {})",
                offered.join(", ")
            ),
        );
    };
    match pack.state.as_str() {
        "ready" => {}
        "failed" => {
            return fail(
                ProbeOutcome::Error,
                format!(
                    "pack {} failed its self-check: {}",
                    pack.pack.name,
                    pack.pack.reason.as_deref().unwrap_or("no reason given")
                ),
            );
        }
        other => {
            return fail(
                ProbeOutcome::Pending,
                format!(
                    "pack {} is {other}: it needs {} (muster agents packs {} approve {})",
                    pack.pack.name,
                    pack.pack.needs.join(", "),
                    agent.name,
                    pack.pack.name
                ),
            );
        }
    }
    let Some(mut call) = state.calls.open(&agent.id) else {
        return fail(
            ProbeOutcome::Error,
            "busy: too many probes in flight to this agent".to_owned(),
        );
    };
    let order = HubMessage::Probe {
        id: call.id,
        probe: probe.to_owned(),
        params: params.clone(),
        timeout_ms: timeout.as_millis() as u64,
    };
    if !state.sessions.send(&agent.id, order) {
        return fail(
            ProbeOutcome::Offline,
            "the agent's session is gone or busy".to_owned(),
        );
    }
    // A little longer than the agent's own deadline, so its timeout answer wins.
    match tokio::time::timeout(timeout + Duration::from_secs(1), &mut call.answer).await {
        Ok(Ok(Reply {
            outcome,
            result,
            error,
            truncated,
        })) => ProbeRun {
            outcome,
            result,
            error: error.map(|e| e.chars().take(500).collect()),
            truncated,
            ..ProbeRun::unanswered(agent, probe, outcome, "")
        },
        Ok(Err(_)) => fail(ProbeOutcome::Offline, "the session ended".to_owned()),
        Err(_) => fail(
            ProbeOutcome::Timeout,
            format!("no answer within {} s", timeout.as_secs()),
        ),
    }
}

/// The audit entry of one run: who, where, what with which parameters, how it
/// ended (never the output).
pub fn audit_entry(
    actor: &str,
    source: std::net::IpAddr,
    run: &ProbeRun,
    params: &BTreeMap<String, String>,
) -> AuditEntry {
    let outcome = match run.outcome {
        ProbeOutcome::Ok => "ok",
        ProbeOutcome::Error => "error",
        ProbeOutcome::Timeout => "timeout",
        ProbeOutcome::Offline => "offline",
        ProbeOutcome::Pending => "pending",
    };
    audit::entry(
        actor,
        "probe.run",
        format!("agent:{}", run.agent_id),
        source,
    )
    .outcome(outcome)
    .details(serde_json::json!({
        "probe": run.probe,
        "params": params,
        "name": run.agent,
        "duration_ms": run.duration_ms,
        "error": run.error,
    }))
}

/// Run `probe` on each of `agents`, wherever its session is, and audit every run
/// in one write.
pub async fn fan_out(
    state: &AppState,
    actor: &str,
    source: std::net::IpAddr,
    agents: Vec<AgentRecord>,
    probe: &str,
    params: &BTreeMap<String, String>,
    timeout: Duration,
) -> ApiResult<Vec<ProbeRun>> {
    let targets = agents
        .into_iter()
        .map(|a| ProbeTarget {
            id: a.id,
            name: a.name,
        })
        .collect();
    let mut runs = run_anywhere(state, targets, probe, params, timeout).await;
    runs.sort_by(|a, b| a.agent.cmp(&b.agent).then(a.agent_id.cmp(&b.agent_id)));
    let entries: Vec<AuditEntry> = runs
        .iter()
        .map(|r| audit_entry(actor, source, r, params))
        .collect();
    state.store.record_audits(&entries).await?;
    Ok(runs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pack(needs: &[&str], health: PackHealth) -> PackInfo {
        PackInfo {
            name: "system".into(),
            version: "1".into(),
            needs: needs.iter().map(|n| n.to_string()).collect(),
            health,
            reason: None,
            probes: vec![],
        }
    }

    fn decided(decision: &str, needs: &[&str]) -> PackDecisionRecord {
        PackDecisionRecord {
            agent_id: "a".into(),
            pack: "system".into(),
            decision: decision.into(),
            needs: needs.iter().map(|n| n.to_string()).collect(),
            decided_by: "key:x".into(),
            decided_at: 0,
        }
    }

    #[test]
    fn a_pack_is_ready_only_with_every_need_granted_or_approved() {
        let grants = vec!["journal".to_owned()];
        assert_eq!(
            pack_state(&pack(&["journal"], PackHealth::Ready), &[], &grants),
            "ready"
        );
        assert_eq!(
            pack_state(&pack(&["journal"], PackHealth::Ready), &[], &[]),
            "pending"
        );
        let approved = [decided("approved", &["journal"])];
        assert_eq!(
            pack_state(&pack(&["journal"], PackHealth::Ready), &approved, &[]),
            "ready"
        );
        assert_eq!(
            pack_state(
                &pack(&["journal", "root"], PackHealth::Ready),
                &approved,
                &[]
            ),
            "pending",
            "needs grown since the approval"
        );
        let denied = [decided("denied", &[])];
        assert_eq!(
            pack_state(&pack(&[], PackHealth::Ready), &denied, &grants),
            "denied"
        );
        assert_eq!(
            pack_state(&pack(&[], PackHealth::Failed), &[], &grants),
            "failed"
        );
    }

    #[test]
    fn parameters_and_names_are_bounded() {
        assert!(check_probe_name("system.disks").is_ok());
        for bad in ["disks", "system disks", "a.b;rm", &"a.".repeat(60)] {
            assert!(check_probe_name(bad).is_err(), "{bad}");
        }
        let mut p = BTreeMap::new();
        p.insert("unit".to_owned(), "nginx.service".to_owned());
        assert!(check_params(&p).is_ok());
        p.insert("bad key".to_owned(), "x".to_owned());
        assert!(check_params(&p).is_err());
        let mut p = BTreeMap::new();
        p.insert("unit".to_owned(), "a\nb".to_owned());
        assert!(check_params(&p).is_err());
    }
}
