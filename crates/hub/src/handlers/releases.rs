//! Agent releases (SPEC §10): which binary to install (`latest`), the binary itself
//! (`download`, public and limited per source), publishing a signed one (admin,
//! streamed to disk) and listing what is published.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_proto::{LatestRelease, ReleaseInfo, ReleaseList};
use muster_release::{Manifest, ReleaseError};
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;

use crate::audit::AuditExt;
use crate::downloads::{MAX_DOWNLOAD_TIME, Refused, stream, upload_dir};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{Caller, ClientSource};
use crate::rules::source_bucket;
use crate::state::AppState;

/// Largest binary an admin may publish.
pub const MAX_RELEASE_BYTES: u64 = 512 * 1024 * 1024;
/// The header carrying the release manifest (compact JSON) of a publish.
pub const MANIFEST_HEADER: &str = "muster-manifest";
/// How long an upload may pause between two chunks.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LatestQuery {
    #[param(
        required = true,
        pattern = "^(linux|macos|windows|freebsd|netbsd|openbsd|illumos)$"
    )]
    os: Option<String>,
    #[param(required = true, pattern = "^(x86_64|arm64|armv7|i686|riscv64)$")]
    arch: Option<String>,
    /// A published version; the newest when absent.
    #[param(pattern = "^v?(0|[1-9][0-9]{0,8})\\.(0|[1-9][0-9]{0,8})\\.(0|[1-9][0-9]{0,8})$")]
    version: Option<String>,
}

/// A release error about what the client sent (a version, a platform, a manifest,
/// a body): 400 with its one line. Disk failures stay in the log.
fn release_failure(context: &str, e: ReleaseError) -> ApiFailure {
    match e {
        ReleaseError::Io(io) => ApiFailure::internal(context, &io),
        other => ApiFailure::bad_request(other.to_string()),
    }
}

/// A release error from reading what is stored (the request was checked before):
/// the hub's own trouble, whatever its kind, and its text (paths) is not for clients.
fn stored_failure(context: &str, e: ReleaseError) -> ApiFailure {
    ApiFailure::internal(context, &e)
}

/// The version and platform a request names, checked before anything is looked up.
fn check_request(version: Option<&str>, os: &str, arch: &str) -> ApiResult<()> {
    if let Some(v) = version {
        muster_release::parse_version(v).map_err(|e| release_failure("checking a request", e))?;
    }
    muster_release::check_platform(os, arch).map_err(|e| release_failure("checking a request", e))
}

fn download_url(hub_url: &str, m: &Manifest) -> String {
    format!(
        "{hub_url}/api/v1/agent/download/{}/{}/{}",
        m.version, m.os, m.arch
    )
}

/// `GET /api/v1/agent/latest?os=&arch=[&version=]`.
#[utoipa::path(get, path = "/api/v1/agent/latest", tag = "releases", summary = "The agent binary to install for a platform", params(LatestQuery), responses((status = 200, description = "the release to install", body = muster_proto::LatestRelease), (status = 400, description = "os and arch missing or invalid", body = muster_proto::ApiError), (status = 404, description = "no release for that platform or version", body = muster_proto::ApiError)))]
pub async fn latest(
    State(state): State<Arc<AppState>>,
    Query(q): Query<LatestQuery>,
) -> ApiResult<Json<LatestRelease>> {
    let (Some(os), Some(arch)) = (q.os.as_deref(), q.arch.as_deref()) else {
        return Err(ApiFailure::bad_request(
            "os and arch are required, e.g. ?os=linux&arch=x86_64",
        ));
    };
    check_request(q.version.as_deref(), os, arch)?;
    let found = match q.version.as_deref() {
        Some(v) => state
            .downloads
            .find(v, os, arch)
            .await
            .map(|s| s.map(|s| s.manifest)),
        None => state.downloads.latest(os, arch).await,
    }
    .map_err(|e| stored_failure("reading releases", e))?;
    let m = found
        .ok_or_else(|| ApiFailure::not_found(format!("no release is published for {os}/{arch}")))?;
    Ok(Json(LatestRelease {
        url: download_url(&state.hub_url, &m),
        version: m.version,
        sha256: m.sha256,
        signature: m.signature,
        size: m.size,
    }))
}

/// `GET /api/v1/agent/download/{version}/{os}/{arch}`: the binary, streamed from
/// disk. Public (binaries are not secrets), so limited per source and in all.
#[utoipa::path(get, path = "/api/v1/agent/download/{version}/{os}/{arch}", tag = "releases", summary = "Download an agent binary", params(("version" = String, Path, pattern = "^v?(0|[1-9][0-9]{0,8})\\.(0|[1-9][0-9]{0,8})\\.(0|[1-9][0-9]{0,8})$", description = "release version, e.g. 1.2.3"), ("os" = String, Path, pattern = "^(linux|macos|windows|freebsd|netbsd|openbsd|illumos)$", description = "e.g. linux"), ("arch" = String, Path, pattern = "^(x86_64|arm64|armv7|i686|riscv64)$", description = "e.g. x86_64")), responses((status = 200, description = "the binary", body = [u8], content_type = "application/octet-stream"), (status = 400, description = "invalid version or platform", body = muster_proto::ApiError), (status = 404, description = "no such release", body = muster_proto::ApiError), (status = 429, description = "too many downloads from this address; see Retry-After", body = muster_proto::ApiError), (status = 503, description = "too many downloads at once; see Retry-After", body = muster_proto::ApiError)))]
pub async fn download(
    State(state): State<Arc<AppState>>,
    ClientSource(source): ClientSource,
    Path((version, os, arch)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    // What is asked for is checked first (pure), then the limits (in memory), and
    // only then the disk: a refused or malformed request costs no file access.
    check_request(Some(&version), &os, &arch)?;
    let permit = match state.downloads.admit(source_bucket(source)) {
        Ok(p) => p,
        Err(Refused::SourceLimit(retry)) => {
            return Err(ApiFailure::rate_limited(
                "too many downloads from this address; retry later",
                retry,
            ));
        }
        Err(Refused::Busy) => {
            return Err(ApiFailure::unavailable(
                "too many downloads in progress; retry shortly",
                Some(rand::random_range(2..=10)),
            ));
        }
    };
    let servable = state
        .downloads
        .find(&version, &os, &arch)
        .await
        .map_err(|e| stored_failure("opening a release", e))?
        .ok_or_else(|| ApiFailure::not_found(format!("no release {version} for {os}/{arch}")))?;
    let m = servable.manifest;
    let name = muster_release::binary_name(&m.os);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, m.size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        stream(servable.file, m.size, permit, MAX_DOWNLOAD_TIME),
    )
        .into_response())
}

/// `PUT /api/v1/releases/{version}/{os}/{arch}` (admin): the body is the binary,
/// the `muster-manifest` header its signed manifest. Reached only after
/// authentication; the body is streamed to a file, never held.
#[utoipa::path(put, path = "/api/v1/releases/{version}/{os}/{arch}", tag = "releases", summary = "Publish a signed agent binary (streamed body, manifest in the muster-manifest header)", params(("version" = String, Path, pattern = "^v?(0|[1-9][0-9]{0,8})\\.(0|[1-9][0-9]{0,8})\\.(0|[1-9][0-9]{0,8})$", description = "release version, e.g. 1.2.3"), ("os" = String, Path, pattern = "^(linux|macos|windows|freebsd|netbsd|openbsd|illumos)$", description = "e.g. linux"), ("arch" = String, Path, pattern = "^(x86_64|arm64|armv7|i686|riscv64)$", description = "e.g. x86_64"), ("muster-manifest" = String, Header, description = "the signed release manifest (JSON)")), request_body(content = [u8], content_type = "application/octet-stream", description = "the binary"), responses((status = 201, description = "published", body = muster_proto::ReleaseInfo), (status = 400, description = "invalid version, platform, manifest or signature", body = muster_proto::ApiError), (status = 408, description = "the body did not arrive in time", body = muster_proto::ApiError), (status = 409, description = "another binary is published under that version", body = muster_proto::ApiError), (status = 413, description = "the binary is over the release size limit", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn publish(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((version, os, arch)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<ReleaseInfo>)> {
    let manifest: Manifest = headers
        .get(MANIFEST_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(serde_json::from_str)
        .ok_or_else(|| {
            ApiFailure::bad_request(format!(
                "the {MANIFEST_HEADER} header must carry the release manifest"
            ))
        })?
        .map_err(|e| ApiFailure::bad_request(format!("invalid release manifest: {e}")))?;
    manifest
        .check()
        .map_err(|e| release_failure("checking a manifest", e))?;
    let same = |a: &str, b: &str| a.trim_start_matches('v') == b.trim_start_matches('v');
    if !same(&manifest.version, &version) || manifest.os != os || manifest.arch != arch {
        return Err(ApiFailure::bad_request(
            "the manifest is for another version or platform than the URL names",
        ));
    }
    if manifest.signature.is_empty() {
        return Err(ApiFailure::bad_request(
            "the release is not signed; sign it with `muster release sign`",
        ));
    }
    // A hub built with a release key takes only what that key signed; without one it
    // stores the signature for the agents (which refuse what their key did not sign).
    if let Ok(key) = muster_release::baked_key() {
        key.verify(&manifest)
            .map_err(|e| release_failure("verifying a release", e))?;
    }
    if manifest.size > MAX_RELEASE_BYTES {
        return Err(ApiFailure::too_large_than(MAX_RELEASE_BYTES));
    }
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_RELEASE_BYTES) {
        return Err(ApiFailure::too_large_than(MAX_RELEASE_BYTES));
    }
    if announced.is_some_and(|n| n != manifest.size) {
        return Err(ApiFailure::bad_request(
            "the body's length is not the manifest's size",
        ));
    }
    let upload = receive(&state, body, manifest.size).await?;
    let releases = state.releases.clone();
    let m = manifest.clone();
    let published = tokio::task::spawn_blocking(move || releases.publish(&m, upload.path()))
        .await
        .map_err(|e| ApiFailure::internal("publishing a release", &e))?
        .map_err(|e| release_failure("publishing a release", e))?;
    state.downloads.forget();
    let m = published.manifest;
    let entry = caller
        .audit(
            "release.published",
            format!("release:{}/{}/{}", m.version, m.os, m.arch),
        )
        .details(serde_json::json!({"sha256": m.sha256, "size": m.size}));
    state.store.record_audit(&entry).await?;
    tracing::info!(version = %m.version, os = %m.os, arch = %m.arch, "release published");
    Ok((StatusCode::CREATED, Json(m.info())))
}

/// Stream the body into a temporary file beside the releases, refusing it past
/// `expected` bytes (the manifest's size, itself capped).
async fn receive(
    state: &AppState,
    body: Body,
    expected: u64,
) -> ApiResult<tempfile::NamedTempFile> {
    let dir = upload_dir(&state.releases);
    let tmp = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        tempfile::NamedTempFile::new_in(&dir)
    })
    .await
    .map_err(|e| ApiFailure::internal("receiving a release", &e))?
    .map_err(|e| ApiFailure::internal("receiving a release", &e))?;
    let mut file = tokio::fs::File::from_std(
        tmp.reopen()
            .map_err(|e| ApiFailure::internal("receiving a release", &e))?,
    );
    let mut body = body.into_data_stream();
    let mut received = 0u64;
    loop {
        let chunk =
            match tokio::time::timeout(CHUNK_TIMEOUT, futures_util::StreamExt::next(&mut body))
                .await
            {
                Err(_) => return Err(ApiFailure::body_timeout()),
                Ok(None) => break,
                Ok(Some(Err(_))) => {
                    return Err(ApiFailure::bad_request(
                        "the request body could not be read",
                    ));
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
        received += chunk.len() as u64;
        if received > MAX_RELEASE_BYTES {
            return Err(ApiFailure::too_large_than(MAX_RELEASE_BYTES));
        }
        if received > expected {
            return Err(ApiFailure::bad_request(
                "the body is longer than the manifest's size",
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiFailure::internal("receiving a release", &e))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiFailure::internal("receiving a release", &e))?;
    if received != expected {
        return Err(ApiFailure::bad_request(
            "the body is shorter than the manifest's size",
        ));
    }
    Ok(tmp)
}

/// `GET /api/v1/releases` (member): what is published, newest first.
#[utoipa::path(get, path = "/api/v1/releases", tag = "releases", operation_id = "list_releases", summary = "Published releases, newest first", responses((status = 200, description = "the releases", body = muster_proto::ReleaseList)), security(("api_key" = ["member"]), ("session" = ["member"])))]
pub async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<ReleaseList>> {
    let releases = state.releases.clone();
    let list = tokio::task::spawn_blocking(move || releases.list())
        .await
        .map_err(|e| ApiFailure::internal("listing releases", &e))?
        .map_err(|e| stored_failure("listing releases", e))?;
    Ok(Json(ReleaseList {
        releases: list.iter().map(|p| p.manifest.info()).collect(),
    }))
}
