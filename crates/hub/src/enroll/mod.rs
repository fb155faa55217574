//! Enrollment (SPEC §5, §6): from a request with some credential to an agent with a
//! certificate, an agent key and a row in the fleet.
//!
//! Each way of enrolling is a [`Method`] in its own file: it authorizes the request
//! and says what the resulting identity may carry. This module holds the rules every
//! method shares: validation, idempotent retries, name resolution, issuing, and the
//! single store call that commits it all. Nothing is written before that call, so a
//! refused or failed enrollment consumes no token use and leaves no trace but a log.

mod api_key;
pub mod approval;
mod existing;
mod refused;
mod token;
mod trust_rule;

pub(crate) use token::secret_part as token_secret;

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;
use axum::http::StatusCode;
use muster_proto::{
    AGENT_KEY_PREFIX, API_KEY_PREFIX, EnrollRequest, EnrollResponse, PendingResponse, TOKEN_PREFIX,
    codes,
};
use muster_store::{
    AgentFacts, AgentRecord, AgentState, EnrollMode, EnrollWrite, EnrollmentRecord,
    IssuedCredentials, StoreError,
};

use crate::audit::{self, AuditExt};
use crate::clock::{now_ms, rfc3339};
use crate::clones::cloned_refusal;
use crate::error::{ApiFailure, ApiResult};
use crate::metrics::Metrics;
use crate::secrets::random_body;
use crate::state::AppState;
use crate::validate::{MAX_LABELS, check_facts, check_label, check_text};

/// How long a completed enrollment can be retried with the same id.
const RETRY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Facts about the request that methods may check.
pub struct Context<'a> {
    pub hostname: &'a str,
    pub source: IpAddr,
}

/// What a method allows, once it has authorized a request.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// How enrollments and audit entries name the credential: `token:<id>`, ….
    pub credential: String,
    /// Token whose use the enrollment consumes when it succeeds.
    pub consume_token: Option<String>,
    /// Labels the credential gives every agent it enrolls; they win over the
    /// agent's own claims, which an admin did not vouch for.
    pub labels: BTreeMap<String, String>,
    /// May replace an agent of the same name while it is online (admin keys, tokens
    /// created with `--allow-replace`); others could silently take over a machine.
    pub may_replace_live: bool,
    /// Trust rule whose hourly allowance the enrollment consumes.
    pub consume_rule: Option<String>,
    /// An approved queued request this enrollment collects.
    pub complete_request: Option<String>,
    /// Set when the caller proved to be this agent: re-enroll it whatever the name.
    pub existing_agent: Option<AgentRecord>,
}

/// One way of enrolling. Implementations look up their credential when built and
/// decide in `authorize`; they write nothing.
#[async_trait]
pub trait Method: Send + Sync {
    /// The credential as recorded in enrollments and audit entries.
    fn credential(&self) -> String;

    /// Whether a completed enrollment made by `credential` may be retried through
    /// this method even though the credential may be used up by now.
    fn may_retry(&self) -> bool;

    async fn authorize(&self, cx: &Context<'_>) -> ApiResult<Grant>;
}

/// Pick the method from the bearer value's prefix and look its credential up.
async fn method_for(state: &AppState, bearer: Option<&str>) -> ApiResult<Box<dyn Method>> {
    match bearer {
        Some(v) if v.starts_with(TOKEN_PREFIX) => {
            Ok(Box::new(token::TokenMethod::lookup(state, v).await?))
        }
        Some(v) if v.starts_with(API_KEY_PREFIX) => {
            Ok(Box::new(api_key::ApiKeyMethod::lookup(state, v).await?))
        }
        Some(v) if v.starts_with(AGENT_KEY_PREFIX) => {
            Ok(Box::new(existing::ExistingMethod::lookup(state, v).await?))
        }
        Some(_) => Err(ApiFailure::unauthorized(
            codes::KEY_INVALID,
            "unrecognised credential: expected an enrollment token (met_…), an API key (mak_…) or an agent key (mag_…)",
        )),
        None => Err(ApiFailure::unauthorized(
            codes::UNAUTHORIZED,
            "enrollment needs a credential: an enrollment token, an API key, or existing agent credentials",
        )),
    }
}

/// What an enrollment request gets back.
pub enum Answer {
    /// 201 (new agent) or 200 (re-enrollment).
    Issued(StatusCode, EnrollResponse),
    /// 202: waiting in the approval queue.
    Pending(PendingResponse),
}

/// Handle one `POST /api/v1/enroll`.
pub async fn enroll(
    state: &AppState,
    source: IpAddr,
    bearer: Option<&str>,
    req: EnrollRequest,
) -> ApiResult<Answer> {
    // Bounded work: a burst beyond the slots is told to come back later, at a
    // random moment, instead of queueing without limit.
    let Ok(_slot) = state.enroll_slots.try_acquire() else {
        Metrics::inc(&state.metrics.enrollments_throttled);
        return Err(ApiFailure::busy());
    };
    let claimed = refused::Claimed::of(&req);
    let result = enroll_inner(state, source, bearer, req, None).await;
    match &result {
        Ok(_) => Metrics::inc(&state.metrics.enrollments_ok),
        Err(f) if f.status.is_client_error() => {
            tracing::info!(%source, code = f.code, "enrollment refused");
            Metrics::inc(&state.metrics.enrollments_refused);
            refused::audit(state, source, bearer, f, claimed).await;
        }
        Err(_) => Metrics::inc(&state.metrics.enrollments_failed),
    }
    result
}

/// `over_limit`: a trust rule matched but had used its hourly allowance, so the
/// rules are skipped and the request is queued with the rule's labels.
async fn enroll_inner(
    state: &AppState,
    source: IpAddr,
    bearer: Option<&str>,
    req: EnrollRequest,
    over_limit: Option<BTreeMap<String, String>>,
) -> ApiResult<Answer> {
    validate(&req)?;
    let rule = match bearer {
        None if over_limit.is_none() => trust_rule::matching(state, &req.hostname, source).await?,
        _ => None,
    };
    let queued_labels = over_limit.unwrap_or_default();
    let method: Box<dyn Method> = match (bearer, rule) {
        (None, Some(rule)) => Box::new(rule),
        (None, None) => match approval::lookup(state, source, &req, &queued_labels).await? {
            approval::Lookup::Approved(m) => m,
            approval::Lookup::Waiting(pending) => return Ok(Answer::Pending(pending)),
        },
        (Some(b), _) => match method_for(state, bearer).await {
            Ok(m) => m,
            // The answer to a re-enrollment with existing credentials was lost, and
            // the key it used is dead now. The enrollment id (a secret the machine
            // kept) and the key pair the first attempt was bound to still identify
            // the machine; `retry` checks both.
            Err(refusal)
                if b.starts_with(AGENT_KEY_PREFIX) && refusal.code == codes::KEY_INVALID =>
            {
                let prior = match &req.enrollment_id {
                    Some(eid) => state.store.find_enrollment(eid).await?,
                    None => None,
                };
                return match prior {
                    Some(p) if p.credential.starts_with("agent:") => {
                        let method = PriorCredential(p.credential.clone());
                        retry(state, &method, p, &req, source).await
                    }
                    _ => Err(refusal),
                };
            }
            Err(refusal) => return Err(refusal),
        },
    };
    // A retry of a completed enrollment is rare, so it is looked for only when the
    // normal path fails: its credential is used up, or its id is already recorded.
    // Nothing is written before then, so falling back is always safe.
    let cx = Context {
        hostname: &req.hostname,
        source,
    };
    let grant = match method.authorize(&cx).await {
        Ok(grant) => grant,
        Err(refusal) => return retry_or(state, method.as_ref(), &req, source, refusal).await,
    };
    // A machine proven to be an agent keeps that agent's name unless it asks for
    // another (SPEC §6 "renamed host"): a new hostname is a fact, not a new name.
    let name = match (
        req.name.clone().filter(|n| !n.is_empty()),
        &grant.existing_agent,
    ) {
        (Some(asked), _) => asked,
        (None, Some(agent)) => agent.name.clone(),
        (None, None) => req.hostname.clone(),
    };

    // A new machine's name is usually free, so it is first claimed without looking:
    // the store refuses a taken name (`NameInUse`), and only then is the live agent
    // holding it looked up and replaced. That saves a read on the common path.
    let mut target = match &grant.existing_agent {
        Some(agent) => {
            if agent.name != name
                && let Some(other) = state.store.find_live_agent_by_name(&name).await?
                && other.id != agent.id
            {
                return Err(name_in_use(&name));
            }
            Target::replace(agent)
        }
        None => Target::new_agent(),
    };
    let agent = loop {
        let write = enroll_write(state, &req, &grant, &name, &target, source)?;
        match state.store.enroll(&write.write).await {
            Ok(agent) => break Some((agent, write.issued)),
            Err(StoreError::NameInUse) if target.claimed_free_name => {
                match state.store.find_live_agent_by_name(&name).await? {
                    // Taking the name would hand a locked identity new credentials.
                    Some(live) if live.cloned_at.is_some() => return Err(cloned_refusal()),
                    Some(live) => {
                        if !grant.may_replace_live
                            && state.sessions.fleet_health(&live.id).is_some()
                        {
                            return Err(ApiFailure::conflict(
                                codes::NAME_IN_USE,
                                format!(
                                    "agent {name:?} is online; replacing it needs an admin key or a token created with --allow-replace"
                                ),
                            ));
                        }
                        target = Target::replace(&live);
                    }
                    // Freed meanwhile (revoked or removed): claim it again, once.
                    None => {
                        target = Target {
                            claimed_free_name: false,
                            ..Target::new_agent()
                        }
                    }
                }
            }
            // The rule admitted its hourly share already: this machine waits in the queue.
            Err(StoreError::RuleRateLimited) => break None,
            Err(
                e @ (StoreError::Conflict(_)
                | StoreError::TokenExhausted
                | StoreError::TokenExpired
                | StoreError::NameInUse),
            ) => return retry_or(state, method.as_ref(), &req, source, e.into()).await,
            Err(e) => return Err(e.into()),
        }
    };
    let Some((agent, issued)) = agent else {
        let labels = grant.labels.clone();
        return Box::pin(enroll_inner(state, source, None, req, Some(labels))).await;
    };
    let (mode, action) = (target.mode, target.action);
    tracing::info!(agent_id = %agent.id, name = %agent.name, %source, action, "agent enrolled");
    if mode == EnrollMode::Replace {
        state.sessions.kick(
            &agent.id,
            "the agent's credentials were replaced by a new enrollment",
        );
    }
    state.events.publish(crate::events::AgentNote::new(
        &agent,
        state.sessions.status_of(&agent),
        crate::events::Change::Enrolled,
    ));
    let status = if mode == EnrollMode::New {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(Answer::Issued(status, response(state, &agent, issued)))
}

/// Which agent an enrollment writes.
struct Target {
    mode: EnrollMode,
    agent_id: String,
    action: &'static str,
    /// A new agent whose name was not looked up first: if the store says it is taken,
    /// look up its holder and replace it instead.
    claimed_free_name: bool,
    /// The labels of the agent re-enrolled: they survive unless the credential sets
    /// them (SPEC §6), so a reimaged machine keeps what admins gave it.
    kept_labels: BTreeMap<String, String>,
}

impl Target {
    fn new_agent() -> Self {
        Target {
            mode: EnrollMode::New,
            agent_id: uuid::Uuid::new_v4().to_string(),
            action: "agent.enrolled",
            claimed_free_name: true,
            kept_labels: BTreeMap::new(),
        }
    }

    fn replace(agent: &AgentRecord) -> Self {
        Target {
            mode: EnrollMode::Replace,
            agent_id: agent.id.clone(),
            action: "agent.reenrolled",
            claimed_free_name: false,
            kept_labels: agent.facts.labels.clone(),
        }
    }
}

/// The store write for one attempt, and the credentials it commits.
struct Attempt {
    write: EnrollWrite,
    issued: Issued,
}

fn enroll_write(
    state: &AppState,
    req: &EnrollRequest,
    grant: &Grant,
    name: &str,
    target: &Target,
    source: IpAddr,
) -> ApiResult<Attempt> {
    let agent_id = &target.agent_id;
    // The certificate names the agent, so each attempt signs its own.
    let mut issued = issue(state, &req.csr_pem, agent_id)?;
    if req.keep_agent_key
        && let Some(existing) = &grant.existing_agent
        && let Some(hash) = &existing.key_hash
    {
        issued.creds.key_hash = hash.clone();
        issued.agent_key = String::new();
    }
    // Key by key: what the agent claims, under the labels it already has, under the
    // credential's (an admin vouched for those).
    let mut labels = req.labels.clone();
    labels.extend(target.kept_labels.clone());
    labels.extend(grant.labels.clone());
    let now = now_ms();
    let write = EnrollWrite {
        agent_id: agent_id.clone(),
        name: name.to_owned(),
        facts: facts(req, labels),
        creds: issued.creds.clone(),
        mode: target.mode,
        consume_token: grant.consume_token.clone(),
        consume_rule: grant.consume_rule.clone(),
        complete_request: grant.complete_request.clone(),
        enrollment: req.enrollment_id.as_ref().map(|eid| EnrollmentRecord {
            enrollment_id: eid.clone(),
            agent_id: agent_id.clone(),
            credential: grant.credential.clone(),
            public_key: issued.creds.cert_pubkey.clone(),
            created: target.mode == EnrollMode::New,
            created_at: now,
        }),
        audit: audit::entry(
            grant.credential.clone(),
            target.action,
            format!("agent:{agent_id}"),
            source,
        )
        .at(now)
        .details(serde_json::json!({"name": name, "hostname": req.hostname})),
        now,
    };
    Ok(Attempt { write, issued })
}

/// The credential of a completed enrollment, standing in for one that no longer
/// resolves (see `enroll_inner`): it only ever drives `retry`.
struct PriorCredential(String);

#[async_trait]
impl Method for PriorCredential {
    fn credential(&self) -> String {
        self.0.clone()
    }

    fn may_retry(&self) -> bool {
        true
    }

    async fn authorize(&self, _cx: &Context<'_>) -> ApiResult<Grant> {
        Err(ApiFailure::unauthorized(
            codes::KEY_INVALID,
            "the agent key is not valid",
        ))
    }
}

/// Continue as a retry when `req` carries the id of a completed enrollment, else
/// give the original refusal.
async fn retry_or(
    state: &AppState,
    method: &dyn Method,
    req: &EnrollRequest,
    source: IpAddr,
    refusal: ApiFailure,
) -> ApiResult<Answer> {
    let prior = match &req.enrollment_id {
        Some(eid) => state.store.find_enrollment(eid).await?,
        None => None,
    };
    match prior {
        Some(prior) => retry(state, method, prior, req, source).await,
        None => Err(refusal),
    }
}

/// A retry of an enrollment that completed: same agent, fresh agent key and
/// certificate (the first answer was lost, so its key was never received), no second
/// token use. Only the same credential with the same key pair may retry.
async fn retry(
    state: &AppState,
    method: &dyn Method,
    prior: EnrollmentRecord,
    req: &EnrollRequest,
    source: IpAddr,
) -> ApiResult<Answer> {
    let conflict = || {
        ApiFailure::conflict(
            codes::CONFLICT,
            "this enrollment id belongs to another enrollment; start a fresh enrollment",
        )
    };
    let now = now_ms();
    if method.credential() != prior.credential
        || !method.may_retry()
        || now - prior.created_at > RETRY_WINDOW_MS
    {
        return Err(conflict());
    }
    let agent = state
        .store
        .get_agent(&prior.agent_id)
        .await?
        .filter(|a| a.state == AgentState::Active)
        .ok_or_else(|| {
            ApiFailure::forbidden(
                codes::AGENT_REVOKED,
                "the agent this enrollment created was revoked",
            )
        })?;
    if agent.cloned_at.is_some() {
        return Err(cloned_refusal());
    }
    let issued = issue(state, &req.csr_pem, &agent.id)?;
    if issued.creds.cert_pubkey != prior.public_key {
        return Err(conflict());
    }
    let write = EnrollWrite {
        agent_id: agent.id.clone(),
        name: agent.name.clone(),
        facts: facts(req, agent.facts.labels.clone()),
        creds: issued.creds.clone(),
        mode: EnrollMode::Replace,
        consume_token: None,
        consume_rule: None,
        complete_request: None,
        enrollment: None,
        audit: audit::entry(
            prior.credential.clone(),
            "agent.enrollment_retried",
            format!("agent:{}", agent.id),
            source,
        )
        .at(now)
        .details(serde_json::json!({"enrollment_id": prior.enrollment_id})),
        now,
    };
    let agent = state.store.enroll(&write).await?;
    let status = if prior.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(Answer::Issued(status, response(state, &agent, issued)))
}

struct Issued {
    creds: IssuedCredentials,
    agent_key: String,
    cert_pem: String,
}

fn issue(state: &AppState, csr_pem: &str, agent_id: &str) -> ApiResult<Issued> {
    let cert = state
        .ca
        .sign_agent_csr(csr_pem, agent_id, state.cert_validity)
        .map_err(|e| ApiFailure::from_csr("signing a CSR failed", e))?;
    let agent_key = format!("{AGENT_KEY_PREFIX}{}", random_body());
    Ok(Issued {
        creds: IssuedCredentials {
            key_hash: state.keys.hash_secret(&agent_key),
            cert_serial: cert.serial_hex,
            cert_pubkey: cert.public_key_sha256,
            cert_expires_at: (cert.not_after.unix_timestamp_nanos() / 1_000_000) as i64,
        },
        agent_key,
        cert_pem: cert.cert_pem,
    })
}

fn response(state: &AppState, agent: &AgentRecord, issued: Issued) -> EnrollResponse {
    EnrollResponse {
        agent_id: agent.id.clone(),
        name: agent.name.clone(),
        agent_key: issued.agent_key,
        cert_pem: issued.cert_pem,
        ca_pem: state.ca.cert_pem().to_owned(),
        cert_expires_at: rfc3339(issued.creds.cert_expires_at),
        hub_url: state.hub_url.clone(),
        heartbeat_interval_s: state.heartbeat_interval.as_secs(),
        generation: agent.generation,
    }
}

fn facts(req: &EnrollRequest, labels: BTreeMap<String, String>) -> AgentFacts {
    AgentFacts {
        hostname: req.hostname.clone(),
        ip: req.ip.clone(),
        os_info: req.os_info.clone(),
        arch: req.arch.clone(),
        agent_version: req.agent_version.clone(),
        labels,
        packs: req.packs.clone(),
        interfaces: req.interfaces.clone(),
    }
}

fn name_in_use(name: &str) -> ApiFailure {
    ApiFailure::conflict(
        codes::NAME_IN_USE,
        format!("another live agent is named {name:?}"),
    )
}

/// Reject what no method could accept, before any lookup.
pub(crate) fn validate(req: &EnrollRequest) -> ApiResult<()> {
    if let Some(v) = req.protocol_version
        && v != muster_proto::PROTOCOL_VERSION
    {
        return Err(ApiFailure::bad_request(format!(
            "this hub speaks protocol {}, the agent {v}: upgrade the older side",
            muster_proto::PROTOCOL_VERSION
        )));
    }
    check_text("hostname", &req.hostname, false)?;
    if let Some(name) = &req.name {
        check_text("name", name, true)?;
    }
    check_facts(
        &[
            ("os_info", &req.os_info),
            ("arch", &req.arch),
            ("agent_version", &req.agent_version),
        ],
        &req.ip,
        &req.interfaces,
    )?;
    if req.labels.len() > MAX_LABELS || req.packs.len() > 64 || req.interfaces.len() > 256 {
        return Err(ApiFailure::bad_request(
            "too many labels, packs or interfaces",
        ));
    }
    for (k, v) in &req.labels {
        check_label(k, v)?;
    }
    for p in &req.packs {
        check_text("pack", p, false)?;
    }
    if let Some(eid) = &req.enrollment_id {
        let ok = (16..=64).contains(&eid.len())
            && eid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(ApiFailure::bad_request(
                "enrollment_id must be 16 to 64 characters of [A-Za-z0-9_-]",
            ));
        }
    }
    if req.csr_pem.len() > 16 * 1024 {
        return Err(ApiFailure::invalid_csr("the CSR is larger than 16 KiB"));
    }
    Ok(())
}
