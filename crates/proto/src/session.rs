//! The live session's frames (SPEC §9): what an agent sends (`AgentMessage`) and
//! what the hub answers (`HubMessage`), JSON text frames tagged by `type`.

use serde::{Deserialize, Serialize};

use crate::{HostFacts, PackInfo, ProbeOutcome, UpdatePhase};

/// The hub answers the first heartbeat of a session and every `ACK_EVERY`-th after
/// it with an `ack` carrying its clock: enough for the agent to measure skew and
/// to know the hub is alive, without a write per heartbeat on a hub holding tens of
/// thousands of sessions. An agent that hears nothing for `2 * ACK_EVERY + 1`
/// intervals treats the session as lost.
pub const ACK_EVERY: u64 = 6;

/// How an agent feels, as it reports in every heartbeat.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgentHealth {
    #[default]
    Ok,
    /// The agent detected a problem it cannot fix itself (see `problems`).
    Degraded,
}

/// Session frames from agent to hub (SPEC §9): JSON text frames tagged by `type`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// First frame of every session. (Agents before 0.1 also sent a
    /// `facts_digest`; the facts arrive in the same frame and the hub compares
    /// them itself, so a digest added nothing and is ignored.)
    Hello {
        protocol_version: u32,
        agent_version: String,
        #[serde(default)]
        packs: Vec<String>,
        /// The facts themselves, refreshed at every session start.
        #[serde(default)]
        facts: Option<HostFacts>,
        /// The credential generation this agent holds (clone detection).
        #[serde(default)]
        generation: i64,
        /// The packs with their probes and self-check (SPEC §15); `packs` keeps
        /// their names for hubs before probes.
        #[serde(default)]
        catalog: Vec<PackInfo>,
    },
    Heartbeat {
        status: AgentHealth,
        #[serde(default)]
        problems: Vec<String>,
    },
    /// A step of a self-update (answering `update`, or queued since and sent after
    /// the next `hello`).
    UpdateStatus {
        phase: UpdatePhase,
        version: String,
        #[serde(default)]
        message: String,
    },
    /// The answer to a `probe` (matched by `id`; a late one is dropped).
    ProbeResult {
        id: u64,
        outcome: ProbeOutcome,
        #[serde(default)]
        result: Option<serde_json::Value>,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        truncated: bool,
    },
}

impl AgentMessage {
    /// Parse one frame. A heartbeat (nearly every frame a hub reads) goes straight
    /// into its fields: serde reads an internally tagged enum through a buffered
    /// copy of the whole frame, allocations that cost more than the heartbeat.
    /// Every other frame, and anything the fast path does not take, is parsed in
    /// full, so the answer is the same either way.
    pub fn from_json(text: &str) -> Result<AgentMessage, serde_json::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum BeatTag {
            Heartbeat,
        }
        #[derive(Deserialize)]
        struct Beat {
            #[serde(rename = "type")]
            _kind: BeatTag,
            status: AgentHealth,
            #[serde(default)]
            problems: Vec<String>,
        }
        match serde_json::from_str::<Beat>(text) {
            Ok(b) => Ok(AgentMessage::Heartbeat {
                status: b.status,
                problems: b.problems,
            }),
            Err(_) => serde_json::from_str(text),
        }
    }
}

/// Session frames from hub to agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HubMessage {
    /// The session is accepted; heartbeat at this interval.
    Welcome {
        agent_id: String,
        heartbeat_interval_s: u64,
        /// The hub's clock (unix ms), so the agent can detect skew.
        hub_time_ms: i64,
    },
    /// Answer to a heartbeat (see [`ACK_EVERY`]), carrying the hub's clock again.
    Ack { hub_time_ms: i64 },
    /// The agent's credentials were revoked or replaced: stop, do not retry.
    Revoked { reason: String },
    /// The session is refused (old protocol, cloned identity…): `code` says why.
    Refused { code: String, message: String },
    /// The hub is shutting down: reconnect after a random delay up to this.
    Shutdown { reconnect_within_ms: u64 },
    /// Install this signed release (SPEC §10 "Updates"). The manifest fields are
    /// what the release's signature covers; the agent checks them against its own
    /// baked-in key, never trusting the hub for it.
    Update {
        version: String,
        os: String,
        arch: String,
        sha256: String,
        size: u64,
        signature: String,
        /// Where to download it; the agent fetches this path from its own hub.
        url: String,
        #[serde(default)]
        allow_downgrade: bool,
        /// Seconds the new binary has to reach the hub before the agent rolls back.
        deadline_s: u64,
    },
    /// Run a probe (read-only) and answer with `probe_result` and the same `id`,
    /// within `timeout_ms`. Many may be in flight in one session.
    Probe {
        id: u64,
        probe: String,
        #[serde(default)]
        params: std::collections::BTreeMap<String, String>,
        timeout_ms: u64,
    },
}
