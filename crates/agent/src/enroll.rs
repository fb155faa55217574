//! `muster enroll` (SPEC §5, §6): verify the hub, make a key pair, send a CSR with
//! the host's facts, and keep what comes back.
//!
//! Invariants: no credential is sent before the hub's CA is verified (by the token's
//! pin, `--ca-hash`, `--ca-file`, or the CA an enrolled agent already holds); the
//! config dir changes only after a complete, checked answer, in one atomic step; a
//! retry after a lost answer reuses the same enrollment id and key pair, so the hub
//! returns the same agent without consuming another token use; a machine holding
//! credentials the hub honours stays that agent (a token given is not used), and
//! becomes another only with `--force`, after its old identity is unenrolled.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use muster_ca::CaHash;
use muster_client::{ClientError, EnrollOutcome, HubClient, Trust};
use muster_proto::{
    AGENT_KEY_PREFIX, EnrollRequest, EnrollResponse, HostFacts, PROTOCOL_VERSION, TOKEN_PREFIX,
    codes,
};

use crate::configdir::{AgentConfig, ConfigDir, Credentials, PendingEnrollment};
use crate::facts::{FactSources, collect};
use crate::{AgentError, now_rfc3339};

/// Tries after the hub said it is busy (429, 503, or a connection closed at its
/// door) before `muster enroll` gives up: enough to ride out a data centre enrolling
/// at once (20,000 machines on one hub take about half a minute), a few minutes in
/// all.
const BUSY_TRIES: u32 = 10;

/// The wait before busy try `n` (from 1): uniform from 0.5 s up to a window that
/// starts at 5 s and doubles to 60 s, so a fleet turned away together spreads out
/// more with every round instead of coming back at one moment.
fn busy_delay(n: u32) -> Duration {
    let window_ms = (5_000u64 << n.saturating_sub(1).min(4)).min(60_000);
    Duration::from_millis(rand::random_range(500..=window_ms))
}

/// How long a pending enrollment id is worth retrying; the hub keeps it for a day.
const PENDING_MAX_AGE: Duration = Duration::from_secs(23 * 3600);

/// `muster enroll` as parsed from flags.
#[derive(Clone, Default)]
pub struct EnrollOptions {
    /// The hub URLs to try, in order, until one answers (SPEC §12: every hub of a
    /// fleet shares one CA, verified at each); all are kept for the agent.
    pub hub_urls: Vec<String>,
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
    /// Become a new agent even though the config dir holds credentials: the old
    /// identity is unenrolled at its hub first (`--force`, SPEC §6).
    pub force: bool,
    /// Where host facts come from (tests point these at fixtures).
    pub fact_sources: Option<FactSources>,
    /// The packs the agent will announce (`muster install`); `None` keeps the choice
    /// the config dir already holds, if any (every built-in pack otherwise).
    pub packs: Option<Vec<String>>,
}

impl std::fmt::Debug for EnrollOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollOptions")
            .field("hub_urls", &self.hub_urls)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What an enrollment produced, for the CLI to print.
#[derive(Debug, Clone)]
pub struct EnrollReport {
    pub agent_id: String,
    pub name: String,
    /// The hub that answered.
    pub hub_url: String,
    pub config_dir: PathBuf,
    /// A new agent (true) or an existing one re-enrolled (false).
    pub created: bool,
    pub cert_expires_at: String,
    /// The agent id `--force` unenrolled before this machine became a new agent.
    pub unenrolled: Option<String>,
}

pub async fn enroll(opts: &EnrollOptions, dir: &ConfigDir) -> Result<EnrollReport, AgentError> {
    let hubs = crate::hubs::parse_list(&opts.hub_urls, "hub URL")?;
    let Some(first_hub) = hubs.first() else {
        return Err(AgentError::Usage(
            "a hub URL is required (e.g. --hub https://hub.example:8443)".to_owned(),
        ));
    };
    if opts.token.is_some() && opts.key.is_some() {
        return Err(AgentError::Usage(
            "give --token or --key, not both".to_owned(),
        ));
    }
    if let Some(t) = &opts.token {
        check_token_shape(t)?;
    }
    let given = opts.token.as_deref().or(opts.key.as_deref());
    // An agent key given is itself an identity (env-file mode): it is used as it is.
    let own = dir
        .load()?
        .filter(|_| !given.is_some_and(|g| g.starts_with(AGENT_KEY_PREFIX)));
    let facts = host_facts(opts, first_hub).await?;
    let Some(own) = own else {
        let trust = trust(opts, None)?;
        return attempt(opts, dir, &hubs, &facts, Sending::Given(given), trust).await;
    };

    // A machine that holds credentials stays that agent (SPEC §6): it re-enrolls
    // with them, and only `--force` makes it a new agent, never leaving the old
    // one behind as a ghost.
    if opts.force {
        // Known before the old identity goes: how to verify the hub to enroll with.
        let trust = trust(opts, Some(&own))?;
        let unenrolled = unenroll_old(dir, &own).await?;
        let mut report = match attempt(opts, dir, &hubs, &facts, Sending::Given(given), trust).await
        {
            Ok(report) => report,
            // Waiting for approval is the way on, and its hint says how to go on.
            Err(e @ AgentError::Pending { .. }) => return Err(e),
            // The old identity is gone already: say so, or the operator would
            // believe the machine still holds it.
            Err(e) if unenrolled => {
                return Err(AgentError::Usage(format!(
                    "{e}; the old identity {} ({}) was already unenrolled at {}: run `muster enroll` again with a valid credential",
                    own.config.agent_name, own.config.agent_id, own.config.hub_url
                )));
            }
            Err(e) => return Err(e),
        };
        report.unenrolled = unenrolled.then(|| own.config.agent_id.clone());
        return Ok(report);
    }
    if names_another_ca(opts, &own)? {
        return Err(AgentError::Usage(format!(
            "this machine is enrolled with another hub ({}) as {} ({}); to make it a new agent of this one, add --force: the old identity is unenrolled at its hub first",
            own.config.hub_url, own.config.agent_name, own.config.agent_id
        )));
    }
    // An enrollment not sent with these credentials (they were found dead, or
    // `--force` gave them up) whose answer was lost, or that waits for approval, is
    // finished first: only its id gets the agent it made without another token use.
    if usable_pending(dir, &hubs, None)?
        .is_some_and(|p| !earlier(&p.created_at, &own.config.enrolled_at))
    {
        let trust = trust(opts, Some(&own))?;
        return attempt(opts, dir, &hubs, &facts, Sending::Given(given), trust).await;
    }
    let trust = Trust::CaPem(own.ca_pem.clone());
    match attempt(opts, dir, &hubs, &facts, Sending::Own(&own), trust.clone()).await {
        // The hub no longer honours them (revoked, or replaced by another
        // enrollment): there is no identity left to keep, so the credential given
        // enrolls the machine.
        Err(AgentError::Client(e))
            if given.is_some()
                && matches!(e.code(), Some(codes::AGENT_REVOKED | codes::KEY_INVALID)) =>
        {
            tracing::info!(
                agent_id = %own.config.agent_id, error = %e,
                "the hub no longer honours this machine's credentials; enrolling with the credential given"
            );
            attempt(opts, dir, &hubs, &facts, Sending::Given(given), trust).await
        }
        other => other,
    }
}

/// Which credential an enrollment is sent with.
enum Sending<'a> {
    /// The credentials in the config dir: the machine proves it is that agent.
    Own(&'a Credentials),
    /// What the command was given (token, API key, agent key), or nothing (a trust
    /// rule or the approval queue decides).
    Given(Option<&'a str>),
}

async fn host_facts(opts: &EnrollOptions, hub_url: &str) -> Result<HostFacts, AgentError> {
    let sources = opts
        .fact_sources
        .clone()
        .unwrap_or_else(FactSources::from_env);
    let hub_addr = host_port(hub_url);
    tokio::task::spawn_blocking(move || collect(&sources, hub_addr.as_deref()))
        .await
        .map_err(|e| AgentError::Internal(format!("collecting host facts: {e}")))
}

/// Revoke the identity `--force` replaces, at its own hub, with its own credentials.
/// True when it was revoked now, false when the hub had already ended it. When the
/// hub cannot be asked, nothing changes: the old credentials stay where they are.
async fn unenroll_old(dir: &ConfigDir, own: &Credentials) -> Result<bool, AgentError> {
    crate::revoke_at_hub(dir, own).await.map_err(|e| {
        AgentError::Usage(format!(
            "cannot unenroll the old identity {} ({}) at {}: {e}; nothing was changed and its credentials are left in place (`muster unenroll --force` drops them without the hub)",
            own.config.agent_name, own.config.agent_id, own.config.hub_url
        ))
    })
}

/// Whether `--ca-file`, `--ca-hash` or the token's pin names a CA other than the one
/// the config dir's credentials belong to: then the command is aimed at another hub.
fn names_another_ca(opts: &EnrollOptions, own: &Credentials) -> Result<bool, AgentError> {
    let mine = CaHash::of_pem(&own.ca_pem)?;
    Ok(match explicit_trust(opts)? {
        Some(Trust::CaPem(pem)) => CaHash::of_pem(&pem)? != mine,
        Some(Trust::Hash(hash)) => hash != mine,
        Some(Trust::Pin(pin)) => pin != mine.pin(),
        Some(Trust::Insecure) | None => false,
    })
}

/// One enrollment request (repeated while the hub is busy or the approval waits),
/// and the config dir written from its answer.
async fn attempt(
    opts: &EnrollOptions,
    dir: &ConfigDir,
    hubs: &[String],
    facts: &HostFacts,
    sending: Sending<'_>,
    trust: Trust,
) -> Result<EnrollReport, AgentError> {
    let (credential, own_id) = match sending {
        Sending::Own(c) => (
            Some(c.config.agent_key.as_str()),
            Some(c.config.agent_id.clone()),
        ),
        Sending::Given(g) => (g, None),
    };
    let pending = usable_pending(dir, hubs, own_id.as_deref())?;
    let (enrollment_id, key_pem, csr_pem) = match pending {
        Some(p) => {
            let csr = muster_ca::csr_for_key(&p.key_pem, &facts.hostname)?;
            (p.enrollment_id, p.key_pem, csr)
        }
        None => {
            let (key_pem, csr_pem) = muster_ca::new_key_and_csr(&facts.hostname)?;
            let p = PendingEnrollment {
                enrollment_id: uuid::Uuid::new_v4().simple().to_string(),
                hub_url: hubs.first().cloned().unwrap_or_default(),
                key_pem: key_pem.clone(),
                created_at: now_rfc3339(),
                agent_id: own_id,
            };
            dir.store_pending(&p)?;
            (p.enrollment_id, key_pem, csr_pem)
        }
    };

    let mut req = EnrollRequest {
        name: opts.name.clone(),
        hostname: facts.hostname.clone(),
        os_info: facts.os_info.clone(),
        arch: facts.arch.clone(),
        agent_version: muster_release::running_version(),
        ip: facts.ip.clone(),
        interfaces: facts.interfaces.clone(),
        packs: Vec::new(),
        labels: opts.labels.clone(),
        csr_pem,
        enrollment_id: Some(enrollment_id),
        protocol_version: Some(PROTOCOL_VERSION),
        keep_agent_key: opts.keep_agent_key,
    };
    // The hub that answered last is asked first on a retry.
    let mut answered = hubs.first().cloned().unwrap_or_default();
    let deadline = opts.wait.map(|w| std::time::Instant::now() + w);
    let mut busy_retries = 0;
    let outcome = loop {
        let order = crate::hubs::order(&answered, hubs, None);
        let sent = &req;
        let (from, result) = crate::hubs::first_answer_from(
            &order,
            |url| HubClient::new(url, trust.clone()),
            |client| async move { client.enroll(credential, sent).await },
        )
        .await;
        answered = from;
        match result {
            // The hub is busy (429) or its database briefly away (503): come back
            // at a random moment, with the same enrollment id: [`BUSY_TRIES`]
            // tries over a few minutes, or with `--wait`, for as long as the wait
            // lasts (a full approval queue frees up at the speed admins decide).
            Err(e @ ClientError::Api { .. })
                if matches!(e.code(), Some(codes::RATE_LIMITED | codes::UNAVAILABLE))
                    && match deadline {
                        None => busy_retries < BUSY_TRIES,
                        Some(d) => d > std::time::Instant::now(),
                    } =>
            {
                busy_retries += 1;
                let jitter = if busy_retries <= BUSY_TRIES {
                    busy_delay(busy_retries)
                } else {
                    Duration::from_secs(rand::random_range(15..=60))
                };
                // Never sooner than the hub asked; the jitter on top keeps a fleet
                // from coming back at one moment. A long wait (a full approval
                // queue says 60 s) is only worth it with `--wait`: without, say so
                // now rather than after minutes of silence.
                let asked = Duration::from_secs(e.retry_after().unwrap_or(0).min(300));
                if asked > Duration::from_secs(10) && deadline.is_none() {
                    break Err(e);
                }
                let delay = if asked.is_zero() {
                    jitter
                } else {
                    asked + jitter / 4
                };
                let delay = match deadline {
                    Some(d) => delay.min(d.saturating_duration_since(std::time::Instant::now())),
                    None => delay,
                };
                tracing::info!(?delay, "the hub is busy; retrying the enrollment");
                tokio::time::sleep(delay).await;
                req.csr_pem = muster_ca::csr_for_key(&key_pem, &facts.hostname)?;
            }
            // Every hub closed the connection unanswered: busy at its door (a full
            // handshake queue when a data centre enrolls at once, a restart). The
            // same quick tries, from a random moment; the enrollment id makes a
            // retry safe if an answer was lost on the way.
            Err(ClientError::Unreachable { dropped: true, .. })
                if busy_retries < BUSY_TRIES
                    && deadline.is_none_or(|d| d > std::time::Instant::now()) =>
            {
                busy_retries += 1;
                let delay = busy_delay(busy_retries);
                tracing::info!(
                    ?delay,
                    "the hub closed the connection unanswered; retrying the enrollment"
                );
                tokio::time::sleep(delay).await;
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
    let mut creds = check_answer(
        &resp,
        &answered,
        hubs,
        key_pem,
        credential.unwrap_or_default(),
    )?;
    // Written with the identity, in the same atomic step: a re-enrollment that does
    // not choose again keeps the choice made before. Choosing every pack this
    // version has is stored as "all" (`None`), so that packs a later version adds
    // are announced too.
    creds.config.packs = match &opts.packs {
        Some(packs)
            if crate::probes::packs()
                .iter()
                .all(|p| packs.iter().any(|c| c == p.name())) =>
        {
            None
        }
        Some(packs) => Some(packs.clone()),
        None => dir.load()?.and_then(|old| old.config.packs),
    };
    dir.store(&creds)?;
    dir.clear_pending()?;
    Ok(EnrollReport {
        agent_id: resp.agent_id,
        name: resp.name,
        hub_url: answered,
        config_dir: dir.path().to_path_buf(),
        created,
        cert_expires_at: resp.cert_expires_at,
        unenrolled: None,
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
/// Public for the fuzz harness.
#[doc(hidden)]
pub fn check_token_shape(token: &str) -> Result<(), AgentError> {
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
    if let Some(t) = explicit_trust(opts)? {
        return Ok(t);
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

/// What the command itself says identifies the hub: `--ca-file`, else `--ca-hash`,
/// else the pin in the token.
fn explicit_trust(opts: &EnrollOptions) -> Result<Option<Trust>, AgentError> {
    if let Some(file) = &opts.ca_file {
        let pem = std::fs::read_to_string(file).map_err(|e| {
            AgentError::Usage(format!("cannot read --ca-file {}: {e}", file.display()))
        })?;
        return Ok(Some(Trust::CaPem(pem)));
    }
    if let Some(h) = &opts.ca_hash {
        let hash =
            CaHash::parse(h).map_err(|e| AgentError::Usage(format!("invalid --ca-hash: {e}")))?;
        return Ok(Some(Trust::Hash(hash)));
    }
    Ok(opts
        .token
        .as_deref()
        .and_then(|t| t.split_once('.'))
        .map(|(_, pin)| Trust::Pin(pin.to_owned())))
}

/// The pending enrollment to retry, if it is for one of these hubs (one fleet:
/// they share the database that knows its id), recent, and was sent with the same
/// kind of credential (`own_id`: this dir's agent, or none).
fn usable_pending(
    dir: &ConfigDir,
    hubs: &[String],
    own_id: Option<&str>,
) -> Result<Option<PendingEnrollment>, AgentError> {
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
    Ok((fresh && hubs.contains(&p.hub_url) && p.agent_id.as_deref() == own_id).then_some(p))
}

/// Whether RFC 3339 time `a` is before `b`. A pending enrollment begun before the
/// credentials in the dir were written is one whose answer they are (the process
/// stopped before deleting it): nothing to resume. Unreadable times say no.
fn earlier(a: &str, b: &str) -> bool {
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    };
    matches!((parse(a), parse(b)), (Some(a), Some(b)) if a < b)
}

/// Check the hub's answer fits what we asked for before keeping it.
fn check_answer(
    resp: &EnrollResponse,
    hub_url: &str,
    hubs: &[String],
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
            // One hub: no list, so the file stays readable by older agents.
            hub_urls: if hubs.len() > 1 {
                hubs.to_vec()
            } else {
                Vec::new()
            },
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
            packs: None,
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
    fn busy_retries_spread_out_more_every_round_up_to_a_minute() {
        for n in 1..=super::BUSY_TRIES {
            let window = (5_000u64 << (n - 1).min(4)).min(60_000);
            for _ in 0..200 {
                let d = super::busy_delay(n).as_millis() as u64;
                assert!((500..=window).contains(&d), "try {n}: {d} ms");
            }
        }
        let last = (0..200)
            .map(|_| super::busy_delay(super::BUSY_TRIES).as_millis())
            .max()
            .unwrap();
        assert!(
            last > 30_000,
            "late tries spread over up to a minute: {last} ms"
        );
    }

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
    fn a_pending_enrollment_older_than_the_credentials_is_finished() {
        let (before, after) = ("2026-01-01T10:00:00.1Z", "2026-01-01T10:00:00.2Z");
        assert!(earlier(before, after));
        assert!(!earlier(after, before));
        assert!(!earlier(before, "not a time"));
    }

    #[test]
    fn host_port_of_urls() {
        assert_eq!(host_port("https://h:8443/x").as_deref(), Some("h:8443"));
        assert_eq!(host_port("https://h").as_deref(), Some("h:443"));
        assert_eq!(host_port("https://[::1]:9").as_deref(), Some("[::1]:9"));
    }
}
