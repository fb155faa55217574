//! The routes of integrations (SPEC §15): admins create, list, show, remove and
//! test them; members run their probes. A secret goes in and is never returned:
//! answers carry `secret_set` only. Every change, test and probe run is audited,
//! never with a secret or a response body.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use muster_proto::{
    CreateIntegrationRequest, HTTP_GET, IntegrationInfo, IntegrationList, IntegrationProbeResult,
    IntegrationTestResult, RunIntegrationProbeRequest, codes,
};
use muster_store::{IntegrationRecord, IntegrationTest, StoreError};

use crate::audit::AuditExt;
use crate::clock::{now_ms, rfc3339};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, Caller};
use crate::integrations::{self, Credentials};
use crate::state::AppState;

fn info(r: &IntegrationRecord) -> IntegrationInfo {
    IntegrationInfo {
        name: r.name.clone(),
        kind: r.kind.clone(),
        url: r.url.clone(),
        auth: r.auth.clone(),
        header_name: r.header_name.clone(),
        secret_set: r.secret.is_some(),
        status: r.status.clone(),
        last_error: r.last_error.clone(),
        last_tested_at: r.last_tested_at.map(rfc3339),
        created_at: rfc3339(r.created_at),
        probes: integrations::probes(&r.kind),
    }
}

fn target(name: &str) -> String {
    format!("integration:{name}")
}

async fn find(state: &AppState, name: &str) -> ApiResult<IntegrationRecord> {
    state.store.get_integration(name).await?.ok_or_else(|| {
        ApiFailure::not_found(format!(
            "no integration {name:?} (see muster integrations list)"
        ))
    })
}

/// A place for one outbound call, waiting briefly; 503 when the hub is busy.
async fn call_slot(state: &AppState) -> ApiResult<tokio::sync::SemaphorePermit<'_>> {
    match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        state.integration_calls.acquire(),
    )
    .await
    {
        Ok(Ok(p)) => Ok(p),
        _ => Err(ApiFailure::unavailable(
            "too many integration calls at once; try again in a moment",
            Some(5),
        )),
    }
}

/// The stored credentials, or the answer saying why they cannot be used.
fn credentials(state: &AppState, r: &IntegrationRecord) -> Result<Credentials, String> {
    integrations::open(
        &state.keys,
        &r.name,
        &r.auth,
        r.header_name.as_deref(),
        r.secret.as_deref(),
    )
}

#[utoipa::path(post, path = "/api/v1/integrations", tag = "integrations", operation_id = "create_integration", summary = "Add an integration (an outside system probes can query)", request_body = muster_proto::CreateIntegrationRequest, responses((status = 201, description = "the integration (never its secret)", body = muster_proto::IntegrationInfo), (status = 400, description = "invalid name, type, URL or credentials", body = muster_proto::ApiError), (status = 409, description = "an integration of that name exists", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateIntegrationRequest>,
) -> ApiResult<(StatusCode, Json<IntegrationInfo>)> {
    integrations::check_name(&req.name).map_err(ApiFailure::bad_request)?;
    if !integrations::KINDS.contains(&req.kind.as_str()) {
        return Err(ApiFailure::bad_request(format!(
            "unknown integration type {:?}: one of {}",
            req.kind,
            integrations::KINDS.join(", ")
        )));
    }
    let url = integrations::check_url(&req.url).map_err(ApiFailure::bad_request)?;
    let creds = Credentials::new(&req.auth, req.header_name.as_deref(), req.secret.as_deref())
        .map_err(ApiFailure::bad_request)?;
    let now = now_ms();
    let record = IntegrationRecord {
        secret: integrations::seal(&state.keys, &req.name, &creds),
        name: req.name,
        kind: req.kind,
        url: url.to_string(),
        auth: req.auth,
        header_name: req.header_name,
        status: "untested".to_owned(),
        last_error: None,
        last_tested_at: None,
        created_at: now,
        updated_at: now,
    };
    let entry = caller
        .audit("integration.created", target(&record.name))
        .at(now)
        .details(serde_json::json!({
            "kind": record.kind,
            "url": record.url,
            "auth": record.auth,
            "header_name": record.header_name,
            "secret_set": record.secret.is_some(),
        }));
    state
        .store
        .create_integration(&record, &entry)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => ApiFailure::conflict(codes::CONFLICT, m),
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(info(&record))))
}

#[utoipa::path(get, path = "/api/v1/integrations", tag = "integrations", operation_id = "list_integrations", summary = "Integrations", responses((status = 200, description = "the integrations", body = muster_proto::IntegrationList)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<IntegrationList>> {
    let all = state.store.list_integrations().await?;
    Ok(Json(IntegrationList {
        integrations: all.iter().map(info).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/integrations/{name}", tag = "integrations", operation_id = "show_integration", summary = "One integration", params(("name" = String, Path, description = "the integration's name")), responses((status = 200, description = "the integration", body = muster_proto::IntegrationInfo), (status = 404, description = "no such integration", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<IntegrationInfo>> {
    Ok(Json(info(&find(&state, &name).await?)))
}

#[utoipa::path(delete, path = "/api/v1/integrations/{name}", tag = "integrations", operation_id = "remove_integration", summary = "Remove an integration", params(("name" = String, Path, description = "the integration's name")), responses((status = 200, description = "the removed integration", body = muster_proto::IntegrationInfo), (status = 404, description = "no such integration", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn remove(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<IntegrationInfo>> {
    let entry = caller.audit("integration.removed", target(&name));
    let removed = state
        .store
        .remove_integration(&name, &entry)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiFailure::not_found(format!(
                "no integration {name:?} (see muster integrations list)"
            )),
            other => other.into(),
        })?;
    Ok(Json(info(&removed)))
}

/// `POST /api/v1/integrations/{name}/test`: "test connection", stored as the
/// integration's status (see `integrations::test` for what counts as connected).
#[utoipa::path(post, path = "/api/v1/integrations/{name}/test", tag = "integrations", operation_id = "test_integration", summary = "Check that the hub can reach an integration", params(("name" = String, Path, description = "the integration's name")), responses((status = 200, description = "the outcome of the check", body = muster_proto::IntegrationTestResult), (status = 404, description = "no such integration", body = muster_proto::ApiError), (status = 503, description = "too many outside calls in flight; see Retry-After", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn test(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<IntegrationTestResult>> {
    let record = find(&state, &name).await?;
    let _slot = call_slot(&state).await?;
    let outcome = match (
        credentials(&state, &record),
        integrations::check_url(&record.url),
    ) {
        (Ok(creds), Ok(url)) => integrations::test(&state.http, &url, &creds).await,
        (Err(why), _) | (_, Err(why)) => integrations::TestOutcome {
            status: "error",
            http_status: None,
            error: Some(why),
            duration_ms: 0,
        },
    };
    tracing::info!(
        integration = %name,
        status = outcome.status,
        http_status = ?outcome.http_status,
        error = ?outcome.error,
        "integration tested"
    );
    let now = now_ms();
    let entry = caller
        .audit("integration.tested", target(&name))
        .at(now)
        .outcome(if outcome.status == "connected" {
            "ok"
        } else {
            "failed"
        })
        .details(serde_json::json!({
            "status": outcome.status,
            "http_status": outcome.http_status,
        }));
    let test = IntegrationTest {
        status: outcome.status.to_owned(),
        last_error: outcome.error.clone(),
        tested_at: now,
    };
    let stored = state
        .store
        .record_integration_test(&name, &test, &entry)
        .await?;
    Ok(Json(IntegrationTestResult {
        status: outcome.status.to_owned(),
        http_status: outcome.http_status,
        error: outcome.error,
        duration_ms: outcome.duration_ms,
        integration: info(&stored),
    }))
}

/// `POST /api/v1/integrations/{name}/probes/{probe}`: run a probe (members may).
/// A refused path is audited too (`denied`): it is how someone would look for a
/// way out of the integration's URL.
#[utoipa::path(post, path = "/api/v1/integrations/{name}/probes/{probe}", tag = "integrations", operation_id = "run_integration_probe", summary = "Run an integration probe", params(("name" = String, Path, description = "the integration's name"), ("probe" = String, Path, description = "the probe's name")), request_body = muster_proto::RunIntegrationProbeRequest, responses((status = 200, description = "the outcome", body = muster_proto::IntegrationProbeResult), (status = 400, description = "invalid parameters", body = muster_proto::ApiError), (status = 403, description = "this key's scope does not allow that probe", body = muster_proto::ApiError), (status = 404, description = "no such integration or probe", body = muster_proto::ApiError), (status = 409, description = "the integration cannot run that probe now", body = muster_proto::ApiError), (status = 503, description = "too many outside calls in flight; see Retry-After", body = muster_proto::ApiError)), security(("api_key" = ["member"]), ("session" = ["member"])))]
pub async fn run_probe(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((name, probe)): Path<(String, String)>,
    ApiJson(req): ApiJson<RunIntegrationProbeRequest>,
) -> ApiResult<Json<IntegrationProbeResult>> {
    let record = find(&state, &name).await?;
    // A scoped key treats an integration as a target like an agent: its glob must
    // match the integration's name and its probe list name the probe.
    if !crate::probes::may_run(&caller.principal, &name, &probe) {
        let details = serde_json::json!({ "probe": probe, "integration": name });
        let what = format!("integration {name}");
        return Err(
            super::probes::refuse(&state, &caller, target(&name), details, &probe, &what).await,
        );
    }
    if !integrations::probes(&record.kind).contains(&probe) {
        return Err(ApiFailure::not_found(format!(
            "integration {name:?} has no probe {probe:?} (it offers: {})",
            integrations::probes(&record.kind).join(", ")
        )));
    }
    debug_assert_eq!(probe, HTTP_GET);
    if let Some(other) = req.params.keys().find(|k| k.as_str() != "path") {
        return Err(ApiFailure::bad_request(format!(
            "{probe} takes one parameter, path; not {other:?}"
        )));
    }
    let path = req.params.get("path").map_or("/", String::as_str);
    let audit = |outcome: &str, status: Option<u16>| {
        caller
            .audit("integration.probe", target(&name))
            .outcome(outcome)
            .details(serde_json::json!({
                "probe": probe,
                "path": path,
                "status": status,
            }))
    };
    let url = match integrations::check_url(&record.url)
        .and_then(|base| integrations::join(&base, path))
    {
        Ok(url) => url,
        Err(why) => {
            state.store.record_audit(&audit("denied", None)).await?;
            return Err(ApiFailure::bad_request(why));
        }
    };
    let creds = credentials(&state, &record).map_err(|why| {
        ApiFailure::conflict(codes::CONFLICT, format!("integration {name:?}: {why}"))
    })?;
    let slot = call_slot(&state).await?;
    let mut result = integrations::http_get(&state.http, &url, &creds).await;
    drop(slot);
    result.integration = name.clone();
    let outcome = if result.error.is_some() {
        "failed"
    } else {
        "ok"
    };
    state
        .store
        .record_audit(&audit(outcome, result.status))
        .await?;
    Ok(Json(result))
}
