//! Extractors every handler module shares: the JSON body with our error shape
//! ([`ApiJson`]), the authenticated caller with the client's real address
//! ([`Caller`]), the client address alone for public routes ([`ClientSource`]), and
//! the calling agent with its certificate check ([`CallingAgent`]).
//!
//! The client address is computed here, once, as `rules::client_source` defines it
//! (forwarded headers believed only from `--trusted-proxy`), so audit entries and
//! rate limits agree on who the client is.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum_server::tls::TlsInfo;
use muster_proto::codes;
use muster_store::{AgentRecord, AuditEntry};

use crate::audit;
use crate::clock::now_ms;
use crate::error::{ApiFailure, ApiResult};
use crate::principal::Principal;
use crate::rules::client_source;
use crate::state::AppState;

/// `Json<T>` whose rejections are our JSON errors (400, or 413 past the body limit).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiFailure::too_large())
            }
            Err(rejection) => Err(ApiFailure::bad_request(rejection.body_text())),
        }
    }
}

/// The client's address: the TCP peer, or what a trusted proxy forwarded.
#[derive(Debug, Clone, Copy)]
pub struct ClientSource(pub IpAddr);

impl FromRequestParts<Arc<AppState>> for ClientSource {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .ok_or_else(|| {
                ApiFailure::internal("request without a peer address", &"no ConnectInfo")
            })?;
        Ok(ClientSource(client_source(
            peer,
            &parts.headers,
            &state.trusted_proxies,
        )))
    }
}

/// The authenticated caller of a route that requires a role, and where the request
/// came from: what an audit entry needs to say who did it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub source: IpAddr,
}

impl Caller {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        self.principal.actor()
    }

    /// An audit entry for `action` on `target`, by this caller from its address.
    pub fn audit(&self, action: &str, target: impl Into<String>) -> AuditEntry {
        audit::entry(self.actor(), action, target, self.source)
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        // The role middleware puts the principal there; a route without one has no
        // caller to name.
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| {
                ApiFailure::unauthorized(codes::UNAUTHORIZED, "this endpoint needs a credential")
            })?;
        let ClientSource(source) = ClientSource::from_request_parts(parts, state).await?;
        Ok(Caller { principal, source })
    }
}

/// The agent calling an agent route, and the client certificate it presented on
/// this connection (DER), if any.
pub struct CallingAgent {
    pub agent: AgentRecord,
    pub cert: Option<Vec<u8>>,
    pub caller: Caller,
}

impl CallingAgent {
    /// The presented certificate, which must be the agent's current one; `why` says
    /// what needs it when none was presented.
    pub fn require_cert(&self, why: &str) -> ApiResult<()> {
        match &self.cert {
            Some(der) => check_agent_cert(&self.agent, der),
            None => Err(ApiFailure::unauthorized(codes::UNAUTHORIZED, why)),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for CallingAgent {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let Principal::Agent(agent) = &caller.principal else {
            return Err(ApiFailure::unauthorized(
                codes::UNAUTHORIZED,
                "not an agent",
            ));
        };
        let agent = (**agent).clone();
        let cert = parts
            .extensions
            .get::<Arc<TlsInfo>>()
            .and_then(|t| t.peer_certificates.first())
            .map(|c| c.to_vec());
        Ok(CallingAgent {
            agent,
            cert,
            caller,
        })
    }
}

/// The client certificate must be this agent's current one: the key and the
/// certificate name the same agent, and a replaced certificate is refused. (TLS
/// already checked that it chains to our CA and is within its validity.)
pub fn check_agent_cert(agent: &AgentRecord, der: &[u8]) -> ApiResult<()> {
    // After a renewal the previous certificate keeps working until it expires (the
    // agent may still hold a session opened with it).
    let previous_ok = agent.prev_cert_expires_at.is_some_and(|e| e > now_ms());
    let matches = muster_ca::cert_info_der(der).is_ok_and(|info| {
        info.subject_cn == agent.id
            && (info.serial_hex == agent.cert_serial
                || (previous_ok
                    && agent.prev_cert_serial.as_deref() == Some(info.serial_hex.as_str())))
    });
    if matches {
        Ok(())
    } else {
        Err(ApiFailure::unauthorized(
            codes::KEY_INVALID,
            "the client certificate is not this agent's current certificate",
        ))
    }
}
