//! Refused enrollments in the audit log (SPEC §11): `agent.enroll_refused`, outcome
//! `denied`, details `{code, hostname, name}`, by the credential that was refused, or
//! `anonymous` when there was none (or it named nothing this hub knows).
//!
//! Written within the hub's refusal budget (`refusals.rs`), so a flood of bad
//! requests leaves its first entries and a count, not a log as big as the flood. A
//! 429 is not recorded at all: it is the hub shedding load, not judging a request.

use std::net::IpAddr;

use axum::http::StatusCode;
use muster_proto::{AGENT_KEY_PREFIX, EnrollRequest};

use crate::audit::{self, AuditExt};
use crate::auth::agent_by_key;
use crate::error::ApiFailure;
use crate::secrets::display_prefix;
use crate::state::AppState;

/// Longest hostname or name recorded: what validation allows. A refused request may
/// have failed validation, so its claims are cut and cleaned before they are kept.
const MAX_CLAIM: usize = 253;

/// What the refused request claimed to be, taken before the request is consumed.
pub struct Claimed {
    hostname: String,
    name: String,
}

impl Claimed {
    pub fn of(req: &EnrollRequest) -> Self {
        let name = req.name.as_deref().filter(|n| !n.is_empty());
        Claimed {
            hostname: clean(&req.hostname),
            name: clean(name.unwrap_or(&req.hostname)),
        }
    }
}

/// Printable characters only, at most [`MAX_CLAIM`] of them.
fn clean(claim: &str) -> String {
    claim
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_CLAIM)
        .collect()
}

/// Record that an enrollment from `source` with `bearer` was refused with `refusal`.
pub async fn audit(
    state: &AppState,
    source: IpAddr,
    bearer: Option<&str>,
    refusal: &ApiFailure,
    claimed: Claimed,
) {
    if refusal.status == StatusCode::TOO_MANY_REQUESTS {
        return;
    }
    let code = refusal.code;
    let make = || async move {
        let (actor, unknown) = actor(state, bearer).await;
        let mut details = serde_json::json!({
            "code": code,
            "hostname": claimed.hostname,
            "name": claimed.name,
        });
        // A credential that names nothing is shown as tokens and keys are listed (its
        // first characters), so a mistyped one can be recognised.
        if let Some(prefix) = unknown {
            details["credential_prefix"] = prefix.into();
        }
        audit::entry(
            actor,
            "agent.enroll_refused",
            format!("host:{}", claimed.hostname),
            source,
        )
        .outcome("denied")
        .details(details)
    };
    state
        .refusals
        .record(&*state.store, &state.metrics, source, make)
        .await;
}

/// How the log names the refused caller: its credential as enrollments name it,
/// else `anonymous` (and the display prefix of a credential that resolved to
/// nothing).
async fn actor(state: &AppState, bearer: Option<&str>) -> (String, Option<String>) {
    let Some(value) = bearer else {
        return ("anonymous".to_owned(), None);
    };
    if let Ok(method) = super::method_for(state, Some(value)).await {
        return (method.credential(), None);
    }
    // A revoked agent's key no longer enrolls, but still names the agent.
    if value.starts_with(AGENT_KEY_PREFIX)
        && let Ok(Some(agent)) = agent_by_key(state, value).await
    {
        return (format!("agent:{}", agent.id), None);
    }
    ("anonymous".to_owned(), Some(display_prefix(value)))
}
