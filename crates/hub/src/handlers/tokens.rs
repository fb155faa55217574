//! Enrollment tokens (SPEC §4): create (the value shown once, with the ready-to-paste
//! enroll command), list, revoke.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use muster_proto::{
    CreateTokenRequest, CreateTokenResponse, InstallCommands, TOKEN_PREFIX, TokenInfo, TokenList,
    TokenState,
};
use muster_store::TokenRecord;

use crate::audit::AuditExt;
use crate::clock::{now_ms, rfc3339};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, Caller};
use crate::install;
use crate::secrets::{display_prefix, random_body};
use crate::state::AppState;
use crate::validate::check_scope;

/// Longest token lifetime: ten years, beyond which `--no-expiry` says it better.
const MAX_TTL_S: u64 = 10 * 365 * 24 * 3600;

fn token_info(t: &TokenRecord, now: i64) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        prefix: t.prefix.clone(),
        description: t.description.clone(),
        uses: t.uses.max(0) as u32,
        max_uses: t.max_uses.map(|m| m.max(0) as u32),
        expires_at: t.expires_at.map(rfc3339),
        state: match t.state(now) {
            muster_store::TokenState::Active => TokenState::Active,
            muster_store::TokenState::Exhausted => TokenState::Exhausted,
            muster_store::TokenState::Expired => TokenState::Expired,
            muster_store::TokenState::Revoked => TokenState::Revoked,
        },
        pattern: t.pattern.clone(),
        cidrs: t.cidrs.clone(),
        labels: t.labels.clone(),
        allow_replace: t.allow_replace,
        created_at: rfc3339(t.created_at),
    }
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", summary = "Create an enrollment token", request_body = muster_proto::CreateTokenRequest, responses((status = 201, description = "the token, shown this once", body = muster_proto::CreateTokenResponse), (status = 400, description = "invalid pattern, CIDR, labels or limits", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn create_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreateTokenResponse>)> {
    if req.max_uses == Some(0) {
        return Err(ApiFailure::bad_request("max_uses must be at least 1"));
    }
    if let Some(ttl) = req.ttl_s
        && (ttl == 0 || ttl > MAX_TTL_S)
    {
        return Err(ApiFailure::bad_request(
            "ttl must be between 1 second and 10 years (or use no expiry)",
        ));
    }
    let cidrs = check_scope("token", req.pattern.as_deref(), &req.cidrs, &req.labels)?;
    if let Some(d) = &req.description
        && (d.len() > 1024
            || d.chars()
                .any(|c| c.is_control() || muster_proto::is_invisible(c)))
    {
        return Err(ApiFailure::bad_request(
            "description must be printable text of at most 1024 bytes",
        ));
    }

    let now = now_ms();
    let secret = format!("{TOKEN_PREFIX}{}", random_body());
    let token = format!("{secret}.{}", state.ca_hash.pin());
    let record = TokenRecord {
        id: uuid::Uuid::new_v4().to_string(),
        hash: state.keys.hash_secret(&secret),
        prefix: display_prefix(&secret),
        description: req.description.clone(),
        max_uses: req.max_uses.map(i64::from),
        uses: 0,
        expires_at: req.ttl_s.map(|ttl| now + (ttl as i64) * 1000),
        revoked_at: None,
        pattern: req.pattern.clone(),
        cidrs,
        labels: req.labels.clone(),
        allow_replace: req.allow_replace,
        created_at: now,
        created_by: caller.actor(),
    };
    let audit = caller
        .audit("token.created", format!("token:{}", record.id))
        .at(now)
        .details(serde_json::json!({
            "prefix": record.prefix, "max_uses": record.max_uses, "expires_at": record.expires_at,
            "pattern": record.pattern, "cidrs": record.cidrs, "labels": record.labels,
        }));
    state.store.create_token(&record, &audit).await?;
    tracing::info!(token_id = %record.id, prefix = %record.prefix, "enrollment token created");
    let hub = state.hub_identity();
    let install = InstallCommands {
        sh: install::sh_command(&hub.as_ref(), &token),
        powershell: install::powershell_command(&hub.as_ref(), &token),
        enroll: install::enroll_command(&state.hub_url, &token),
    };
    let enroll_command = install.enroll.clone();
    Ok((
        StatusCode::CREATED,
        Json(CreateTokenResponse {
            id: record.id,
            token,
            expires_at: record.expires_at.map(rfc3339),
            max_uses: req.max_uses,
            enroll_command,
            install: Some(install),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", summary = "Enrollment tokens (never their values)", responses((status = 200, description = "the tokens", body = muster_proto::TokenList)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn list_tokens(State(state): State<Arc<AppState>>) -> ApiResult<Json<TokenList>> {
    let now = now_ms();
    let tokens = state.store.list_tokens().await?;
    Ok(Json(TokenList {
        tokens: tokens.iter().map(|t| token_info(t, now)).collect(),
    }))
}

#[utoipa::path(post, path = "/api/v1/tokens/{id}/revoke", tag = "tokens", summary = "Revoke an enrollment token", params(("id" = String, Path, description = "the token's id")), responses((status = 200, description = "the token, revoked", body = muster_proto::TokenInfo), (status = 404, description = "no such token", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn revoke_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenInfo>> {
    let now = now_ms();
    let audit = caller.audit("token.revoked", format!("token:{id}")).at(now);
    let token = state
        .store
        .revoke_token(&id, now, &audit)
        .await
        .map_err(|e| match e {
            muster_store::StoreError::NotFound => ApiFailure::not_found(format!("no token {id:?}")),
            other => other.into(),
        })?;
    state.tokens.forget(&token.id);
    Ok(Json(token_info(&token, now)))
}
