//! The state every request handler shares, passed in (never global) so several hubs
//! can run in one process.
//!
//! Low in the crate on purpose: it holds only types from modules below it (the
//! session registry, the login throttle, the token cache, metrics), so every module
//! that takes the whole state can import it without importing each other.

use std::sync::Arc;
use std::time::Duration;

use muster_ca::{Authority, CaHash};
use muster_store::{QueueLimits, Store};

use crate::downloads::Downloads;
use crate::events::Events;
use crate::handshakes::Handshakes;
use crate::history::HistoryQueue;
use crate::install::HubIdentity;
use crate::metrics::Metrics;
use crate::presence::PresenceQueue;
use crate::refusals::RefusalLog;
use crate::registry::Sessions;
use crate::secrets::Keys;
use crate::slots::WorkSlots;
use crate::throttle::LoginThrottle;
use crate::token_cache::TokenCache;

pub struct AppState {
    /// Probe calls waiting for their agent's answer (SPEC §15).
    pub calls: crate::calls::Calls,
    /// Privileges packs may use without an admin's approval (`--pack-grants`).
    pub pack_grants: Vec<String>,
    /// Single sign-on (SPEC §14): settings from the environment, the provider
    /// cache, whether passwords are taken.
    pub sso: crate::oidc::Sso,
    /// The one client for calls the hub makes itself (`outbound.rs`): the single
    /// sign-on provider (which holds a clone) and integrations.
    pub http: reqwest::Client,
    /// The client for asking the other hubs sharing the database (`forward.rs`).
    pub peers: reqwest::Client,
    /// Integration calls (tests, probes) in flight at once: members may run probes,
    /// and the hub must not become a load generator against someone's API.
    pub integration_calls: tokio::sync::Semaphore,
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub ca: Authority,
    pub ca_hash: CaHash,
    /// The URL agents and admins are told to use (`--advertise-url`).
    pub hub_url: String,
    pub heartbeat_interval: Duration,
    pub cert_validity: Duration,
    pub renewal_grace: Duration,
    /// Enrollments with no credential wait for an admin (true) or get 401 (false).
    pub approval_queue: bool,
    /// How long a queued request waits before it expires.
    pub pending_ttl: Duration,
    /// How many credential-less requests may wait, per source network and in all:
    /// anyone can queue one, so the queue must not grow with what they send.
    pub queue_limits: QueueLimits,
    /// How many refused attempts may still be audited this minute.
    pub refusals: RefusalLog,
    /// Proxies whose forwarded client address we believe (`--trusted-proxy`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Recent login attempts, by user and source (see `throttle.rs`).
    pub login_throttle: LoginThrottle,
    /// Password hashing is bounded: one at a time per core, a short queue, 503 past it.
    pub password_slots: WorkSlots,
    /// A password hash nobody can match, made once (unknown users are checked
    /// against it so timing does not tell them apart).
    pub decoy_hash: tokio::sync::OnceCell<String>,
    /// Enrollments allowed in flight at once; the rest get 429.
    pub enroll_slots: tokio::sync::Semaphore,
    /// API keys used since the last flush, and when (`last_used_at`).
    pub key_use: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// MCP requests in flight per caller (see `mcp::PER_KEY`).
    pub mcp_slots: crate::slots::CallerSlots,
    pub metrics: Metrics,
    /// Token records read recently (see [`TokenCache`]).
    pub tokens: TokenCache,
    /// Shared with each session's registration guard, which outlives no request but
    /// must not hold the whole state.
    pub sessions: Arc<Sessions>,
    /// Change notes for live watchers (`GET /api/v1/events`); shared with each
    /// watcher's subscription, which frees its place when the stream ends.
    pub events: Arc<Events>,
    /// This hub's id (`<data-dir>/hub-id`), written on the session history rows it
    /// opens, so that after a crash it closes only its own.
    pub hub_id: String,
    /// Session history writes waiting for the writer task.
    pub history: HistoryQueue,
    /// TLS handshakes running and waiting (see `handshakes.rs`).
    pub handshakes: Arc<Handshakes>,
    /// Where this hub's sessions are, waiting for `lease.rs` to write them.
    pub presence: PresenceQueue,
    /// How long this hub's lease lasts without a renewal (`--hub-lease`).
    pub hub_lease: Duration,
    /// When this hub started serving (unix ms), for the hubs list.
    pub started_at: i64,
    /// Signed agent releases published to this hub (`<data-dir>/releases/`, SPEC §10).
    pub releases: muster_release::ReleaseDir,
    /// Serving agent binaries: cached manifests, the hub's own binary, the limits.
    pub downloads: Downloads,
    /// The hub serves a certificate from `--tls-cert` (publicly trusted, we assume):
    /// install lines then let the system's trust store verify it.
    pub public_tls: bool,
}

/// The hub as the installer scripts describe it (owned; see `install::HubIdentity`).
pub struct OwnedHubIdentity {
    pub url: String,
    pub ca_pem: Option<String>,
    pub ca_sha256_hex: Option<String>,
}

impl OwnedHubIdentity {
    pub fn as_ref(&self) -> HubIdentity<'_> {
        HubIdentity {
            url: &self.url,
            ca_pem: self.ca_pem.as_deref(),
            ca_sha256_hex: self.ca_sha256_hex.as_deref(),
        }
    }
}

impl AppState {
    /// What the installer scripts and one-liners need to know about this hub.
    pub fn hub_identity(&self) -> OwnedHubIdentity {
        let (pem, hex) = if self.public_tls {
            (None, None)
        } else {
            let hash = self.ca_hash.to_string();
            let hex = hash.strip_prefix("sha256:").unwrap_or(&hash).to_owned();
            (Some(self.ca.cert_pem().to_owned()), Some(hex))
        };
        OwnedHubIdentity {
            url: self.hub_url.clone(),
            ca_pem: pem,
            ca_sha256_hex: hex,
        }
    }
}
