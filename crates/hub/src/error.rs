//! The hub's API errors and their one mapping to HTTP.
//!
//! Handlers return [`ApiFailure`]; this module alone decides status codes and the
//! `{"error":{"code","message"}}` body. Internal failures are logged here with their
//! detail and reach the client only as a generic message: no SQL, no paths.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
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
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
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
        let mut busy = ApiFailure::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::RATE_LIMITED,
            "the hub is busy enrolling other machines; retry shortly",
        );
        busy.retry_after = Some(rand::random_range(1..=5));
        busy
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
            StoreError::RuleRateLimited => {
                let mut f = ApiFailure::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    codes::RATE_LIMITED,
                    "too many enrollments through this trust rule this hour",
                );
                f.retry_after = Some(60);
                f
            }
            StoreError::QueueFull { per_source } => {
                let mut f = ApiFailure::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    codes::RATE_LIMITED,
                    if per_source {
                        "too many enrollments from this address are waiting for approval; retry later, or enroll with a token"
                    } else {
                        "the approval queue is full; retry later, or enroll with a token"
                    },
                );
                // Places free up at the speed admins decide, not in seconds.
                f.retry_after = Some(60);
                f
            }
            StoreError::Conflict(m) => ApiFailure::new(StatusCode::CONFLICT, codes::CONFLICT, m),
            StoreError::Busy => ApiFailure::busy(),
            ref err if err.is_unavailable() => {
                tracing::error!(error = %err, "database unavailable");
                let mut f = ApiFailure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::UNAVAILABLE,
                    "the hub's database is unavailable; retry shortly",
                );
                f.retry_after = Some(5);
                f
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
        response
    }
}

pub type ApiResult<T> = Result<T, ApiFailure>;
