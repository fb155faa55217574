//! The admin routes of single sign-on (SPEC §14): the provider (`/api/v1/sso`) and
//! the groups that admit their members (`/api/v1/sso/groups`). The client secret
//! goes in and is never returned.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use muster_proto::{
    CreateSsoGroupRequest, SetSsoRequest, SsoGroupInfo, SsoGroupList, SsoInfo, codes,
};
use muster_store::{SsoGroupRecord, StoreError};

use crate::audit::AuditExt;
use crate::clock::{now_ms, rfc3339};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, Caller};
use crate::oidc::settings;
use crate::sso;
use crate::state::AppState;
use crate::validate::{check_text, stored_role};

async fn info(state: &AppState) -> ApiResult<SsoInfo> {
    let current = sso::current(state).await?;
    Ok(match current {
        Some(s) => SsoInfo {
            enabled: true,
            source: Some(s.source.to_owned()),
            issuer: Some(s.issuer),
            client_id: Some(s.client_id),
            client_secret_set: s.client_secret.is_some(),
            display_name: Some(s.display_name),
            groups_claim: Some(s.groups_claim),
            scopes: s.scopes,
            redirect_url: Some(sso::redirect_url(state)),
            password_login: state.sso.password_login,
        },
        None => SsoInfo {
            enabled: false,
            source: None,
            issuer: None,
            client_id: None,
            client_secret_set: false,
            display_name: None,
            groups_claim: None,
            scopes: Vec::new(),
            redirect_url: Some(sso::redirect_url(state)),
            password_login: state.sso.password_login,
        },
    })
}

#[utoipa::path(get, path = "/api/v1/sso", tag = "sso", summary = "The single sign-on settings", responses((status = 200, description = "the settings (never the client secret)", body = muster_proto::SsoInfo), (status = 409, description = "single sign-on is not configured", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn get_sso(State(state): State<Arc<AppState>>) -> ApiResult<Json<SsoInfo>> {
    Ok(Json(info(&state).await?))
}

fn from_environment() -> ApiFailure {
    ApiFailure::conflict(
        codes::CONFLICT,
        "single sign-on on this hub comes from its environment (MUSTER_OIDC_*), which \
         wins: change it there and restart the hub",
    )
}

/// `PUT /api/v1/sso`: set the provider. It is asked for its discovery document
/// first, so a typo fails here and not at the next person's sign-in.
#[utoipa::path(put, path = "/api/v1/sso", tag = "sso", summary = "Configure single sign-on", request_body = muster_proto::SetSsoRequest, responses((status = 200, description = "the settings in force", body = muster_proto::SsoInfo), (status = 400, description = "invalid issuer, client or scopes", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn set_sso(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(mut req): ApiJson<SetSsoRequest>,
) -> ApiResult<Json<SsoInfo>> {
    if state.sso.env.is_some() {
        return Err(from_environment());
    }
    // No secret given: keep the one set before, for the same client.
    if req.client_secret.is_none()
        && let Some(old) = state.store.sso_settings().await?
        && old.client_id == req.client_id
        && let Ok(old) = settings::from_record(old, &state.keys)
    {
        req.client_secret = old.client_secret;
    }
    let checked = settings::check(&req, "hub").map_err(ApiFailure::bad_request)?;
    state
        .sso
        .cache
        .get(&state.sso.http, &checked.issuer)
        .await
        .map_err(|e| {
            ApiFailure::bad_request(format!(
                "the provider at {} could not be used: {e}",
                checked.issuer
            ))
        })?;
    let record = settings::to_record(&checked, &state.keys, now_ms());
    let entry = caller.audit("sso.set", "sso").details(serde_json::json!({
        "issuer": checked.issuer,
        "client_id": checked.client_id,
        "client_secret_set": checked.client_secret.is_some(),
        "groups_claim": checked.groups_claim,
        "scopes": checked.scopes,
    }));
    state.store.set_sso_settings(Some(&record), &entry).await?;
    state.sso.forget();
    Ok(Json(info(&state).await?))
}

/// `DELETE /api/v1/sso`: no more single sign-on (set through the hub). Refused
/// while passwords are off: it would lock people out.
#[utoipa::path(delete, path = "/api/v1/sso", tag = "sso", summary = "Turn single sign-on off", responses((status = 200, description = "the settings that were removed", body = muster_proto::SsoInfo), (status = 409, description = "single sign-on is not configured", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn clear_sso(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<SsoInfo>> {
    if state.sso.env.is_some() {
        return Err(from_environment());
    }
    if !state.sso.password_login {
        return Err(ApiFailure::conflict(
            codes::CONFLICT,
            "password login is off on this hub: without single sign-on nobody could sign \
             in to the dashboard. Restart it with --password-login on first",
        ));
    }
    state
        .store
        .set_sso_settings(None, &caller.audit("sso.cleared", "sso"))
        .await?;
    state.sso.forget();
    Ok(Json(info(&state).await?))
}

fn group_info(g: &SsoGroupRecord) -> SsoGroupInfo {
    SsoGroupInfo {
        id: g.id.clone(),
        name: g.name.clone(),
        role: stored_role(&g.role),
        created_at: rfc3339(g.created_at),
    }
}

#[utoipa::path(get, path = "/api/v1/sso/groups", tag = "sso", summary = "Groups whose members may sign in, with their role", responses((status = 200, description = "the groups", body = muster_proto::SsoGroupList)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn list_groups(State(state): State<Arc<AppState>>) -> ApiResult<Json<SsoGroupList>> {
    let groups = state.store.list_sso_groups().await?;
    Ok(Json(SsoGroupList {
        groups: groups.iter().map(group_info).collect(),
    }))
}

#[utoipa::path(post, path = "/api/v1/sso/groups", tag = "sso", summary = "Admit a group", request_body = muster_proto::CreateSsoGroupRequest, responses((status = 201, description = "the group", body = muster_proto::SsoGroupInfo), (status = 400, description = "invalid group or role", body = muster_proto::ApiError), (status = 409, description = "the group is already admitted", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn add_group(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateSsoGroupRequest>,
) -> ApiResult<(StatusCode, Json<SsoGroupInfo>)> {
    check_text("id", &req.id, false)?;
    check_text("name", &req.name, false)?;
    let group = SsoGroupRecord {
        id: req.id,
        name: req.name,
        role: req.role.as_str().to_owned(),
        created_at: now_ms(),
    };
    let entry = caller
        .audit("sso.group_added", format!("group:{}", group.id))
        .details(serde_json::json!({ "name": group.name, "role": group.role }));
    state
        .store
        .create_sso_group(&group, &entry)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => ApiFailure::conflict(codes::CONFLICT, m),
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(group_info(&group))))
}

#[utoipa::path(delete, path = "/api/v1/sso/groups/{id}", tag = "sso", summary = "Stop admitting a group", params(("id" = String, Path, description = "the group's id")), responses((status = 200, description = "the removed group", body = muster_proto::SsoGroupInfo), (status = 404, description = "no such group", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn remove_group(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SsoGroupInfo>> {
    let entry = caller.audit("sso.group_removed", format!("group:{id}"));
    let group = state
        .store
        .remove_sso_group(&id, &entry)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiFailure::not_found(format!(
                "no authorized group {id:?} (see muster sso groups list)"
            )),
            other => other.into(),
        })?;
    Ok(Json(group_info(&group)))
}
