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
use axum::body::Bytes;
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
/// Every request body of the API is a JSON object: serde would also fill a struct
/// from an array of its fields in order (`[null, null]` created a token), a form no
/// client sends and the published schemas do not allow, so it is refused.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = match Bytes::from_request(Request::from_parts(parts.clone(), body), state).await
        {
            Ok(b) => b,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiFailure::too_large());
            }
            Err(rejection) => return Err(ApiFailure::bad_request(rejection.body_text())),
        };
        if bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|first| *first != b'{')
        {
            return Err(ApiFailure::bad_request("the body must be a JSON object"));
        }
        let bytes = integral_numbers(bytes);
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiFailure::too_large())
            }
            Err(rejection) => Err(ApiFailure::bad_request(rejection.body_text())),
        }
    }
}

/// The body with every number that has no fraction (`5.0`, `1e3`) written as an
/// integer. JSON Schema's `integer`, which the published API uses, includes them,
/// and clients whose numbers are all floats send them; serde would refuse them for
/// integer fields. A body that is not JSON is left for the parser to refuse.
fn integral_numbers(bytes: Bytes) -> Bytes {
    fn walk(v: &mut serde_json::Value) -> bool {
        match v {
            serde_json::Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                let whole = if f.fract() != 0.0 {
                    None
                } else if f >= 0.0 && f < u64::MAX as f64 {
                    Some(serde_json::Value::from(f as u64))
                } else if f < 0.0 && f >= i64::MIN as f64 {
                    Some(serde_json::Value::from(f as i64))
                } else {
                    None
                };
                whole.map(|w| *v = w).is_some()
            }
            serde_json::Value::Array(items) => items.iter_mut().fold(false, |c, i| walk(i) | c),
            serde_json::Value::Object(map) => map.values_mut().fold(false, |c, i| walk(i) | c),
            _ => false,
        }
    }
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return bytes;
    };
    if !walk(&mut value) {
        return bytes;
    }
    serde_json::to_vec(&value).map(Bytes::from).unwrap_or(bytes)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod json_tests {
    use super::*;

    fn post(body: &'static str) -> Request {
        Request::builder()
            .method("POST")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap()
    }

    #[tokio::test]
    async fn a_body_that_is_not_a_json_object_is_refused() {
        for body in ["[null, null]", " [] ", "null", "5", "\"x\""] {
            let got =
                ApiJson::<muster_proto::CreateTokenRequest>::from_request(post(body), &()).await;
            let err = got.err().unwrap();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{body}");
        }
        let ok = ApiJson::<muster_proto::CreateTokenRequest>::from_request(
            post(r#" {"max_uses": 2.0, "ttl_s": 6e1}"#),
            &(),
        )
        .await;
        let ApiJson(req) = ok.map_err(|e| e.message).unwrap();
        assert_eq!((req.max_uses, req.ttl_s), (Some(2), Some(60)));
    }

    #[test]
    fn only_numbers_without_a_fraction_become_integers() {
        let out = integral_numbers(Bytes::from_static(
            br#"{"a":5.0,"b":[1e3,-2.0],"c":1.5,"d":"7.0","e":1e300}"#,
        ));
        assert_eq!(
            &out[..],
            br#"{"a":5,"b":[1000,-2],"c":1.5,"d":"7.0","e":1e+300}"#
        );
        let same = Bytes::from_static(b"{\"a\":5}");
        assert_eq!(integral_numbers(same.clone()), same);
        assert_eq!(
            integral_numbers(Bytes::from_static(b"{")),
            Bytes::from_static(b"{")
        );
    }
}
