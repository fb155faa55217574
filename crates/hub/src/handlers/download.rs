//! `GET /api/v1/agent/download/{version}/{os}/{arch}` (SPEC §10), minimal: the
//! published binary of one release, without credentials (binaries are not
//! secrets; agents verify what they download against their own key). A stand-in
//! for the full release-serving routes; the path is only ever resolved through
//! `ReleaseDir::find`, which checks every component.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiFailure, ApiResult};
use crate::state::AppState;

pub async fn download(
    State(state): State<Arc<AppState>>,
    Path((version, os, arch)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let missing = || ApiFailure::not_found(format!("no release {version} for {os}/{arch}"));
    let release = state
        .releases
        .find(&version, &os, &arch)
        .map_err(|_| missing())?
        .ok_or_else(missing)?;
    let bytes = tokio::fs::read(&release.binary)
        .await
        .map_err(|e| ApiFailure::internal("reading a published release", &e))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::HeaderName::from_static("x-muster-sha256"),
                release.manifest.sha256,
            ),
        ],
        bytes,
    )
        .into_response())
}
