//! Locking an identity that two machines were caught sharing (SPEC §9): evidence,
//! an audit entry, the live session closed. Renewal and the session task both
//! detect clones; this is what they do about it.

use std::net::IpAddr;

use muster_proto::codes;
use muster_store::{AgentRecord, CloneEvent};

use crate::audit::{self, AuditExt};
use crate::clock::now_ms;
use crate::error::ApiFailure;
use crate::state::AppState;

/// What a cloned agent is told, wherever it shows up.
pub fn cloned_refusal() -> ApiFailure {
    ApiFailure::forbidden(
        codes::AGENT_CLONED,
        "two machines were caught using this identity; an admin must revoke it and re-enroll the machines",
    )
}

/// Lock `agent` as cloned: evidence, audit, and the live session closed.
pub async fn mark_cloned(
    state: &AppState,
    agent: &AgentRecord,
    source: IpAddr,
    presented: i64,
    via: &str,
) -> ApiFailure {
    let now = now_ms();
    let event = CloneEvent {
        agent_id: agent.id.clone(),
        at: now,
        source: source.to_string(),
        presented,
        expected: agent.generation,
        via: via.to_owned(),
    };
    let audit = audit::entry(
        format!("agent:{}", agent.id),
        "agent.cloned",
        format!("agent:{}", agent.id),
        source,
    )
    .at(now)
    .outcome("denied")
    .details(serde_json::json!({
        "presented_generation": presented, "expected_generation": agent.generation, "via": via,
    }));
    match state.store.mark_cloned(&event, &audit).await {
        Ok(locked) => {
            state.events.publish(crate::events::AgentNote::new(
                &locked,
                muster_proto::AgentStatus::Cloned,
                crate::events::Change::Status,
            ));
            tracing::warn!(
                agent_id = %agent.id, %source, presented, expected = agent.generation, via,
                "CLONED IDENTITY: a stale credential generation was presented; the agent is locked"
            );
            state.sessions.kick(
                &agent.id,
                "this identity is in use on two machines; an admin must resolve it",
            );
            cloned_refusal()
        }
        Err(e) => e.into(),
    }
}
