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
