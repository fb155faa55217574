//! The hub's API errors and their one mapping to HTTP.
//!
//! Handlers return [`ApiFailure`]; this module alone decides status codes and the
//! `{"error":{"code","message"}}` body. Internal failures are logged here with their
//! detail and reach the client only as a generic message: no SQL, no paths.
//! Refusals made before or around our handlers (axum's extractor rejections, 405)
//! are rewritten into the same shape by [`json_errors`], so every error a client
//! gets from a route is JSON.

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use muster_proto::{ApiError, codes};
use muster_store::StoreError;

/// A refusal or failure to send to an API client.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiFailure {
    /// Private: everything outside this module names a kind of failure through
    /// the constructors below, and only this module pairs it with a status.
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::INVALID_REQUEST, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, message)
    }

    /// 404 with a more precise code than `not_found` (e.g. `no_release`).
    pub fn not_found_code(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 409: the request conflicts with the state of a record.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 429 `rate_limited`: this caller asked too often; come back after `retry_after_s`.
    pub fn rate_limited(message: impl Into<String>, retry_after_s: u64) -> Self {
        let mut f = Self::new(StatusCode::TOO_MANY_REQUESTS, codes::RATE_LIMITED, message);
        f.retry_after = Some(retry_after_s);
        f
    }

    /// 503 `unavailable`: the hub cannot answer now (busy, database down); retry
    /// after `retry_after_s`, if given.
    pub fn unavailable(message: impl Into<String>, retry_after_s: Option<u64>) -> Self {
        let mut f = Self::new(StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE, message);
        f.retry_after = retry_after_s;
        f
    }

    /// 400 `invalid_csr`: the CSR cannot be used.
    pub fn invalid_csr(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::INVALID_CSR, message)
    }

    /// A CA failure on a CSR the client sent: 400 `invalid_csr` when the CSR is at
    /// fault, else an internal failure (logged with `context`).
    pub fn from_csr(context: &str, e: muster_ca::CaError) -> Self {
        match e {
            muster_ca::CaError::InvalidCsr(m) | muster_ca::CaError::UnsupportedKey(m) => {
                Self::invalid_csr(m)
            }
            other => Self::internal(context, &other),
        }
    }

    /// 413: the body is over the hub's limit.
    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than {} KiB",
                muster_proto::MAX_BODY_BYTES / 1024
            ),
        )
    }

    /// 413: the body is over a route's own limit of `limit` bytes.
    pub fn too_large_than(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {} MiB", limit / (1024 * 1024)),
        )
    }

    /// 408: the body did not arrive within `--request-body-timeout`.
    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            codes::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )
    }

    /// Our error for a refusal that came without one (an extractor's rejection, a
    /// 405): the code follows the status, the message is the refusal's own text
    /// when it is short plain text (it describes the request, never the hub).
    pub fn for_status(status: StatusCode, text: &str) -> Self {
        let code = match status {
            StatusCode::UNAUTHORIZED => codes::UNAUTHORIZED,
            StatusCode::FORBIDDEN => codes::FORBIDDEN,
            StatusCode::NOT_FOUND => codes::NOT_FOUND,
            StatusCode::METHOD_NOT_ALLOWED => codes::METHOD_NOT_ALLOWED,
            StatusCode::REQUEST_TIMEOUT => codes::REQUEST_TIMEOUT,
            StatusCode::CONFLICT => codes::CONFLICT,
            StatusCode::PAYLOAD_TOO_LARGE => codes::PAYLOAD_TOO_LARGE,
            StatusCode::TOO_MANY_REQUESTS => codes::RATE_LIMITED,
            StatusCode::SERVICE_UNAVAILABLE => codes::UNAVAILABLE,
            s if s.is_server_error() => codes::INTERNAL,
            _ => codes::INVALID_REQUEST,
        };
        let text = text.trim();
        let message = if status.is_client_error()
            && !text.is_empty()
            && text.len() <= 512
            && !text.chars().any(char::is_control)
        {
            text.to_owned()
        } else if status == StatusCode::METHOD_NOT_ALLOWED {
            "this path does not take that method; see the Allow header".to_owned()
        } else {
            status
                .canonical_reason()
                .unwrap_or("request refused")
                .to_lowercase()
        };
        Self::new(status, code, message)
    }

    /// A failure whose detail must stay in the hub's log.
    pub fn internal(context: &str, detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(%detail, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "internal error; see the hub log",
        )
    }
}

impl ApiFailure {
    /// 429 for an enrollment burst beyond what the hub takes at once: come back at a
    /// random moment in the next few seconds, so the burst spreads out.
    pub fn busy() -> Self {
        ApiFailure::rate_limited(
            "the hub is busy enrolling other machines; retry shortly",
            rand::random_range(1..=5),
        )
    }
}

impl From<StoreError> for ApiFailure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TokenExhausted => ApiFailure::unauthorized(
                codes::TOKEN_EXHAUSTED,
                "the enrollment token has no uses left",
            ),
            StoreError::TokenExpired => {
                ApiFailure::unauthorized(codes::TOKEN_EXPIRED, "the enrollment token has expired")
            }
            StoreError::TokenRevoked => {
                ApiFailure::unauthorized(codes::TOKEN_REVOKED, "the enrollment token was revoked")
            }
            StoreError::TokenUnknown => {
                ApiFailure::unauthorized(codes::TOKEN_UNKNOWN, "unknown enrollment token")
            }
            StoreError::NameInUse => ApiFailure::new(
                StatusCode::CONFLICT,
                codes::NAME_IN_USE,
                "another live agent holds that name",
            ),
            StoreError::NotFound => ApiFailure::not_found("no such record"),
            StoreError::RuleRateLimited => ApiFailure::rate_limited(
                "too many enrollments through this trust rule this hour",
                60,
            ),
            // Places free up at the speed admins decide, not in seconds.
            StoreError::QueueFull { per_source } => ApiFailure::rate_limited(
                if per_source {
                    "too many enrollments from this address are waiting for approval; retry later, or enroll with a token"
                } else {
                    "the approval queue is full; retry later, or enroll with a token"
                },
                60,
            ),
            StoreError::Conflict(m) => ApiFailure::new(StatusCode::CONFLICT, codes::CONFLICT, m),
            StoreError::Busy => ApiFailure::busy(),
            // Found by the disk-full chaos drill (scripts/chaos): this was a 500. The
            // write changed nothing and succeeds once there is room, so it is 503 with
            // Retry-After (agents back off and retry by themselves) and a message the
            // operator can act on. Before `is_unavailable`, which also covers ENOSPC.
            ref err if err.is_disk_full() => {
                tracing::error!(error = %err, "the database's disk is full");
                ApiFailure::unavailable(
                    "the hub's disk is full, so it cannot store this change; retry once space is freed",
                    Some(30),
                )
            }
            ref err if err.is_unavailable() => {
                tracing::error!(error = %err, "database unavailable");
                ApiFailure::unavailable("the hub's database is unavailable; retry shortly", Some(5))
            }
            other => ApiFailure::internal("store operation failed", &other),
        }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(ApiError::new(self.code, self.message))).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        // RFC 9110 §15.5.2: a 401 names the scheme that would work. MCP clients
        // read it to tell "bad credential" from other failures.
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiFailure>;

/// Longest plain-text refusal [`json_errors`] reads to reuse as the message.
const REFUSAL_TEXT_MAX: usize = 4096;

/// Middleware: an error response that is not JSON (axum's rejections of a query
/// string, a path, a WebSocket upgrade; 405 from the router) becomes our JSON error
/// with the same status, keeping headers such as `Allow`.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, REFUSAL_TEXT_MAX)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let ours = ApiFailure::for_status(status, &text).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    let (ours_parts, ours_body) = ours.into_parts();
    parts.headers.extend(ours_parts.headers);
    Response::from_parts(parts, ours_body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_401_names_the_bearer_scheme_and_others_do_not() {
        let r = ApiFailure::unauthorized(codes::KEY_INVALID, "invalid API key").into_response();
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let r = ApiFailure::forbidden(codes::FORBIDDEN, "no").into_response();
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
