//! Enrollment with no credential (SPEC §7): the request waits in the approval
//! queue until an admin approves or denies it.
//!
//! The request is bound to two things only the requester holds: its enrollment id
//! (a random secret it keeps until enrollment completes; the hub stores its keyed
//! hash) and the key pair of its CSR. Polling repeats the enrollment with both;
//! nobody else can collect the credentials an approval releases.

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;
use muster_proto::{EnrollRequest, HostFacts, PendingResponse, codes};
use muster_store::PendingRecord;

use super::{Context, Grant, Method};
use crate::error::{ApiFailure, ApiResult};
use crate::queue::{Queued, decide, queue};
use crate::state::AppState;
use crate::validate::csr_key;

/// The outcome of looking up (or creating) a queued request.
pub enum Lookup {
    /// An admin approved it: enroll now, collecting the approval.
    Approved(Box<ApprovalMethod>),
    /// Still waiting: answer 202.
    Waiting(PendingResponse),
}

pub struct ApprovalMethod {
    request: PendingRecord,
}

#[async_trait]
impl Method for ApprovalMethod {
    fn credential(&self) -> String {
        format!("approval:{}", self.request.id)
    }

    fn may_retry(&self) -> bool {
        true
    }

    async fn authorize(&self, _cx: &Context<'_>) -> ApiResult<Grant> {
        Ok(Grant {
            credential: self.credential(),
            complete_request: Some(self.request.id.clone()),
            // What the credential that queued it would have given (a trust rule over
            // its hourly allowance); the admin approved the request with them.
            labels: self.request.labels.clone(),
            ..Grant::default()
        })
    }
}

/// Find the caller's queued request, or queue a new one carrying `labels` (those of a
/// trust rule that matched but was over its hourly allowance; else none).
pub async fn lookup(
    state: &AppState,
    source: IpAddr,
    req: &EnrollRequest,
    labels: &BTreeMap<String, String>,
) -> ApiResult<Lookup> {
    if !state.approval_queue {
        return Err(ApiFailure::unauthorized(
            codes::UNAUTHORIZED,
            "enrollment needs a credential (an enrollment token or an API key); this hub's approval queue is off",
        ));
    }
    let Some(eid) = &req.enrollment_id else {
        return Err(ApiFailure::bad_request(
            "an enrollment without a credential needs an enrollment_id (muster enroll sends one)",
        ));
    };
    let key = csr_key(&req.csr_pem)?;
    let facts = HostFacts {
        hostname: req.hostname.clone(),
        os_info: req.os_info.clone(),
        arch: req.arch.clone(),
        ip: req.ip.clone(),
        interfaces: req.interfaces.clone(),
    };
    let name = req
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| req.hostname.clone());
    let record = queue(
        state,
        Queued {
            kind: "enroll",
            agent_id: None,
            name: &name,
            facts: &facts,
            labels,
            source,
            // Anyone can ask: such requests count against the queue's limits.
            limits: Some(state.queue_limits),
        },
        &format!("enroll:{eid}"),
        &key,
    )
    .await?;
    decide(record, &key).map(|r| match r {
        Ok(request) => Lookup::Approved(Box::new(ApprovalMethod { request })),
        Err(waiting) => Lookup::Waiting(waiting),
    })
}
