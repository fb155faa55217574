//! `GET /bootstrap`: the installer script, with this hub's URL and CA written in
//! (SPEC §10). Public: it holds nothing secret, and what it installs is verified.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::{ApiFailure, ApiResult};
use crate::install::{powershell_script, sh_script};
use crate::state::AppState;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BootstrapQuery {
    /// `windows` for the PowerShell script; any other supported OS, or none, for sh.
    #[param(pattern = "^(linux|macos|freebsd|netbsd|openbsd|illumos|windows)$")]
    os: Option<String>,
}

#[utoipa::path(get, path = "/bootstrap", tag = "install", summary = "The installer script with this hub's URL and CA written in", params(BootstrapQuery), responses((status = 200, description = "the POSIX sh script, or the PowerShell script (text/plain) with os=windows", content((String = "text/x-shellscript"), (String = "text/plain"))), (status = 400, description = "unknown os", body = muster_proto::ApiError)))]
pub async fn bootstrap(
    State(state): State<Arc<AppState>>,
    Query(q): Query<BootstrapQuery>,
) -> ApiResult<Response> {
    let hub = state.hub_identity();
    let (content_type, script) = match q.os.as_deref() {
        None | Some("linux" | "macos" | "freebsd" | "netbsd" | "openbsd" | "illumos") => (
            "text/x-shellscript; charset=utf-8",
            sh_script(&hub.as_ref()),
        ),
        Some("windows") => (
            "text/plain; charset=utf-8",
            powershell_script(&hub.as_ref()),
        ),
        Some(_) => {
            return Err(ApiFailure::bad_request(
                "os must be windows, or left out for the POSIX sh script",
            ));
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        script,
    )
        .into_response())
}
