//! `POST /api/v1/enroll` (SPEC §5–§7): parse, hand to the enrollment rules in
//! `enroll/`, render 201/200 or 202.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use muster_proto::EnrollRequest;

use crate::auth::bearer;
use crate::enroll::{self, Answer};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ClientSource};
use crate::state::AppState;

#[utoipa::path(post, path = "/api/v1/enroll", tag = "enrollment", summary = "Enroll a machine (token, API key, trust rule, approval or existing credentials in Authorization)", request_body = muster_proto::EnrollRequest, responses((status = 201, description = "a new agent: its identity", body = muster_proto::EnrollResponse), (status = 200, description = "the same machine enrolled again: its renewed identity", body = muster_proto::EnrollResponse), (status = 202, description = "the request waits for an admin", body = muster_proto::PendingResponse), (status = 400, description = "invalid request or CSR", body = muster_proto::ApiError), (status = 401, description = "the credential is unknown, expired, revoked or used up", body = muster_proto::ApiError), (status = 403, description = "the hostname or source address is not allowed", body = muster_proto::ApiError), (status = 409, description = "the name is in use, or the request conflicts with an earlier one", body = muster_proto::ApiError), (status = 429, description = "the hub is busy, or a trust rule or the queue is full; see Retry-After", body = muster_proto::ApiError)))]
pub async fn enroll(
    State(state): State<Arc<AppState>>,
    ClientSource(source): ClientSource,
    headers: HeaderMap,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(
        match enroll::enroll(&state, source, bearer(&headers), req).await? {
            Answer::Issued(status, body) => (status, Json(body)).into_response(),
            Answer::Pending(pending) => (StatusCode::ACCEPTED, Json(pending)).into_response(),
        },
    )
}
