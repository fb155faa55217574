//! Wire types shared by the hub, the agent, the admin CLI and the tests.
//!
//! Everything that crosses the network is declared here and nowhere else, so the two
//! sides cannot drift apart. This crate depends on serde only: no server or client
//! machinery. Times on the wire are RFC 3339 strings in UTC.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod access;
mod audit;
mod hubs;
mod integrations;
mod kinds;
mod probes;
mod session;
mod sso;
mod trust;

pub use access::{
    CreateKeyRequest, CreateUserRequest, CreatedKey, KeyInfo, KeyList, LoginRequest, UserInfo,
    UserList,
};
pub use audit::{
    AuditCheckpoint, AuditEntryInfo, AuditList, AuditVerifyResult, VerifyAuditRequest,
};
pub use hubs::{HubInfo, HubList, HubState};
pub use integrations::{
    CreateIntegrationRequest, HTTP_GET, INTEGRATION_BODY_MAX, IntegrationInfo, IntegrationList,
    IntegrationProbeResult, IntegrationTestResult, RunIntegrationProbeRequest,
};
pub use kinds::{
    AgentStatus, ApprovalKind, ApprovalStatus, KeyState, PrincipalKind, Role, TokenState,
    UnknownWord, WhoAmI,
};
pub use probes::{
    AgentPack, AgentPacks, PEER_PROBE_BATCH, PROBE_OUTPUT_MAX, PackHealth, PackInfo,
    PeerProbeRequest, ProbeInfo, ProbeOutcome, ProbeParam, ProbeRun, ProbeRunList, ProbeTarget,
    RunProbeRequest,
};
pub use session::{ACK_EVERY, AgentHealth, AgentMessage, HubMessage};
pub use sso::{CreateSsoGroupRequest, SetSsoRequest, SsoGroupInfo, SsoGroupList, SsoInfo};
pub use trust::{CreateTrustRule, TrustRuleInfo, TrustRuleList};

/// Version of the agent–hub protocol. An agent announces it in `hello` and at
/// enrollment; the hub refuses versions it does not speak with a clear message.
pub const PROTOCOL_VERSION: u32 = 1;

/// ALPN name every Muster client offers (beside `http/1.1`) to ask for the hub's own
/// server certificate, the one its CA issued. A hub started with `--tls-cert` serves
/// that file's certificate to everyone else (browsers, curl) and its own to clients
/// offering this, so that a token's CA pin is still checked inside the handshake.
/// It is never negotiated; it only selects the certificate.
pub const HUB_CA_ALPN: &[u8] = b"muster-hub-ca";

/// Largest request body the hub accepts, in bytes. Larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest agent name, hostname, label key or value the hub accepts.
pub const MAX_NAME_LEN: usize = 253;

/// Format characters that change how text displays without showing themselves:
/// bidirectional embeddings, overrides and isolates, and zero-width characters. A
/// name `web-01\u{202E}10-bew` reads as another machine's in a table. The hub
/// refuses them in every text an agent or admin sends; the CLI escapes them in
/// everything it prints.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// The one-line texts the hub takes (names, hostnames, globs) as a JSON Schema
/// pattern for the published API: what the hub's `check_text` refuses — control,
/// format and zero-width characters, surrounding whitespace — except its limit,
/// which is in bytes ([`MAX_NAME_LEN`]) where a schema can only count characters.
pub const TEXT_PATTERN: &str = "^[^\\s\\x00-\\x1f\\x7f-\\x9f\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff](?:[^\\x00-\\x1f\\x7f-\\x9f\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff])?$";

/// The schema of a one-line text the hub checks with `check_text`: 1 to
/// [`MAX_NAME_LEN`] characters matching [`TEXT_PATTERN`].
#[cfg(feature = "openapi")]
pub fn text_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_LEN))
        .pattern(Some(TEXT_PATTERN))
        .build()
}

/// The version an agent reports: [`text_schema`] of at most 64 characters.
#[cfg(feature = "openapi")]
pub fn version_text_schema() -> utoipa::openapi::Object {
    let mut schema = text_schema();
    schema.max_length = Some(64);
    schema
}

/// The steps an agent may report: all but `requested`, which only the hub records.
#[cfg(feature = "openapi")]
pub fn reported_phase_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some(
            "A step of a self-update, as an agent reports it (`requested` is the hub's own).",
        ))
        .enum_values(Some(
            UpdatePhase::ALL
                .into_iter()
                .filter(|p| *p != UpdatePhase::Requested)
                .map(UpdatePhase::as_str),
        ))
        .build()
}

/// [`text_schema`] or `null` (`Option<String>`).
#[cfg(feature = "openapi")]
pub fn nullable_text_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_LEN))
        .pattern(Some(TEXT_PATTERN))
        .build()
}

/// [`text_schema`] that may also be empty or absent (`Option<String>`, `null`).
#[cfg(feature = "openapi")]
pub fn optional_text_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    let inner = TEXT_PATTERN.trim_start_matches('^').trim_end_matches('$');
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .max_length(Some(MAX_NAME_LEN))
        .pattern(Some(format!("^(?:{inner})?$")))
        .build()
}

/// A list of [`text_schema`] texts.
#[cfg(feature = "openapi")]
pub fn text_list_schema() -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .items(text_schema())
        .build()
}

/// Labels as the hub takes them (`check_label`): keys of 1 to 63 characters of
/// `[A-Za-z0-9._/-]`, values one-line text or empty.
#[cfg(feature = "openapi")]
pub fn labels_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, Type};
    let inner = TEXT_PATTERN.trim_start_matches('^').trim_end_matches('$');
    let value = utoipa::openapi::ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(MAX_NAME_LEN))
        .pattern(Some(format!("^(?:{inner})?$")));
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(label_key_schema()))
        .additional_properties(Some(AdditionalProperties::RefOr(value.into())))
        .build()
}

/// A label key: 1 to 63 characters of `[A-Za-z0-9._/-]`.
#[cfg(feature = "openapi")]
pub fn label_key_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some("^[A-Za-z0-9._/-]{1,63}$"))
        .build()
}

/// Label keys to remove.
#[cfg(feature = "openapi")]
pub fn label_keys_schema() -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .items(label_key_schema())
        .build()
}

/// Prefixes of the secrets of SPEC §2.
pub const TOKEN_PREFIX: &str = "met_";
pub const AGENT_KEY_PREFIX: &str = "mag_";
pub const API_KEY_PREFIX: &str = "mak_";

pub mod codes;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }
}

/// One network interface of a host (SPEC §8).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub is_up: bool,
    #[serde(default)]
    pub is_loopback: bool,
    #[serde(default)]
    pub is_virtual: bool,
    #[serde(default)]
    pub is_wireless: bool,
    /// Set on the interface that carries the agent's primary address.
    #[serde(default)]
    pub is_management: bool,
    #[serde(default)]
    pub bytes_sent: u64,
    #[serde(default)]
    pub bytes_recv: u64,
}

/// What an agent reports about its host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostFacts {
    pub hostname: String,
    pub os_info: String,
    pub arch: String,
    /// Local address of the route toward the hub.
    pub ip: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
}

/// `POST /api/v1/enroll` (SPEC §5). The credential travels in `Authorization`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// Requested agent name; the hub uses the hostname when absent.
    #[serde(default)]
    pub name: Option<String>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::text_schema))]
    pub hostname: String,
    #[serde(default)]
    pub os_info: String,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub agent_version: String,
    #[serde(default)]
    pub ip: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub packs: Vec<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::labels_schema))]
    pub labels: BTreeMap<String, String>,
    pub csr_pem: String,
    /// Random id the agent keeps until enrollment completes, so a retry after a
    /// lost response returns the same agent and consumes no second token use.
    #[serde(default)]
    pub enrollment_id: Option<String>,
    #[serde(default)]
    pub protocol_version: Option<u32>,
    /// With existing agent credentials only: issue a certificate for the new key
    /// but keep the agent key (env-file mode, where the key is the durable
    /// identity). The answer's `agent_key` is then empty.
    #[serde(default)]
    pub keep_agent_key: bool,
}

/// 201 (new agent) or 200 (re-enrollment) answer to `POST /api/v1/enroll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollResponse {
    pub agent_id: String,
    pub name: String,
    pub agent_key: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub cert_expires_at: String,
    pub hub_url: String,
    pub heartbeat_interval_s: u64,
    /// Credential generation of the issued identity (clone detection, SPEC §9).
    #[serde(default)]
    pub generation: i64,
}

/// 202 answer to `POST /api/v1/enroll` when the request waits for approval (§7).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingResponse {
    /// Always `pending`: the request waits.
    pub status: ApprovalStatus,
    pub request_id: String,
    pub poll_after_s: u64,
}

/// `GET /api/v1/ca`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CaResponse {
    pub ca_pem: String,
    /// `sha256:<hex of SHA-256 of the CA certificate DER>`.
    pub ca_hash: String,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// `None` means unlimited uses.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub max_uses: Option<u32>,
    /// Lifetime in seconds; `None` means the token never expires.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 315360000))]
    pub ttl_s: Option<u64>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub cidrs: Vec<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::labels_schema))]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub allow_replace: bool,
    #[serde(default)]
    pub description: Option<String>,
}

/// Answer to `POST /api/v1/tokens`: the only time the token value is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTokenResponse {
    pub id: String,
    pub token: String,
    pub expires_at: Option<String>,
    pub max_uses: Option<u32>,
    pub enroll_command: String,
    /// Ready-to-paste install lines for this token (SPEC §10); absent from older hubs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<InstallCommands>,
}

/// The one-liners that install and enroll an agent with a token, as the hub made
/// them: each verifies the hub before anything it fetched runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstallCommands {
    /// Linux, macOS and the BSDs: POSIX sh, run as root.
    pub sh: String,
    /// Windows: PowerShell, run as Administrator.
    pub powershell: String,
    /// `muster enroll --hub URL --token T`, where the binary is already installed.
    pub enroll: String,
}

/// Answer to `GET /api/v1/agent/latest?os=&arch=`: the agent binary to install.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LatestRelease {
    pub version: String,
    /// Lowercase hex SHA-256 of the binary.
    pub sha256: String,
    /// Base64 Ed25519 signature of the release manifest; empty when the hub serves
    /// its own, unsigned binary (nothing published for that platform).
    pub signature: String,
    pub size: u64,
    /// Where to download it: `<hub>/api/v1/agent/download/<version>/<os>/<arch>`.
    pub url: String,
}

/// Answer to `PUT /api/v1/releases/{version}/{os}/{arch}` and an entry of
/// `GET /api/v1/releases`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseInfo {
    pub version: String,
    pub os: String,
    pub arch: String,
    pub sha256: String,
    pub size: u64,
    pub signed: bool,
}

/// Answer to `GET /api/v1/releases`, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseList {
    pub releases: Vec<ReleaseInfo>,
}

/// A token as listed: never its value, only its display prefix.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub id: String,
    pub prefix: String,
    pub description: Option<String>,
    pub uses: u32,
    pub max_uses: Option<u32>,
    pub expires_at: Option<String>,
    pub state: TokenState,
    pub pattern: Option<String>,
    pub cidrs: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub allow_replace: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// An agent as the hub sees it (SPEC §6).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentInfo {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub status: AgentStatus,
    pub ip: String,
    pub os_info: String,
    pub arch: String,
    pub agent_version: String,
    pub labels: BTreeMap<String, String>,
    pub packs: Vec<String>,
    pub enrolled_at: String,
    pub last_seen_at: Option<String>,
    pub cert_expires_at: Option<String>,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Credential generation (advances with every renewal).
    #[serde(default)]
    pub generation: i64,
    /// When the agent was caught cloned: which addresses presented which generation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clone_events: Vec<CloneEventInfo>,
    /// Older than the newest release published for its platform (or, with none
    /// published, than the hub itself).
    #[serde(default)]
    pub outdated: bool,
    /// The last step of its last self-update (SPEC §10 "Updates"), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateInfo>,
    /// What a degraded agent says is wrong (e.g. `pack system: cannot read …`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Steps of a self-update, as the hub records them (`agent.update.<phase>`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UpdatePhase {
    /// An admin asked the agent to update (recorded by the hub, never sent by agents).
    Requested,
    /// Already running that version: nothing to do.
    Skipped,
    /// Checks passed; downloading.
    Started,
    /// The download matches the signed manifest.
    Verified,
    /// Refused before anything changed (bad signature, no key, downgrade…).
    Refused,
    /// The new binary is in place; the trial run starts.
    Installed,
    /// The new binary reached the hub and now runs as the agent.
    Completed,
    /// The new binary did not reach the hub in time; the previous one is back.
    RolledBack,
    /// Something broke (download, disk); the previous binary stays.
    Failed,
}

impl UpdatePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdatePhase::Requested => "requested",
            UpdatePhase::Skipped => "skipped",
            UpdatePhase::Started => "started",
            UpdatePhase::Verified => "verified",
            UpdatePhase::Refused => "refused",
            UpdatePhase::Installed => "installed",
            UpdatePhase::Completed => "completed",
            UpdatePhase::RolledBack => "rolled_back",
            UpdatePhase::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<UpdatePhase> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub const ALL: [UpdatePhase; 9] = [
        UpdatePhase::Requested,
        UpdatePhase::Skipped,
        UpdatePhase::Started,
        UpdatePhase::Verified,
        UpdatePhase::Refused,
        UpdatePhase::Installed,
        UpdatePhase::Completed,
        UpdatePhase::RolledBack,
        UpdatePhase::Failed,
    ];

    /// Whether an update ends here (no further report follows).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            UpdatePhase::Skipped
                | UpdatePhase::Refused
                | UpdatePhase::Completed
                | UpdatePhase::RolledBack
                | UpdatePhase::Failed
        )
    }
}

impl std::fmt::Display for UpdatePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An agent's last update step as the hub stored it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateInfo {
    pub phase: UpdatePhase,
    /// The version the update is about.
    pub version: String,
    /// Why (refused, rolled back, failed), or what (skipped); may be empty.
    #[serde(default)]
    pub message: String,
    pub at: String,
}

/// `POST /api/v1/agents/{id}/update`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// The release to install; the newest published for the agent's platform when absent.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub allow_downgrade: bool,
    /// Seconds the new binary has to reach the hub before the agent rolls back.
    #[serde(default)]
    pub deadline_s: Option<u64>,
}

/// `POST /api/v1/agent/update-status`: a step of an update the agent ran outside a
/// session (`muster update` on the machine).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateReport {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::reported_phase_schema))]
    pub phase: UpdatePhase,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::version_text_schema))]
    pub version: String,
    #[serde(default)]
    pub message: String,
}

/// Answer to `POST /api/v1/agents/{id}/update`: the order was sent to the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateOrder {
    pub agent_id: String,
    pub name: String,
    /// The version the agent runs now, as it reported it.
    pub from_version: String,
    pub version: String,
    pub os: String,
    pub arch: String,
    /// When the hub sent it; later update reports of this agent answer it.
    pub requested_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CloneEventInfo {
    pub at: String,
    pub source: String,
    pub presented_generation: i64,
    pub expected_generation: i64,
    /// `session` or `renewal`.
    pub via: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentList {
    pub agents: Vec<AgentInfo>,
    /// Cursor for the next page (`?after=`), absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Agents counted by status (`GET /api/v1/agents/summary`, the live `agents` event).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusCounts {
    pub online: i64,
    pub offline: i64,
    pub degraded: i64,
    pub revoked: i64,
    pub cloned: i64,
    /// Enrollment requests waiting for approval (not agents yet).
    pub pending: i64,
}

/// `GET /api/v1/agents/summary`: the fleet by status; `total` counts agents (not
/// removed), not the waiting requests.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetSummary {
    pub counts: StatusCounts,
    pub total: i64,
}

/// One session of an agent (`GET /api/v1/agents/{id}/sessions`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionInfo {
    pub connected_at: String,
    /// Absent while the session lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_at: Option<String>,
    /// The agent's address as the hub saw it.
    pub address: String,
    /// Why it ended, one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /api/v1/agents/{id}/sessions`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionHistory {
    pub sessions: Vec<SessionInfo>,
}

/// `GET /healthz`, `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: String,
}

/// `POST /api/v1/agent/renew`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr_pem: String,
    /// The generation the agent holds; the hub advances it.
    pub generation: i64,
    /// For a certificate that expired while the agent was offline (it cannot be
    /// presented in TLS any more): the expired certificate…
    #[serde(default)]
    pub expired_cert_pem: Option<String>,
    /// …and a signature by its key over `muster_ca::proof_message`, base64url.
    #[serde(default)]
    pub proof: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenewResponse {
    pub cert_pem: String,
    pub cert_expires_at: String,
    pub generation: i64,
}

/// A request in the approval queue (SPEC §7), as admins see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalInfo {
    pub id: String,
    pub kind: ApprovalKind,
    pub agent_id: Option<String>,
    pub name: String,
    pub hostname: String,
    /// Source address the request came from.
    pub source: String,
    pub facts: Option<HostFacts>,
    pub status: ApprovalStatus,
    pub reason: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub age_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalList {
    pub requests: Vec<ApprovalInfo>,
}

/// `POST /api/v1/approvals/{id}/approve|deny`, `POST /api/v1/approvals/approve`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    /// Approve every waiting request whose hostname matches (bulk form only).
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::optional_text_schema))]
    pub reason: Option<String>,
}

/// `POST /api/v1/agents/{id}/labels`: an admin's edit of an agent's labels, applied
/// as one change. A key may be set or removed, not both.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChangeLabelsRequest {
    /// Labels to add or overwrite.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::labels_schema))]
    pub set: BTreeMap<String, String>,
    /// Label keys to drop; absent keys are ignored.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::label_keys_schema))]
    pub remove: Vec<String>,
}
