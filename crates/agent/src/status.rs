//! `muster status` (SPEC §8): what this machine holds, and what the hub thinks of
//! it. The hub is asked once with a short timeout; an unreachable hub is part of
//! the report, not an error.

use std::time::Duration;

use muster_proto::AgentInfo;
use serde::Serialize;

use crate::AgentError;
use crate::configdir::ConfigDir;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    pub hub_url: String,
    pub agent_id: String,
    pub config_dir: String,
    pub cert_expires_at: String,
    pub hub: HubView,
}

/// The hub's answer to `GET /api/v1/agent/me`.
#[derive(Debug, Clone, Serialize)]
pub struct HubView {
    pub reachable: bool,
    /// The agent's record as the hub sees it, when the hub accepted the credentials.
    pub agent: Option<AgentInfo>,
    /// Why not, in one line.
    pub error: Option<String>,
    /// The hub's error code when it refused (`key_invalid`, `agent_revoked`, …).
    pub error_code: Option<String>,
}

impl HubView {
    /// Whether the hub refused these credentials for good (revoked, replaced by a
    /// re-enrollment elsewhere, or locked as a clone): the cases in which
    /// `muster agent` stops with [`crate::service::EXIT_REVOKED`] instead of retrying.
    pub fn refused_for_good(&self) -> bool {
        use muster_proto::codes::{AGENT_CLONED, AGENT_REVOKED, KEY_INVALID};
        matches!(
            self.error_code.as_deref(),
            Some(AGENT_REVOKED | KEY_INVALID | AGENT_CLONED)
        )
    }
}

pub async fn status(dir: &ConfigDir) -> Result<Status, AgentError> {
    let creds = dir
        .load()?
        .ok_or_else(|| AgentError::NotEnrolled(dir.path().to_path_buf()))?;
    let cert = muster_ca::cert_info(&creds.cert_pem)?;
    let cert_expires_at = cert
        .not_after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let answer = crate::hubs::first_answer(
        &creds.config.hubs(),
        |url| creds.client(Some(dir), url, Duration::from_secs(5), true),
        |client| async move { client.agent_me().await },
    )
    .await;
    let hub = match answer {
        Ok(agent) => HubView {
            reachable: true,
            agent: Some(agent),
            error: None,
            error_code: None,
        },
        Err(e) => HubView {
            reachable: matches!(e, muster_client::ClientError::Api { .. }),
            agent: None,
            error_code: e.code().map(str::to_owned),
            error: Some(e.to_string()),
        },
    };
    Ok(Status {
        name: creds.config.agent_name,
        hub_url: creds.config.hub_url,
        agent_id: creds.config.agent_id,
        config_dir: dir.path().display().to_string(),
        cert_expires_at,
        hub,
    })
}
