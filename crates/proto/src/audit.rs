//! The audit log on the wire (SPEC §11): entries, the chain's verdict, and the
//! signed checkpoints of its head.

use serde::{Deserialize, Serialize};

/// One audit log entry (SPEC §11).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntryInfo {
    /// Position in the chain.
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub source: String,
    pub outcome: String,
    pub details: serde_json::Value,
    /// The actor's current name, when the actor is an agent or an API key the hub
    /// still knows (`agent:<id>` → its name, `key:<id>` → the key's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_name: Option<String>,
    /// The target's current name, as for `actor_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditList {
    pub entries: Vec<AuditEntryInfo>,
}

/// `GET /api/v1/audit/verify`, and `POST` with a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditVerifyResult {
    pub ok: bool,
    pub count: usize,
    /// The first entry that does not verify.
    pub broken_seq: Option<i64>,
    pub problem: Option<String>,
    /// The entry the checkpoint given named, checked against the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_seq: Option<i64>,
}

/// A signed note of the audit chain's head (SPEC §11), written by a hub outside
/// the database: `<data-dir>/audit-checkpoint.json`, syslog, a webhook. Whoever
/// holds the latest can tell whether entries behind it were cut off since.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditCheckpoint {
    /// Format version: 1.
    pub v: u32,
    /// The newest entry's position and chain hash when the checkpoint was made.
    pub seq: i64,
    pub hash: String,
    /// When (RFC 3339) and by which hub (its id).
    pub at: String,
    pub hub: String,
    /// HMAC-SHA256 over the fields above, under a key derived from the hub secret.
    pub mac: String,
}

/// `POST /api/v1/audit/verify`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyAuditRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<AuditCheckpoint>,
}
