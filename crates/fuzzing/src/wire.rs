//! JSON that crosses the network: request bodies, the enrollment body with the
//! hub's checks of it, and the session frames in both directions.

use muster_hub::fuzzing as hub;
use muster_proto::{
    AgentMessage, ApiError, CaResponse, ChangeLabelsRequest, CreateIntegrationRequest,
    CreateKeyRequest, CreateSsoGroupRequest, CreateTokenRequest, CreateTrustRule,
    CreateUserRequest, DecideRequest, EnrollRequest, EnrollResponse, HubMessage, LatestRelease,
    LoginRequest, MAX_NAME_LEN, PendingResponse, RenewRequest, RenewResponse,
    RunIntegrationProbeRequest, RunProbeRequest, SetSsoRequest, UpdateReport, UpdateRequest,
};

use crate::round_trip;

/// `POST /api/v1/enroll`'s body and the hub's validation of it: the verdict is a
/// 400 or nothing, the same after a JSON round trip, and what passes is bounded,
/// printable text.
pub fn enroll_request(data: &[u8]) {
    let Some(req) = round_trip::<EnrollRequest>(data) else {
        return;
    };
    let verdict = hub::validate_enroll(&req);
    let again: EnrollRequest =
        serde_json::from_str(&serde_json::to_string(&req).expect("serializes")).expect("parses");
    assert_eq!(
        hub::validate_enroll(&again),
        verdict,
        "the verdict changed over a JSON round trip"
    );
    match verdict {
        Ok(()) => {
            assert!(!req.hostname.is_empty() && req.hostname.len() <= MAX_NAME_LEN);
            assert!(!req.hostname.chars().any(char::is_control));
            assert!(req.csr_pem.len() <= 16 * 1024);
            assert!(req.labels.keys().all(|k| !k.is_empty() && k.len() <= 63));
        }
        Err(refusal) => assert_eq!(refusal.status, 400, "{refusal:?}"),
    }
}

/// Every JSON body the hub reads (and the answers an agent or the CLI reads from a
/// hub), the type picked by the first byte; each must round-trip, and the scopes
/// and labels in them go through the hub's checks.
pub fn api_bodies(data: &[u8]) {
    let Some((&kind, json)) = data.split_first() else {
        return;
    };
    match kind % 22 {
        0 => {
            if let Some(r) = round_trip::<CreateTokenRequest>(json) {
                scope(r.pattern.as_deref(), &r.cidrs, &r.labels);
            }
        }
        1 => {
            if let Some(r) = round_trip::<CreateTrustRule>(json) {
                scope(Some(&r.pattern), &r.cidrs, &r.labels);
            }
        }
        2 => {
            if let Some(r) = round_trip::<ChangeLabelsRequest>(json) {
                let labels: std::collections::BTreeMap<String, String> = r.set;
                scope(None, &[], &labels);
            }
        }
        3 => {
            if let Some(r) = round_trip::<CreateUserRequest>(json) {
                let _ = hub::check_text("name", &r.name, false);
            }
        }
        4 => drop(round_trip::<DecideRequest>(json)),
        5 => drop(round_trip::<CreateKeyRequest>(json)),
        6 => drop(round_trip::<LoginRequest>(json)),
        7 => drop(round_trip::<RenewRequest>(json)),
        8 => drop(round_trip::<UpdateRequest>(json)),
        9 => drop(round_trip::<UpdateReport>(json)),
        10 => drop(round_trip::<RunProbeRequest>(json)),
        11 => drop(round_trip::<CreateIntegrationRequest>(json)),
        12 => drop(round_trip::<RunIntegrationProbeRequest>(json)),
        13 => drop(round_trip::<SetSsoRequest>(json)),
        14 => drop(round_trip::<CreateSsoGroupRequest>(json)),
        15 => drop(round_trip::<EnrollRequest>(json)),
        16 => drop(round_trip::<EnrollResponse>(json)),
        17 => drop(round_trip::<PendingResponse>(json)),
        18 => drop(round_trip::<RenewResponse>(json)),
        19 => drop(round_trip::<ApiError>(json)),
        20 => drop(round_trip::<LatestRelease>(json)),
        _ => drop(round_trip::<CaResponse>(json)),
    }
}

/// A token's or trust rule's scope: what passes comes back normalised, and the
/// normalised form passes again unchanged.
fn scope(
    pattern: Option<&str>,
    cidrs: &[String],
    labels: &std::collections::BTreeMap<String, String>,
) {
    if let Ok(normal) = hub::check_scope(pattern, cidrs, labels) {
        assert_eq!(normal.len(), cidrs.len());
        assert_eq!(
            hub::check_scope(pattern, &normal, labels).as_ref(),
            Ok(&normal),
            "normalised CIDRs are not stable"
        );
    }
}

/// A session frame from an agent, as the hub reads it: the heartbeat fast path must
/// answer exactly as the full parse does; a `hello`'s facts and catalog go through
/// the hub's checks; a heartbeat's problems are bounded.
pub fn agent_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fast = AgentMessage::from_json(text);
    let full = serde_json::from_str::<AgentMessage>(text);
    match (&fast, &full) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the heartbeat fast path disagrees"),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "the heartbeat fast path disagrees: fast {:?}, full {:?}",
            fast.as_ref().err().map(ToString::to_string),
            full.as_ref().err().map(ToString::to_string)
        ),
    }
    let Ok(msg) = fast else { return };
    let Some(msg) =
        round_trip::<AgentMessage>(serde_json::to_string(&msg).expect("serializes").as_bytes())
    else {
        panic!("a parsed frame does not parse back");
    };
    match msg {
        AgentMessage::Hello {
            agent_version,
            packs,
            facts,
            catalog,
            ..
        } => {
            if let Some(f) = facts
                && let Some(kept) = hub::hello_facts(agent_version, packs, f)
            {
                assert!(kept.interfaces.len() <= 256);
                assert!(hub::check_text("hostname", &kept.hostname, false).is_ok());
            }
            let _ = hub::catalog_acceptable(&catalog);
        }
        AgentMessage::Heartbeat { problems, .. } => {
            let kept = hub::heartbeat_problems(problems);
            assert!(kept.len() <= 16);
            assert!(kept.iter().all(|p| p.chars().count() <= 200));
        }
        AgentMessage::UpdateStatus { .. } | AgentMessage::ProbeResult { .. } => {}
    }
}

/// A session frame from a hub, as the agent reads it: it round-trips; an `update`
/// becomes an order whose download path is a path on the agent's own hub; an `ack`'s
/// clock is compared with ours without overflow.
pub fn hub_message(data: &[u8]) {
    let Some(msg) = round_trip::<HubMessage>(data) else {
        return;
    };
    match &msg {
        HubMessage::Update { .. } => {
            let order = muster_agent::update::Order::from_message(&msg).expect("an update");
            assert!(order.path.is_empty() || order.path.starts_with('/'));
            assert!((1..=86_400).contains(&order.deadline.as_secs()));
            let _ = order.manifest.check();
        }
        HubMessage::Ack { hub_time_ms } | HubMessage::Welcome { hub_time_ms, .. } => {
            let _ = muster_agent::session::skew_problem(*hub_time_ms);
        }
        HubMessage::Revoked { .. }
        | HubMessage::Refused { .. }
        | HubMessage::Shutdown { .. }
        | HubMessage::Probe { .. } => {}
    }
}
