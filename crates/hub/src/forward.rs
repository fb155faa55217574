//! Probes on agents whose session another hub holds (SPEC §12 "one fleet", §15):
//! this hub asks that hub, at the URL its lease gives, to run them there
//! (`POST /api/v1/hub/probes`), and reads back each agent's run.
//!
//! Trust: the request carries the token only hubs holding the shared secret can
//! derive (`Keys::peer_token`), and goes only to a server whose certificate the
//! fleet's CA signed (`outbound::peer_client`). The asking hub has checked the
//! caller's scopes and writes the audit entries; the holder only runs.

use std::collections::BTreeMap;
use std::time::Duration;

use muster_proto::{
    PROBE_OUTPUT_MAX, PeerProbeRequest, ProbeOutcome, ProbeRun, ProbeRunList, ProbeTarget,
};

use crate::outbound;
use crate::state::AppState;

/// The route the holding hub serves.
pub const PATH: &str = "/api/v1/hub/probes";
/// Beyond the probe's own wait: the hop there and back, and the holder's queue.
const SLACK: Duration = Duration::from_secs(5);

/// Ask the hub at `address` to run `probe` on `agents` (its sessions, at most
/// `PEER_PROBE_BATCH`). Never fails: a hub that does not answer makes each run an
/// error saying so.
pub async fn ask(
    state: &AppState,
    address: String,
    agents: Vec<ProbeTarget>,
    probe: &str,
    params: &BTreeMap<String, String>,
    timeout: Duration,
) -> Vec<ProbeRun> {
    let request = PeerProbeRequest {
        probe: probe.to_owned(),
        params: params.clone(),
        timeout_ms: timeout.as_millis() as u64,
        agents: agents.iter().map(|a| a.id.clone()).collect(),
    };
    match call(state, &address, &request, timeout + SLACK).await {
        Ok(list) => matched(agents, probe, list.runs, &address),
        Err(why) => {
            tracing::warn!(hub = %address, error = %why, "a hub holding agents' sessions did not run a probe");
            let error = format!("the hub holding its session ({address}) did not answer: {why}");
            agents
                .iter()
                .map(|a| ProbeRun::unanswered(a, probe, ProbeOutcome::Error, error.clone()))
                .collect()
        }
    }
}

async fn call(
    state: &AppState,
    address: &str,
    request: &PeerProbeRequest,
    deadline: Duration,
) -> Result<ProbeRunList, String> {
    let url = format!("{}{PATH}", address.trim_end_matches('/'));
    let mut resp = state
        .peers
        .post(&url)
        .bearer_auth(state.keys.peer_token())
        .json(request)
        .timeout(deadline)
        .send()
        .await
        .map_err(|e| outbound::describe(&e))?;
    let status = resp.status();
    // Each run's result is capped by the agent; the answer is those and a little.
    let cap = request.agents.len() * (2 * PROBE_OUTPUT_MAX + 4096);
    let (body, cut) = outbound::read_bounded(&mut resp, cap)
        .await
        .map_err(|e| outbound::describe(&e))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<muster_proto::ApiError>(&body)
            .map(|e| e.error.message)
            .unwrap_or_default();
        return Err(format!("HTTP {}: {message}", status.as_u16()));
    }
    if cut {
        return Err("its answer was larger than the probes' output cap allows".to_owned());
    }
    serde_json::from_slice(&body).map_err(|e| format!("its answer did not parse: {e}"))
}

/// The runs of exactly the agents asked about: one per agent, in any order; an
/// agent the answer left out is an error, an agent not asked about is dropped.
fn matched(
    asked: Vec<ProbeTarget>,
    probe: &str,
    runs: Vec<ProbeRun>,
    address: &str,
) -> Vec<ProbeRun> {
    let mut by_id: std::collections::HashMap<String, ProbeRun> =
        runs.into_iter().map(|r| (r.agent_id.clone(), r)).collect();
    asked
        .iter()
        .map(|a| match by_id.remove(&a.id) {
            Some(mut run) => {
                run.agent.clone_from(&a.name);
                run.probe = probe.to_owned();
                run
            }
            None => ProbeRun::unanswered(
                a,
                probe,
                ProbeOutcome::Error,
                format!("the hub holding its session ({address}) left it out of its answer"),
            ),
        })
        .collect()
}
