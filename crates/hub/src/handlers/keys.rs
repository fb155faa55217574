//! API keys (SPEC §11): created, listed, rotated (the old value dies at once) and
//! revoked by admins; values shown once and stored as keyed hashes. `last_used_at`
//! is recorded in memory and written in batches, at most once a minute per key
//! (`auth.rs`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use muster_proto::{API_KEY_PREFIX, CreateKeyRequest, CreatedKey, KeyInfo, KeyList, KeyState};
use muster_store::{ApiKeyRecord, KeyChange, StoreError};

use crate::audit::AuditExt;
use crate::clock::{now_ms, rfc3339};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, Caller};
use crate::rules::parse_pattern;
use crate::secrets::{display_prefix, random_body};
use crate::state::AppState;
use crate::validate::{check_text, stored_role};

/// Longest lifetime of an API key, as of an enrollment token.
const MAX_EXPIRES_S: u64 = 10 * 365 * 24 * 3600;

pub fn info(k: &ApiKeyRecord, now: i64) -> KeyInfo {
    let state = if k.revoked_at.is_some() {
        KeyState::Revoked
    } else if k.expires_at.is_some_and(|e| e <= now) {
        KeyState::Expired
    } else {
        KeyState::Active
    };
    KeyInfo {
        id: k.id.clone(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        role: stored_role(&k.role),
        agents: k.agents_glob.clone(),
        probes: k.probes.clone(),
        expires_at: k.expires_at.map(rfc3339),
        created_at: rfc3339(k.created_at),
        last_used_at: k.last_used_at.map(rfc3339),
        state,
    }
}

#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", operation_id = "create_key", summary = "Create an API key", request_body = muster_proto::CreateKeyRequest, responses((status = 201, description = "the key, shown this once", body = muster_proto::CreatedKey), (status = 400, description = "invalid name, scope or lifetime", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    check_text("name", &req.name, false)?;
    if let Some(glob) = &req.agents {
        check_text("agents", glob, false)?;
        parse_pattern(glob).map_err(ApiFailure::bad_request)?;
    }
    if req.probes.len() > 64 {
        return Err(ApiFailure::bad_request("at most 64 probes"));
    }
    for p in &req.probes {
        check_text("probe", p, false)?;
    }
    // Bounded like a token's lifetime: a larger value overflowed the expiry time
    // (milliseconds, i64) into the past, and the key was born expired.
    if req.expires_s.is_some_and(|s| s == 0 || s > MAX_EXPIRES_S) {
        return Err(ApiFailure::bad_request(
            "expires_s must be between 1 second and 10 years (or use no expiry)",
        ));
    }
    let now = now_ms();
    let value = format!("{API_KEY_PREFIX}{}", random_body());
    let record = ApiKeyRecord {
        id: uuid::Uuid::new_v4().to_string(),
        hash: state.keys.hash_secret(&value),
        prefix: display_prefix(&value),
        name: req.name.clone(),
        role: req.role.as_str().to_owned(),
        agents_glob: req.agents.clone(),
        probes: req.probes.clone(),
        expires_at: req
            .expires_s
            .map(|s| now.saturating_add(s.saturating_mul(1000) as i64)),
        revoked_at: None,
        created_at: now,
        last_used_at: None,
    };
    let entry = caller
        .audit("key.created", format!("key:{}", record.id))
        .details(serde_json::json!({"name": record.name, "role": record.role, "agents": record.agents_glob, "probes": record.probes}));
    state.store.create_api_key(&record, Some(&entry)).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: value,
            info: info(&record, now),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", operation_id = "list_keys", summary = "API keys (never their values)", responses((status = 200, description = "the keys", body = muster_proto::KeyList)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<KeyList>> {
    let now = now_ms();
    let keys = state.store.list_api_keys().await?;
    Ok(Json(KeyList {
        keys: keys.iter().map(|k| info(k, now)).collect(),
    }))
}

fn not_found(id: &str) -> impl FnOnce(StoreError) -> ApiFailure + '_ {
    move |e| match e {
        StoreError::NotFound => ApiFailure::not_found(format!("no live API key {id:?}")),
        other => other.into(),
    }
}

#[utoipa::path(post, path = "/api/v1/keys/{id}/rotate", tag = "keys", operation_id = "rotate_key", summary = "Rotate an API key: a new value, the old one stops working", params(("id" = String, Path, description = "the key's id")), responses((status = 200, description = "the new value, shown this once", body = muster_proto::CreatedKey), (status = 404, description = "no such key", body = muster_proto::ApiError), (status = 409, description = "the key is revoked or expired", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn rotate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<CreatedKey>> {
    let value = format!("{API_KEY_PREFIX}{}", random_body());
    let change = KeyChange::Rotate {
        hash: state.keys.hash_secret(&value),
        prefix: display_prefix(&value),
    };
    let entry = caller.audit("key.rotated", format!("key:{id}"));
    let key = state
        .store
        .change_api_key(&id, change, now_ms(), &entry)
        .await
        .map_err(not_found(&id))?;
    Ok(Json(CreatedKey {
        key: value,
        info: info(&key, now_ms()),
    }))
}

#[utoipa::path(post, path = "/api/v1/keys/{id}/revoke", tag = "keys", operation_id = "revoke_key", summary = "Revoke an API key", params(("id" = String, Path, description = "the key's id")), responses((status = 200, description = "the key, revoked", body = muster_proto::KeyInfo), (status = 404, description = "no such key", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<KeyInfo>> {
    let entry = caller.audit("key.revoked", format!("key:{id}"));
    let key = state
        .store
        .change_api_key(&id, KeyChange::Revoke, now_ms(), &entry)
        .await
        .map_err(not_found(&id))?;
    Ok(Json(info(&key, now_ms())))
}
