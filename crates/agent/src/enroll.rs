//! `muster enroll` (SPEC §5, §6): verify the hub, make a key pair, send a CSR with
//! the host's facts, and keep what comes back.
//!
//! Invariants: no credential is sent before the hub's CA is verified (by the token's
//! pin, `--ca-hash`, `--ca-file`, or the CA an enrolled agent already holds); the
//! config dir changes only after a complete, checked answer, in one atomic step; a
//! retry after a lost answer reuses the same enrollment id and key pair, so the hub
//! returns the same agent without consuming another token use.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use muster_ca::CaHash;
use muster_client::{ClientError, EnrollOutcome, HubClient, Trust};
use muster_proto::{EnrollRequest, EnrollResponse, PROTOCOL_VERSION, TOKEN_PREFIX};

use crate::configdir::{AgentConfig, ConfigDir, Credentials, PendingEnrollment};
use crate::facts::{FactSources, collect};
use crate::{AgentError, now_rfc3339};

/// How long a pending enrollment id is worth retrying; the hub keeps it for a day.
const PENDING_MAX_AGE: Duration = Duration::from_secs(23 * 3600);

/// `muster enroll` as parsed from flags.
#[derive(Clone, Default)]
pub struct EnrollOptions {
    pub hub_url: String,
    pub token: Option<String>,
    pub key: Option<String>,
    pub name: Option<String>,
    pub ca_hash: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    pub labels: BTreeMap<String, String>,
    /// With no credential the request waits for an admin: poll this long for the
    /// answer (`--wait`); `None` returns at once with the request id.
    pub wait: Option<Duration>,
    /// Re-enrolling with an agent key: keep it, only fetch a certificate (env-file
    /// mode, where the key is the durable identity).
    pub keep_agent_key: bool,
    /// Where host facts come from (tests point these at fixtures).
    pub fact_sources: Option<FactSources>,
}

impl std::fmt::Debug for EnrollOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollOptions")
            .field("hub_url", &self.hub_url)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What an enrollment produced, for the CLI to print.
#[derive(Debug, Clone)]
pub struct EnrollReport {
    pub agent_id: String,
    pub name: String,
    pub hub_url: String,
    pub config_dir: PathBuf,
    /// A new agent (true) or an existing one re-enrolled (false).
    pub created: bool,
    pub cert_expires_at: String,
}

pub async fn enroll(opts: &EnrollOptions, dir: &ConfigDir) -> Result<EnrollReport, AgentError> {
    let hub_url = opts.hub_url.trim_end_matches('/').to_owned();
    if opts.token.is_some() && opts.key.is_some() {
        return Err(AgentError::Usage(
            "give --token or --key, not both".to_owned(),
        ));
    }
    if let Some(t) = &opts.token {
        check_token_shape(t)?;
    }
    let existing = dir.load()?;
    // With no credential at all, the request goes to the hub's approval queue.
    let credential = match (&opts.token, &opts.key, &existing) {
        (Some(t), _, _) => Some(t.clone()),
        (None, Some(k), _) => Some(k.clone()),
        (None, None, Some(creds)) => Some(creds.config.agent_key.clone()),
        (None, None, None) => None,
    };
    let reusing_existing = opts.token.is_none() && opts.key.is_none();
    let trust = trust(opts, existing.as_ref().filter(|_| reusing_existing))?;

    let name = opts.name.clone();
    let sources = opts
        .fact_sources
        .clone()
        .unwrap_or_else(FactSources::from_env);
    let hub_addr = host_port(&hub_url);
    let facts = tokio::task::spawn_blocking(move || collect(&sources, hub_addr.as_deref()))
        .await
        .map_err(|e| AgentError::Internal(format!("collecting host facts: {e}")))?;

    let pending = usable_pending(dir, &hub_url)?;
    let (enrollment_id, key_pem, csr_pem) = match pending {
        Some(p) => {
            let csr = muster_ca::csr_for_key(&p.key_pem, &facts.hostname)?;
            (p.enrollment_id, p.key_pem, csr)
        }
        None => {
            let (key_pem, csr_pem) = muster_ca::new_key_and_csr(&facts.hostname)?;
            let p = PendingEnrollment {
                enrollment_id: uuid::Uuid::new_v4().simple().to_string(),
                hub_url: hub_url.clone(),
                key_pem: key_pem.clone(),
                created_at: now_rfc3339(),
            };
            dir.store_pending(&p)?;
            (p.enrollment_id, key_pem, csr_pem)
        }
    };

    let mut req = EnrollRequest {
        name,
        hostname: facts.hostname.clone(),
        os_info: facts.os_info.clone(),
        arch: facts.arch.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        ip: facts.ip.clone(),
        interfaces: facts.interfaces.clone(),
        packs: Vec::new(),
        labels: opts.labels.clone(),
        csr_pem,
        enrollment_id: Some(enrollment_id),
        protocol_version: Some(PROTOCOL_VERSION),
        keep_agent_key: opts.keep_agent_key,
    };
    let client = HubClient::new(&hub_url, trust)?;
    let deadline = opts.wait.map(|w| std::time::Instant::now() + w);
    let mut busy_retries = 0;
    let outcome = loop {
        match client.enroll(credential.as_deref(), &req).await {
            // The hub is busy (429) or its database briefly away (503): come back
            // at a random moment, with the same enrollment id.
            Err(e @ ClientError::Api { .. })
                if matches!(
                    e.code(),
                    Some(muster_proto::codes::RATE_LIMITED | muster_proto::codes::UNAVAILABLE)
                ) && busy_retries < 8 =>
            {
                busy_retries += 1;
                let delay = Duration::from_millis(rand::random_range(500..=5000));
                tracing::info!(?delay, "the hub is busy; retrying the enrollment");
                tokio::time::sleep(delay).await;
                req.csr_pem = muster_ca::csr_for_key(&key_pem, &facts.hostname)?;
            }
            Ok(EnrollOutcome::Pending(p)) => {
                let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
                match left {
                    Some(left) if !left.is_zero() => {
                        tracing::info!(request_id = %p.request_id, "waiting for an admin to approve the enrollment");
                        tokio::time::sleep(
                            Duration::from_secs(p.poll_after_s.clamp(1, 60)).min(left),
                        )
                        .await;
                        // A fresh CSR from the same key: the request is bound to it.
                        req.csr_pem = muster_ca::csr_for_key(&key_pem, &facts.hostname)?;
                        continue;
                    }
                    _ => {
                        return Err(AgentError::Pending {
                            request_id: p.request_id,
                        });
                    }
                }
            }
            other => break other,
        }
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e @ ClientError::Api { .. }) => {
            // A refusal is final for this attempt: the next one starts afresh.
            dir.clear_pending()?;
            return Err(e.into());
        }
        // No answer: keep the pending id so a retry is recognised by the hub.
        Err(e) => return Err(e.into()),
    };
    let (resp, created) = match outcome {
        EnrollOutcome::Created(r) => (r, true),
        EnrollOutcome::Reenrolled(r) => (r, false),
        EnrollOutcome::Pending(p) => {
            return Err(AgentError::Pending {
                request_id: p.request_id,
            });
        }
    };
    let creds = check_answer(
        &resp,
        &hub_url,
        key_pem,
        credential.as_deref().unwrap_or_default(),
    )?;
    dir.store(&creds)?;
    dir.clear_pending()?;
    Ok(EnrollReport {
        agent_id: resp.agent_id,
        name: resp.name,
        hub_url,
        config_dir: dir.path().to_path_buf(),
        created,
        cert_expires_at: resp.cert_expires_at,
    })
}

/// Characters of a token's secret and of its CA pin (SPEC §2: 32 and 16 bytes,
/// base64url without padding).
const TOKEN_SECRET_CHARS: usize = 43;
const TOKEN_PIN_CHARS: usize = 22;

/// Refuse, before anything touches the network or the disk, a token that cannot be
/// whole: a copy that lost its end would otherwise fail as an unknown token or, with
/// a cut pin, as a CA mismatch, neither of which says what happened. A token without
/// a pin (the secret alone) is whole; the hub is then verified by other means.
fn check_token_shape(token: &str) -> Result<(), AgentError> {
    let Some(body) = token.strip_prefix(TOKEN_PREFIX) else {
        return Err(AgentError::Usage(format!(
            "that does not look like an enrollment token (they start with {TOKEN_PREFIX})"
        )));
    };
    let (secret, pin) = match body.split_once('.') {
        Some((secret, pin)) => (secret, Some(pin)),
        None => (body, None),
    };
    if secret.len() < TOKEN_SECRET_CHARS || pin.is_some_and(|p| p.len() != TOKEN_PIN_CHARS) {
        return Err(AgentError::Usage(format!(
            "the token looks truncated (expected {TOKEN_PREFIX} + {TOKEN_SECRET_CHARS} characters + . + \
             {TOKEN_PIN_CHARS} characters); copy it again from `muster tokens create`"
        )));
    }
    Ok(())
}

/// How to verify the hub before sending the credential.
fn trust(opts: &EnrollOptions, existing: Option<&Credentials>) -> Result<Trust, AgentError> {
    if let Some(file) = &opts.ca_file {
        let pem = std::fs::read_to_string(file).map_err(|e| {
            AgentError::Usage(format!("cannot read --ca-file {}: {e}", file.display()))
        })?;
        return Ok(Trust::CaPem(pem));
    }
    if let Some(h) = &opts.ca_hash {
        let hash =
            CaHash::parse(h).map_err(|e| AgentError::Usage(format!("invalid --ca-hash: {e}")))?;
        return Ok(Trust::Hash(hash));
    }
    if let Some(pin) = opts
        .token
        .as_deref()
        .and_then(|t| t.split_once('.'))
        .map(|(_, p)| p)
    {
        return Ok(Trust::Pin(pin.to_owned()));
    }
    if let Some(creds) = existing {
        return Ok(Trust::CaPem(creds.ca_pem.clone()));
    }
    if opts.insecure_skip_verify {
        tracing::warn!(
            "--insecure-skip-verify: the hub's identity is NOT checked; anyone on the path can read the credential"
        );
        return Ok(Trust::Insecure);
    }
    Err(AgentError::Usage(
        "cannot verify the hub: use a token that carries the CA pin, or --ca-hash (print it with `muster hub ca-hash` on the hub; it is also in the token's output), or --ca-file".to_owned(),
    ))
}

/// The pending enrollment to retry, if it is for this hub and recent.
fn usable_pending(dir: &ConfigDir, hub_url: &str) -> Result<Option<PendingEnrollment>, AgentError> {
    let Some(p) = dir.load_pending()? else {
        return Ok(None);
    };
    let fresh = time::OffsetDateTime::parse(
        &p.created_at,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()
    .is_some_and(|t| {
        let age = time::OffsetDateTime::now_utc() - t;
        age >= time::Duration::ZERO && age.unsigned_abs() < PENDING_MAX_AGE
    });
    Ok((fresh && p.hub_url == hub_url).then_some(p))
}

/// Check the hub's answer fits what we asked for before keeping it.
fn check_answer(
    resp: &EnrollResponse,
    hub_url: &str,
    key_pem: String,
    fallback_key: &str,
) -> Result<Credentials, AgentError> {
    let bad = |m: &str| AgentError::Client(ClientError::Protocol(m.to_owned()));
    let info = muster_ca::cert_info(&resp.cert_pem)?;
    if info.subject_cn != resp.agent_id {
        return Err(bad("the certificate does not name the agent id"));
    }
    if info.public_key_sha256 != muster_ca::key_public_sha256(&key_pem)? {
        return Err(bad("the certificate is not for this machine's key"));
    }
    let ca_hash = CaHash::of_pem(&resp.ca_pem)?;
    Ok(Credentials {
        config: AgentConfig {
            hub_url: hub_url.to_owned(),
            agent_id: resp.agent_id.clone(),
            agent_name: resp.name.clone(),
            agent_key: if resp.agent_key.is_empty() {
                fallback_key.to_owned()
            } else {
                resp.agent_key.clone()
            },
            ca_hash: ca_hash.to_string(),
            heartbeat_interval_s: resp.heartbeat_interval_s,
            enrolled_at: now_rfc3339(),
            generation: resp.generation,
        },
        key_pem,
        cert_pem: resp.cert_pem.clone(),
        ca_pem: resp.ca_pem.clone(),
    })
}

/// `host:port` of an `https://host:port/…` URL, for the primary-address probe.
pub(crate) fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    if authority.is_empty() {
        return None;
    }
    let has_port = if authority.starts_with('[') {
        authority.contains("]:")
    } else {
        authority.contains(':')
    };
    Some(if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_cut_token_is_called_truncated() {
        let secret = "s".repeat(43);
        let pin = "p".repeat(22);
        assert!(check_token_shape(&format!("met_{secret}.{pin}")).is_ok());
        assert!(
            check_token_shape(&format!("met_{secret}")).is_ok(),
            "no pin"
        );
        for cut in [
            format!("met_{}", &secret[..20]),
            format!("met_{secret}."),
            format!("met_{secret}.{}", &pin[..21]),
            format!("met_{}.{pin}", &secret[..42]),
        ] {
            let err = check_token_shape(&cut).unwrap_err().to_string();
            assert!(err.contains("looks truncated"), "{cut}: {err}");
        }
        let err = check_token_shape("mak_x").unwrap_err().to_string();
        assert!(err.contains("does not look like"), "{err}");
    }

    #[test]
    fn host_port_of_urls() {
        assert_eq!(host_port("https://h:8443/x").as_deref(), Some("h:8443"));
        assert_eq!(host_port("https://h").as_deref(), Some("h:443"));
        assert_eq!(host_port("https://[::1]:9").as_deref(), Some("[::1]:9"));
    }
}
