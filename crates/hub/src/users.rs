//! Users and dashboard login (SPEC §11): argon2id passwords, session cookies
//! (HttpOnly, Secure, SameSite=Strict) stored as keyed hashes, and login throttling.
//!
//! A failed login says the same thing, and takes about as long, whether the user
//! does not exist, is disabled, or gave a wrong password. Failures from one address
//! or for one user name slow down and then get 429.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use muster_proto::{CreateUserRequest, LoginRequest, UserInfo, UserList, codes};
use muster_store::{AuditEntry, StoreError, UserChange, UserRecord};

use crate::api::ApiJson;
use crate::auth::Principal;
use crate::enroll::check_text;
use crate::error::{ApiFailure, ApiResult};
use crate::secrets::random_body;
use crate::state::{AppState, now_ms, rfc3339};

pub const COOKIE: &str = "muster_session";
const SESSION_LIFETIME_MS: i64 = 12 * 3600 * 1000;
const WINDOW_MS: i64 = 15 * 60 * 1000;
/// Failures (per address or per user name, within the window) before slowing down…
const SLOW_AFTER: u32 = 3;
/// …and before refusing with 429.
const REFUSE_AFTER: u32 = 10;

/// Recent login failures by address and by user name.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (i64, u32)>>,
}

impl Throttle {
    fn count(&self, key: &str, now: i64) -> u32 {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .filter(|(start, _)| now - start < WINDOW_MS)
            .map_or(0, |(_, n)| *n)
    }

    fn fail(&self, key: &str, now: i64) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (start, _)| now - *start < WINDOW_MS);
        }
        let entry = map.entry(key.to_owned()).or_insert((now, 0));
        if now - entry.0 >= WINDOW_MS {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    fn clear(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// An argon2id PHC string for `password` (about 20 ms: off the async threads).
pub async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| ApiFailure::internal("hashing a password failed", &e))
    })
    .await
    .map_err(|e| ApiFailure::internal("hashing a password failed", &e))?
}

async fn verify_password(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// A valid hash of nothing anyone knows: unknown users are checked against it so a
/// wrong name takes as long as a wrong password.
fn decoy(state: &AppState) -> String {
    state
        .decoy_hash
        .get_or_init(|| {
            Argon2::default()
                .hash_password(random_body().as_bytes())
                .map(|h| h.to_string())
                .unwrap_or_default()
        })
        .clone()
}

fn audit(actor: String, action: &str, target: String, source: IpAddr, outcome: &str) -> AuditEntry {
    AuditEntry {
        at: now_ms(),
        actor,
        action: action.to_owned(),
        target,
        source: source.to_string(),
        outcome: outcome.to_owned(),
        details: "{}".to_owned(),
    }
}

pub async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    let source = crate::rules::client_source(peer.ip(), &headers, &state.trusted_proxies);
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
        let entry = audit(
            "anonymous".into(),
            "user.login_failed",
            format!("user:{}", req.user),
            source,
            "denied",
        );
        state.store.record_audit(&entry).await?;
        return Err(ApiFailure::unauthorized(
            codes::UNAUTHORIZED,
            "invalid user name or password",
        ));
    };
    state.login_throttle.clear(&by_addr);
    state.login_throttle.clear(&by_user);
    let token = random_body();
    let entry = audit(
        format!("user:{}", user.name),
        "user.login",
        format!("user:{}", user.name),
        source,
        "ok",
    );
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

/// The session cookie's value, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The live, enabled user behind a session cookie: checked at every request, so a
/// disabled user is refused at once.
pub async fn user_for_cookie(state: &AppState, value: &str) -> ApiResult<UserRecord> {
    let now = now_ms();
    let user = crate::auth::by_hash(state, value, |h| async move {
        state.store.find_user_session(&h, now).await
    })
    .await?
    .filter(|u| u.disabled_at.is_none());
    user.ok_or_else(|| {
        ApiFailure::unauthorized(
            codes::UNAUTHORIZED,
            "the login session is not valid; log in again",
        )
    })
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

/// Create a user (admin API and first start).
pub async fn add_user(
    state: &AppState,
    req: CreateUserRequest,
    actor: String,
    source: IpAddr,
) -> ApiResult<UserRecord> {
    check_text("name", &req.name, false)?;
    if req.role != "admin" && req.role != "member" {
        return Err(ApiFailure::bad_request("role must be admin or member"));
    }
    if req.password.chars().count() < 12 || req.password.len() > 1024 {
        return Err(ApiFailure::bad_request(
            "the password must be 12 to 1024 characters",
        ));
    }
    let user = UserRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: req.name.clone(),
        role: req.role.clone(),
        password_hash: hash_password(req.password).await?,
        disabled_at: None,
        created_at: now_ms(),
    };
    let entry = audit(
        actor,
        "user.created",
        format!("user:{}", user.name),
        source,
        "ok",
    );
    state.store.create_user(&user, &entry).await?;
    Ok(user)
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<UserInfo>)> {
    let user = add_user(&state, req, principal.actor(), peer.ip()).await?;
    Ok((StatusCode::CREATED, Json(info(&user))))
}

pub async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<UserList>> {
    Ok(Json(UserList {
        users: state.store.list_users().await?.iter().map(info).collect(),
    }))
}

async fn change(
    state: &AppState,
    principal: &Principal,
    peer: SocketAddr,
    name: &str,
    change: UserChange,
) -> ApiResult<UserInfo> {
    let action = match change {
        UserChange::Disable => "user.disabled",
        UserChange::Enable => "user.enabled",
        UserChange::Remove => "user.removed",
    };
    let entry = audit(
        principal.actor(),
        action,
        format!("user:{name}"),
        peer.ip(),
        "ok",
    );
    let user = state
        .store
        .change_user(name, change, now_ms(), &entry)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiFailure::not_found(format!("no user {name:?}")),
            other => other.into(),
        })?;
    Ok(info(&user))
}

pub async fn disable(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
) -> ApiResult<Json<UserInfo>> {
    Ok(Json(
        change(&state, &principal, peer, &name, UserChange::Disable).await?,
    ))
}

pub async fn enable(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
) -> ApiResult<Json<UserInfo>> {
    Ok(Json(
        change(&state, &principal, peer, &name, UserChange::Enable).await?,
    ))
}

pub async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
) -> ApiResult<Json<UserInfo>> {
    Ok(Json(
        change(&state, &principal, peer, &name, UserChange::Remove).await?,
    ))
}
