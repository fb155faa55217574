//! Users and dashboard login (SPEC §11): session cookies (HttpOnly, Secure,
//! SameSite=Strict) stored as keyed hashes, login throttling, and the admin routes
//! that add, disable, enable and remove users.
//!
//! A failed login says the same thing, and takes about as long, whether the user
//! does not exist, is disabled, or gave a wrong password. Failures from one address
//! or for one user name slow down and then get 429.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_proto::{CreateUserRequest, LoginRequest, UserInfo, UserList, codes};
use muster_store::{StoreError, UserChange, UserRecord};

use crate::accounts::{add_user, decoy, verify_password};
use crate::audit::{self, AuditExt};
use crate::auth::{COOKIE, session_cookie};
use crate::clock::{now_ms, rfc3339};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, Caller, ClientSource};
use crate::secrets::random_body;
use crate::state::AppState;
use crate::throttle::{REFUSE_AFTER, SLOW_AFTER};

const SESSION_LIFETIME_MS: i64 = 12 * 3600 * 1000;

pub async fn login(
    State(state): State<Arc<AppState>>,
    ClientSource(source): ClientSource,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    let now = now_ms();
    let (by_addr, by_user) = (format!("addr:{source}"), format!("user:{}", req.user));
    let failures = state
        .login_throttle
        .count(&by_addr, now)
        .max(state.login_throttle.count(&by_user, now));
    if failures >= REFUSE_AFTER {
        let mut f = ApiFailure::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::RATE_LIMITED,
            "too many failed logins; try again later",
        );
        f.retry_after = Some(60);
        return Err(f);
    }
    if failures >= SLOW_AFTER {
        tokio::time::sleep(Duration::from_millis(
            250 * u64::from(failures - SLOW_AFTER + 1),
        ))
        .await;
    }
    let user = state.store.find_user(&req.user).await?;
    let phc = user
        .as_ref()
        .map_or_else(|| decoy(&state), |u| u.password_hash.clone());
    let password_ok = verify_password(req.password.clone(), phc).await;
    let user = user.filter(|u| password_ok && u.disabled_at.is_none());
    let Some(user) = user else {
        state.login_throttle.fail(&by_addr, now);
        state.login_throttle.fail(&by_user, now);
        let entry = audit::entry(
            "anonymous",
            "user.login_failed",
            format!("user:{}", req.user),
            source,
        )
        .outcome("denied");
        state.store.record_audit(&entry).await?;
        return Err(ApiFailure::unauthorized(
            codes::UNAUTHORIZED,
            "invalid user name or password",
        ));
    };
    state.login_throttle.clear(&by_addr);
    state.login_throttle.clear(&by_user);
    let token = random_body();
    let actor = format!("user:{}", user.name);
    let entry = audit::entry(actor.clone(), "user.login", actor, source);
    state
        .store
        .create_user_session(
            &state.keys.hash_secret(&token),
            &user.id,
            now,
            now + SESSION_LIFETIME_MS,
            &entry,
        )
        .await?;
    let cookie = format!(
        "{COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_LIFETIME_MS / 1000
    );
    let mut response = Json(info(&user)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

pub async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    if let Some(v) = session_cookie(&headers) {
        state
            .store
            .delete_user_session(&state.keys.hash_secret(v))
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

fn info(u: &UserRecord) -> UserInfo {
    UserInfo {
        name: u.name.clone(),
        role: u.role.clone(),
        disabled: u.disabled_at.is_some(),
        created_at: rfc3339(u.created_at),
    }
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<UserInfo>)> {
    let user = add_user(&state, req, caller.actor(), caller.source).await?;
    Ok((StatusCode::CREATED, Json(info(&user))))
}

pub async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<UserList>> {
    Ok(Json(UserList {
        users: state.store.list_users().await?.iter().map(info).collect(),
    }))
}

async fn change(
    state: &AppState,
    caller: &Caller,
    name: &str,
    change: UserChange,
) -> ApiResult<Json<UserInfo>> {
    let action = match change {
        UserChange::Disable => "user.disabled",
        UserChange::Enable => "user.enabled",
        UserChange::Remove => "user.removed",
    };
    let entry = caller.audit(action, format!("user:{name}"));
    let user = state
        .store
        .change_user(name, change, now_ms(), &entry)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiFailure::not_found(format!("no user {name:?}")),
            other => other.into(),
        })?;
    Ok(Json(info(&user)))
}

pub async fn disable(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<UserInfo>> {
    change(&state, &caller, &name, UserChange::Disable).await
}

pub async fn enable(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<UserInfo>> {
    change(&state, &caller, &name, UserChange::Enable).await
}

pub async fn remove(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<UserInfo>> {
    change(&state, &caller, &name, UserChange::Remove).await
}
