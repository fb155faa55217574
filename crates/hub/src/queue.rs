//! The approval queue (SPEC §7, §9) as enrollment and renewal both use it: store a
//! request under a secret only its requester holds (unless one is stored already),
//! and say what a stored request means for the caller holding its key: approved,
//! waiting (202), or refused. Which requests go here is the callers' business
//! (`enroll/approval.rs` for machines without a credential, the renewal handler for
//! certificates past their grace).

use std::collections::BTreeMap;
use std::net::IpAddr;

use muster_proto::{ApprovalStatus, HostFacts, PendingResponse, codes};
use muster_store::{PendingRecord, QueueLimits};

use crate::audit::{self, AuditExt};
use crate::auth::by_hash;
use crate::clock::now_ms;
use crate::error::{ApiFailure, ApiResult};
use crate::rules::source_net;
use crate::state::AppState;

/// How often a waiting agent is told to ask again.
pub const POLL_AFTER_S: u64 = 5;

/// What a new queued request holds, besides the secret and key it is bound to.
pub struct Queued<'a> {
    /// `enroll` or `renew`.
    pub kind: &'a str,
    /// For renewals: the agent to renew.
    pub agent_id: Option<&'a str>,
    pub name: &'a str,
    pub facts: &'a HostFacts,
    /// Labels the agent gets once approved.
    pub labels: &'a BTreeMap<String, String>,
    pub source: IpAddr,
    /// How many requests may wait; `None` for those only an agent can make.
    pub limits: Option<QueueLimits>,
}

/// Queue a request under `secret` unless one exists; return what is stored.
pub async fn queue(
    state: &AppState,
    q: Queued<'_>,
    secret: &str,
    key: &str,
) -> ApiResult<PendingRecord> {
    let Queued {
        kind,
        agent_id,
        name,
        facts,
        labels,
        source,
        limits,
    } = q;
    let secret_hash = state.keys.hash_secret(secret);
    if let Some(existing) = by_hash(state, secret, |h| async move {
        state.store.find_request_by_secret(&h).await
    })
    .await?
    {
        return Ok(existing);
    }
    let now = now_ms();
    let record = PendingRecord {
        id: uuid::Uuid::new_v4().to_string(),
        secret_hash,
        kind: kind.to_owned(),
        agent_id: agent_id.map(str::to_owned),
        name: name.to_owned(),
        hostname: facts.hostname.clone(),
        source: source.to_string(),
        source_net: source_net(source),
        facts: bounded_facts(facts),
        labels: labels.clone(),
        public_key: key.to_owned(),
        status: "pending".to_owned(),
        reason: None,
        created_at: now,
        expires_at: now + state.pending_ttl.as_millis() as i64,
        decided_at: None,
        decided_by: None,
    };
    let audit = audit::entry(
        agent_id.map_or_else(|| "anonymous".to_owned(), |a| format!("agent:{a}")),
        format!("{kind}.queued"),
        format!("request:{}", record.id),
        source,
    )
    .at(now)
    .details(serde_json::json!({"name": name, "hostname": facts.hostname}));
    let stored = state.store.queue_request(&record, limits, &audit).await?;
    if stored.id == record.id {
        state.events.approvals_changed();
        tracing::info!(request_id = %record.id, kind, hostname = %facts.hostname, %source, "request queued for approval");
    }
    Ok(stored)
}

/// The most host facts a queued request keeps, as JSON. The body limit (64 KiB) would
/// let every anonymous request store eight times that; the admin deciding needs the
/// host's name, system and main interfaces, and the agent sends its full facts again
/// when it collects the approval, so nothing cut here is lost.
pub const MAX_QUEUED_FACTS: usize = 8 * 1024;

/// `facts` as JSON of at most [`MAX_QUEUED_FACTS`] bytes: the interfaces that fit, in
/// the order the agent reported them. Cutting rather than refusing, because a real
/// host with many interfaces (a container host) must still be able to ask. The rest
/// of the facts are short validated text, so they always fit.
fn bounded_facts(facts: &HostFacts) -> String {
    let mut kept = HostFacts {
        interfaces: Vec::new(),
        ..facts.clone()
    };
    let mut size = serde_json::to_string(&kept).map_or(0, |s| s.len());
    for interface in &facts.interfaces {
        // Its JSON and the comma before it.
        let add = serde_json::to_string(interface).map_or(usize::MAX, |s| s.len() + 1);
        if size.saturating_add(add) > MAX_QUEUED_FACTS {
            break;
        }
        size += add;
        kept.interfaces.push(interface.clone());
    }
    serde_json::to_string(&kept).unwrap_or_default()
}

/// What a stored request means for the caller holding `key`: approved (go on),
/// waiting (202), or a refusal.
pub fn decide(
    record: PendingRecord,
    key: &str,
) -> ApiResult<Result<PendingRecord, PendingResponse>> {
    if record.public_key != key {
        return Err(ApiFailure::conflict(
            codes::CONFLICT,
            "this request is bound to another key pair; start a fresh enrollment",
        ));
    }
    match record.status.as_str() {
        "approved" | "completed" => Ok(Ok(record)),
        "denied" => Err(ApiFailure::forbidden(
            codes::REQUEST_DENIED,
            format!(
                "an admin denied the request{}",
                record.reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
        )),
        _ if record.expires_at <= now_ms() => Err(ApiFailure::forbidden(
            codes::REQUEST_EXPIRED,
            "the request waited too long for approval; ask again",
        )),
        _ => Ok(Err(PendingResponse {
            status: ApprovalStatus::Pending,
            request_id: record.id,
            poll_after_s: POLL_AFTER_S,
        })),
    }
}
