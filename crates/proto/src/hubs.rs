//! The hubs sharing one database (`GET /api/v1/hubs`, SPEC §12).

use serde::{Deserialize, Serialize};

/// Whether a hub's sessions count (`GET /api/v1/hubs`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HubState {
    /// Renewing its lease.
    Live,
    /// Stopped renewing without saying so (killed, cut off): its agents count as
    /// offline and reconnect elsewhere.
    Expired,
    /// Stopped gracefully and gave its lease back.
    Stopped,
}

impl HubState {
    pub fn as_str(self) -> &'static str {
        match self {
            HubState::Live => "live",
            HubState::Expired => "expired",
            HubState::Stopped => "stopped",
        }
    }
}

/// One hub sharing the database (`GET /api/v1/hubs`, `muster hubs list`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HubInfo {
    pub id: String,
    /// The URL it advertises to agents and people.
    pub address: String,
    pub version: String,
    pub state: HubState,
    /// Sessions it held at its last renewal (online and degraded).
    pub sessions: i64,
    pub started_at: String,
    /// Its last lease renewal, and how long ago that was (ms) by the answering
    /// hub's clock.
    pub renewed_at: String,
    pub lease_age_ms: i64,
    pub expires_at: String,
    /// The hub that answered.
    #[serde(default)]
    pub this_hub: bool,
}

/// `GET /api/v1/hubs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HubList {
    pub hubs: Vec<HubInfo>,
}
