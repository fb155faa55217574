//! Users and dashboard login (SPEC §11): session cookies (HttpOnly, Secure,
//! SameSite=Strict) stored as keyed hashes, login throttling, and the admin routes
//! that add, disable, enable and remove users.
//!
//! A failed login says the same thing, and takes about as long, whether the user
//! does not exist, is disabled, or gave a wrong password. How failures slow down
//! and then get 429 is `throttle.rs`; how hashing is bounded, `slots.rs`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_proto::{CreateUserRequest, LoginRequest, UserInfo, UserList, codes};
use muster_store::{StoreError, UserChange, UserRecord};

use crate::accounts::{add_user, decoy, verify_password};
use crate::audit::{self, AuditExt};
use crate::auth::{SESSION_LIFETIME_MS, session_cookie, session_set_cookie};
use crate::clock::{now_ms, rfc3339};
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, Caller, ClientSource};
use crate::secrets::random_body;
use crate::state::AppState;
use crate::throttle::Verdict;
use crate::validate::{check_text, stored_role};

/// `POST /api/v1/login`. The attempt is reserved with the throttle before the
/// password is checked, so concurrent guesses are counted, and the check runs in a
/// bounded hashing slot, so concurrent logins cannot exhaust memory.
#[utoipa::path(post, path = "/api/v1/login", tag = "users", summary = "Log in with a password: sets the session cookie", request_body = muster_proto::LoginRequest, responses((status = 200, description = "logged in; Set-Cookie carries the session", body = muster_proto::UserInfo), (status = 400, description = "invalid request", body = muster_proto::ApiError), (status = 401, description = "invalid user name or password", body = muster_proto::ApiError), (status = 403, description = "password login is turned off on this hub", body = muster_proto::ApiError), (status = 429, description = "too many failed logins; see Retry-After", body = muster_proto::ApiError)))]
pub async fn login(
    State(state): State<Arc<AppState>>,
    ClientSource(source): ClientSource,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    if !state.sso.password_login {
        return Err(ApiFailure::forbidden(
            codes::PASSWORD_LOGIN_OFF,
            "password login is turned off on this hub: sign in with single sign-on",
        ));
    }
    // Bounded before it becomes a throttle key or an audit target.
    check_text("user", &req.user, false)?;
    let now = now_ms();
    match state.login_throttle.reserve(&req.user, source, now) {
        Verdict::Refuse(retry_after) => {
            return Err(ApiFailure::rate_limited(
                "too many failed logins; try again later",
                retry_after,
            ));
        }
        Verdict::Go(delay) if !delay.is_zero() => tokio::time::sleep(delay).await,
        Verdict::Go(_) => {}
    }
    let checked = check_password(&state, &req).await;
    let user = match checked {
        Ok(user) => user,
        Err(e) => {
            // Never judged (busy, database down): the attempt counts for nothing.
            state.login_throttle.release(&req.user, source);
            return Err(e);
        }
    };
    let Some(user) = user else {
        // A failed login is a refusal like any other: audited within the same
        // budget, so guessing cannot grow the log without bound.
        let target = format!("user:{}", req.user);
        state
            .refusals
            .record(&*state.store, &state.metrics, source, || async move {
                audit::entry("anonymous", "user.login_failed", target, source).outcome("denied")
            })
            .await;
        return Err(ApiFailure::unauthorized(
            codes::UNAUTHORIZED,
            "invalid user name or password",
        ));
    };
    state.login_throttle.succeeded(&req.user, source);
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
    let cookie = session_set_cookie(&token);
    let mut response = Json(info(&user)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// The enabled user whose password this is, or `None`. An unknown user is checked
/// against the decoy hash, so it takes as long as a wrong password.
async fn check_password(state: &AppState, req: &LoginRequest) -> ApiResult<Option<UserRecord>> {
    let user = state.store.find_user(&req.user).await?;
    // A user with no password (single sign-on only) is checked against the decoy
    // too: as slow as a wrong password, and never a match.
    let phc = match &user {
        Some(u) if !u.password_hash.is_empty() => u.password_hash.clone(),
        _ => decoy(state).await?,
    };
    let ok = verify_password(state, req.password.clone(), phc).await?;
    Ok(user.filter(|u| ok && !u.password_hash.is_empty() && u.disabled_at.is_none()))
}

#[utoipa::path(post, path = "/api/v1/logout", tag = "users", summary = "End the login session of the cookie sent", responses((status = 204, description = "logged out (also when there was no session)")))]
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

pub fn info(u: &UserRecord) -> UserInfo {
    UserInfo {
        name: u.name.clone(),
        role: stored_role(&u.role),
        disabled: u.disabled_at.is_some(),
        created_at: rfc3339(u.created_at),
        granted_role: u.granted_role.as_deref().map(stored_role),
        password: !u.password_hash.is_empty(),
        display_name: u.display_name.clone(),
        subject: u.sso_subject.clone(),
        groups: u.groups.clone(),
        last_login_at: u.last_login_at.map(rfc3339),
    }
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", operation_id = "create_user", summary = "Create a dashboard user", request_body = muster_proto::CreateUserRequest, responses((status = 201, description = "the user", body = muster_proto::UserInfo), (status = 400, description = "invalid name, role or password", body = muster_proto::ApiError), (status = 409, description = "a user of that name exists", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<UserInfo>)> {
    let user = add_user(&state, req, caller.actor(), caller.source).await?;
    Ok((StatusCode::CREATED, Json(info(&user))))
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", operation_id = "list_users", summary = "Dashboard users", responses((status = 200, description = "the users", body = muster_proto::UserList)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
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

#[utoipa::path(post, path = "/api/v1/users/{id}/disable", tag = "users", operation_id = "disable_user", summary = "Disable a user (their sessions end)", params(("id" = String, Path, description = "the user's name")), responses((status = 200, description = "the user", body = muster_proto::UserInfo), (status = 404, description = "no such user", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn disable(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<UserInfo>> {
    change(&state, &caller, &name, UserChange::Disable).await
}

#[utoipa::path(post, path = "/api/v1/users/{id}/enable", tag = "users", operation_id = "enable_user", summary = "Enable a user", params(("id" = String, Path, description = "the user's name")), responses((status = 200, description = "the user", body = muster_proto::UserInfo), (status = 404, description = "no such user", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn enable(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<UserInfo>> {
    change(&state, &caller, &name, UserChange::Enable).await
}

#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", operation_id = "remove_user", summary = "Remove a user", params(("id" = String, Path, description = "the user's name")), responses((status = 200, description = "the removed user", body = muster_proto::UserInfo), (status = 404, description = "no such user", body = muster_proto::ApiError)), security(("api_key" = ["admin"]), ("session" = ["admin"])))]
pub async fn remove(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<UserInfo>> {
    change(&state, &caller, &name, UserChange::Remove).await
}
