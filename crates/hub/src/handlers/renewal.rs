//! `POST /api/v1/agent/renew`: certificate renewal and the clone detection it does
//! (SPEC §9).
//!
//! Every renewal advances the agent's generation; the agent stores it and presents
//! it in `hello` and at the next renewal. A copy of a config dir on a second machine
//! falls behind at the first renewal of either, and whichever presents a stale
//! generation gets the identity locked as `cloned` (sessions refused, audit entry,
//! evidence kept for `agents show`) until an admin revokes it.
//!
//! A renewal whose answer was lost is recognised, not punished: the agent retries
//! with the key pair it generated for it, which no copy can hold, and gets its
//! certificate again without the generation advancing.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_proto::{HostFacts, RenewRequest, RenewResponse, codes};
use muster_store::{AgentRecord, RenewWrite, StoreError};

use crate::audit::{self, AuditExt};
use crate::clock::{now_ms, rfc3339};
use crate::clones::{cloned_refusal, mark_cloned};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, CallingAgent, check_agent_cert};
use crate::queue;
use crate::state::AppState;
use crate::validate::csr_key;

/// Without a client certificate, a renewal must carry the agent's expired current
/// certificate and a signature by its key, within the grace window after expiry.
/// Whether an expired certificate's renewal may go ahead or must wait for an admin.
enum Expired {
    WithinGrace,
    PastGrace,
}

fn check_expired_proof(
    state: &AppState,
    agent: &AgentRecord,
    req: &RenewRequest,
) -> ApiResult<Expired> {
    use base64::Engine as _;
    let (Some(cert_pem), Some(proof)) = (&req.expired_cert_pem, &req.proof) else {
        return Err(ApiFailure::unauthorized(
            codes::UNAUTHORIZED,
            "renewal needs the agent's client certificate (or, once it expired, the certificate and a proof)",
        ));
    };
    let refused = |m: &str| ApiFailure::unauthorized(codes::KEY_INVALID, m);
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(proof)
        .map_err(|_| refused("the proof is not base64url"))?;
    let message = muster_ca::proof_message(&agent.id, &req.csr_pem);
    let info = state
        .ca
        .verify_proof(cert_pem, &message, &signature)
        .map_err(|_| refused("the proof does not verify against the expired certificate"))?;
    if info.subject_cn != agent.id || info.serial_hex != agent.cert_serial {
        return Err(refused("that certificate is not this agent's current one"));
    }
    let expired_ms = (info.not_after.unix_timestamp_nanos() / 1_000_000) as i64;
    let now = now_ms();
    if expired_ms > now {
        return Err(ApiFailure::conflict(
            codes::CERT_NOT_EXPIRED,
            "the certificate has not expired on the hub's clock: renew over TLS with it",
        ));
    }
    if now - expired_ms > state.renewal_grace.as_millis() as i64 {
        if !state.approval_queue {
            return Err(ApiFailure::forbidden(
                codes::RENEWAL_GRACE_EXPIRED,
                "the certificate expired longer ago than the hub's renewal grace; enroll this machine again",
            ));
        }
        return Ok(Expired::PastGrace);
    }
    Ok(Expired::WithinGrace)
}

/// `POST /api/v1/agent/renew`: a fresh certificate for a new key pair.
#[utoipa::path(post, path = "/api/v1/agent/renew", tag = "agent", summary = "Renew the agent's certificate", request_body = muster_proto::RenewRequest, responses((status = 200, description = "the new certificate", body = muster_proto::RenewResponse), (status = 202, description = "past the grace window: the renewal waits for an admin", body = muster_proto::PendingResponse), (status = 400, description = "invalid CSR or proof", body = muster_proto::ApiError), (status = 403, description = "the certificate or generation does not match; the agent may be cloned", body = muster_proto::ApiError), (status = 409, description = "a renewal for this agent is already being decided, or the certificate offered as expired has not expired on the hub's clock", body = muster_proto::ApiError)), security(("agent_key" = ["agent"], "agent_mtls" = [])))]
pub async fn renew(
    State(state): State<Arc<AppState>>,
    calling: CallingAgent,
    ApiJson(req): ApiJson<RenewRequest>,
) -> ApiResult<Response> {
    let CallingAgent {
        agent,
        cert,
        caller,
    } = calling;
    let source = caller.source;
    let past_grace = match &cert {
        Some(cert) => {
            check_agent_cert(&agent, cert)?;
            false
        }
        None => matches!(
            check_expired_proof(&state, &agent, &req)?,
            Expired::PastGrace
        ),
    };
    if agent.cloned_at.is_some() {
        return Err(cloned_refusal());
    }
    // Past the grace window the renewal waits for an admin, like any queued
    // request, bound to the new key the agent proved it holds.
    let mut complete_request = None;
    if past_grace {
        let key = csr_key(&req.csr_pem)?;
        let facts = HostFacts {
            hostname: agent.facts.hostname.clone(),
            os_info: agent.facts.os_info.clone(),
            arch: agent.facts.arch.clone(),
            ip: agent.facts.ip.clone(),
            interfaces: Vec::new(),
        };
        let secret = format!("renew:{}:{key}", agent.id);
        let record = queue::queue(
            &state,
            queue::Queued {
                kind: "renew",
                agent_id: Some(&agent.id),
                name: &agent.name,
                facts: &facts,
                labels: &Default::default(),
                source,
                // Only a known agent, proving its key, gets here: it is not counted
                // against the limits meant for anonymous requests.
                limits: None,
            },
            &secret,
            &key,
        )
        .await?;
        match queue::decide(record, &key)? {
            Ok(approved) => complete_request = Some(approved.id),
            Err(waiting) => return Ok((StatusCode::ACCEPTED, Json(waiting)).into_response()),
        }
    }
    let issued = state
        .ca
        .sign_agent_csr(&req.csr_pem, &agent.id, state.cert_validity)
        .map_err(|e| ApiFailure::from_csr("signing a renewal CSR failed", e))?;
    // A retry of the renewal that made the current certificate: same new key.
    let retry =
        req.generation + 1 == agent.generation && issued.public_key_sha256 == agent.cert_pubkey;
    if req.generation != agent.generation && !retry {
        return Err(mark_cloned(&state, &agent, source, req.generation, "renewal").await);
    }
    let now = now_ms();
    let expires = (issued.not_after.unix_timestamp_nanos() / 1_000_000) as i64;
    let write = RenewWrite {
        agent_id: agent.id.clone(),
        expected_generation: agent.generation,
        cert_serial: issued.serial_hex.clone(),
        cert_pubkey: issued.public_key_sha256.clone(),
        cert_expires_at: expires,
        advance: !retry,
        complete_request,
        audit: audit::entry(
            caller.actor(),
            "agent.renewed",
            format!("agent:{}", agent.id),
            source,
        )
        .at(now)
        .details(
            serde_json::json!({"generation": agent.generation + i64::from(!retry), "retry": retry}),
        ),
        now,
    };
    let renewed = match state.store.renew(&write).await {
        Ok(a) => a,
        // Another copy renewed between our read and our write: this one is stale.
        Err(StoreError::Conflict(_)) => {
            return Err(mark_cloned(&state, &agent, source, req.generation, "renewal").await);
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(agent_id = %agent.id, generation = renewed.generation, retry, "certificate renewed");
    Ok(Json(RenewResponse {
        cert_pem: issued.cert_pem,
        cert_expires_at: rfc3339(expires),
        generation: renewed.generation,
    })
    .into_response())
}
