//! Probes and packs (SPEC §15): what an agent offers, how the hub asks it to run
//! one over the live session, and how results come back. Read-only by contract:
//! a probe looks, it never changes the machine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One parameter a probe takes (all are strings on the wire; the probe parses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProbeParam {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// One probe an agent offers, e.g. `system.disks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProbeInfo {
    /// `<pack>.<probe>`.
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub params: Vec<ProbeParam>,
}

/// A pack as the agent sees it: `ready`, or `failed` with the reason (its
/// self-check did not pass; the agent then reports itself degraded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PackHealth {
    Ready,
    Failed,
}

/// A group of probes an agent offers, announced in `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PackInfo {
    pub name: String,
    pub version: String,
    /// Privileges the pack needs beyond the baseline, e.g. `journal` (read service
    /// logs). An admin approves them per agent; until then the pack is pending.
    #[serde(default)]
    pub needs: Vec<String>,
    pub health: PackHealth,
    /// Why the self-check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub probes: Vec<ProbeInfo>,
}

/// How one probe run on one agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProbeOutcome {
    Ok,
    /// The probe ran and failed, or the agent refused it (unknown probe, bad
    /// parameter): `error` says why.
    Error,
    /// No answer within the timeout.
    Timeout,
    /// The agent has no live session (here or on another hub).
    Offline,
    /// The agent's pack is waiting for an admin's approval, or was denied.
    Pending,
}

/// A probe's parameters as the hub takes them: at most 16, names of 1 to 64
/// letters, digits and `_`, values of at most 1,024 characters.
#[cfg(feature = "openapi")]
fn probe_params_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    let name = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Za-z0-9_]{1,64}$"))
        .build();
    let value = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(1024))
        .pattern(Some("^[^\\x00-\\x1f\\x7f-\\x9f]*$"));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(16))
        .property_names(Some(name))
        .additional_properties(Some(AdditionalProperties::RefOr(value.into())))
        .build()
}

/// `POST /api/v1/agents/{id}/probes/{probe}` and `POST /api/v1/probes/{probe}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunProbeRequest {
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = probe_params_schema))]
    pub params: BTreeMap<String, String>,
    /// Seconds to wait for each agent (default 10, at most 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// Fan-out (`/api/v1/probes/{probe}` only): agents whose name matches this glob…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<String>,
    /// …and that carry this label (`key=value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// What one agent answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProbeRun {
    pub agent_id: String,
    pub agent: String,
    pub probe: String,
    pub outcome: ProbeOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The result was cut at the output cap.
    #[serde(default)]
    pub truncated: bool,
    pub duration_ms: u64,
}

impl ProbeRun {
    /// A run that produced no answer from the agent, and why.
    pub fn unanswered(
        agent: &ProbeTarget,
        probe: &str,
        outcome: ProbeOutcome,
        error: impl Into<String>,
    ) -> Self {
        ProbeRun {
            agent_id: agent.id.clone(),
            agent: agent.name.clone(),
            probe: probe.to_owned(),
            outcome,
            result: None,
            error: Some(error.into()),
            truncated: false,
            duration_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProbeRunList {
    pub runs: Vec<ProbeRun>,
}

/// `GET /api/v1/agents/{id}/probes`: what an agent offers, and each pack's state
/// on the hub (`ready`, `failed`, `pending`, `denied`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentPacks {
    pub agent_id: String,
    pub agent: String,
    pub packs: Vec<AgentPack>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentPack {
    #[serde(flatten)]
    pub pack: PackInfo,
    /// `ready`, `failed` (self-check), `pending` (needs not approved) or `denied`.
    pub state: String,
}

/// The largest probe result an agent sends (bytes of JSON); more is cut and marked.
/// With its envelope it fits a session frame (64 KiB), so a result never needs a
/// larger buffer on a hub holding tens of thousands of sessions.
pub const PROBE_OUTPUT_MAX: usize = 48 * 1024;

/// Agents named in one hub-to-hub probe request at most (`POST /api/v1/hub/probes`):
/// 1,000 ids of 36 characters and the largest parameters fit the 64 KiB body limit.
pub const PEER_PROBE_BATCH: usize = 1_000;

/// `POST /api/v1/hub/probes`: one hub asks the hub holding these agents' sessions
/// to run a probe on them (SPEC §12 "one fleet", §15). The asking hub has checked
/// the caller's scopes, names each run, and writes the audit entries; the holder
/// only runs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerProbeRequest {
    pub probe: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub timeout_ms: u64,
    /// The agents' ids.
    pub agents: Vec<String>,
}

/// An agent a probe runs on: its id, and the name its run is labelled with.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub id: String,
    pub name: String,
}
