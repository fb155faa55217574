//! Who is calling: bearer credentials and login cookies resolved to a [`Principal`],
//! checked against the role each group of routes requires; API-key use is noted
//! here (in memory) and written in batches.
//!
//! The role a route needs is declared once, where the router is built (`api.rs`),
//! by the middleware layered on its group; handlers read the resulting `Principal`
//! from the request extensions.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use muster_proto::{AGENT_KEY_PREFIX, API_KEY_PREFIX, codes};
use muster_store::{AgentRecord, AgentState, ApiKeyRecord, UserRecord};

use crate::audit::{self, AuditExt};
use crate::clock::now_ms;
use crate::error::{ApiFailure, ApiResult};
use crate::principal::{Principal, Role};
use crate::rules::client_source;
use crate::state::AppState;

/// The bearer value of `Authorization`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|v| !v.is_empty())
}

/// Look `value` up by its keyed hash, then by hashes under earlier secrets.
pub async fn by_hash<T, F, Fut>(state: &AppState, value: &str, find: F) -> ApiResult<Option<T>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = muster_store::Result<Option<T>>>,
{
    if let Some(found) = find(state.keys.hash_secret(value)).await? {
        return Ok(Some(found));
    }
    for h in state.keys.previous_hashes(value) {
        if let Some(found) = find(h).await? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Resolve an API key value to its live record.
pub async fn api_key(state: &AppState, value: &str) -> ApiResult<ApiKeyRecord> {
    let invalid = || ApiFailure::unauthorized(codes::KEY_INVALID, "invalid API key");
    if !value.starts_with(API_KEY_PREFIX) {
        return Err(invalid());
    }
    let key = by_hash(state, value, |h| async move {
        state.store.find_api_key_by_hash(&h).await
    })
    .await?
    .ok_or_else(invalid)?;
    if key.revoked_at.is_some() {
        return Err(ApiFailure::unauthorized(
            codes::KEY_INVALID,
            "this API key was revoked",
        ));
    }
    if key.expires_at.is_some_and(|e| e <= now_ms()) {
        return Err(ApiFailure::unauthorized(
            codes::KEY_INVALID,
            "this API key has expired",
        ));
    }
    Ok(key)
}

/// Resolve an agent key value to the agent holding it, whatever its state.
pub async fn agent_by_key(state: &AppState, value: &str) -> ApiResult<Option<AgentRecord>> {
    if !value.starts_with(AGENT_KEY_PREFIX) {
        return Ok(None);
    }
    by_hash(state, value, |h| async move {
        state.store.find_agent_by_key_hash(&h).await
    })
    .await
}

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    method: &axum::http::Method,
    role: Role,
) -> ApiResult<Principal> {
    // People in a browser: the session cookie, for API-key routes only.
    if bearer(headers).is_none()
        && matches!(role, Role::Member | Role::Admin)
        && let Some(cookie) = session_cookie(headers)
    {
        // SameSite=Strict already keeps the cookie off cross-site requests; a custom
        // header, which cross-site forms cannot send, makes changes doubly sure.
        if !matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD)
            && !headers.contains_key("x-muster-csrf")
        {
            return Err(ApiFailure::forbidden(
                codes::FORBIDDEN,
                "changes made with a login session need the X-Muster-CSRF header",
            ));
        }
        let user = user_for_cookie(state, cookie).await?;
        return Ok(Principal::User(Box::new(user)));
    }
    let Some(value) = bearer(headers) else {
        return Err(ApiFailure::unauthorized(
            codes::UNAUTHORIZED,
            "this endpoint needs a credential: Authorization: Bearer <key>",
        ));
    };
    match role {
        Role::Agent => {
            let agent = agent_by_key(state, value).await?;
            match agent {
                Some(a) if a.state == AgentState::Active => Ok(Principal::Agent(Box::new(a))),
                Some(_) => Err(ApiFailure::unauthorized(
                    codes::AGENT_REVOKED,
                    "this agent's credentials were revoked or replaced",
                )),
                None => Err(ApiFailure::unauthorized(
                    codes::KEY_INVALID,
                    "invalid agent key",
                )),
            }
        }
        Role::Hub if state.keys.is_peer_token(value) => Ok(Principal::Hub),
        Role::Hub => Err(ApiFailure::unauthorized(
            codes::KEY_INVALID,
            "this endpoint is for the hubs of the fleet",
        )),
        Role::Member | Role::Admin => {
            let key = api_key(state, value).await?;
            note_key_use(state, &key);
            Ok(match key.role.as_str() {
                "admin" => Principal::Admin(key),
                _ => Principal::Member(key),
            })
        }
    }
}

/// Why `principal` may not call a route needing `role`; `None` when it may.
fn role_refusal(principal: &Principal, role: Role) -> Option<&'static str> {
    let user_role = |u: &UserRecord| match (u.role.as_str(), role) {
        ("admin", _) | ("member", Role::Member) => None,
        _ => Some("this user's role does not allow that"),
    };
    match principal {
        Principal::Admin(_) | Principal::Agent(_) => None,
        Principal::Hub if role == Role::Hub => None,
        Principal::Hub => Some("a hub's token opens only the hub-to-hub routes"),
        Principal::Member(_) if role == Role::Member => None,
        Principal::Member(_) => Some("this API key's role does not allow that"),
        Principal::User(u) => user_role(u),
    }
}

/// Middleware that admits only callers holding `role` and records who they are. A
/// known caller refused for its role is audited (`access.denied`, within the
/// refusal budget): it holds a real credential and tried to go beyond it.
pub async fn require(
    State((state, role)): State<(Arc<AppState>, Role)>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiFailure> {
    let principal = authenticate(&state, request.headers(), request.method(), role).await?;
    if let Some(why) = role_refusal(&principal, role) {
        let route = route_of(&request);
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        if let Some(peer) = peer {
            let source = client_source(peer, request.headers(), &state.trusted_proxies);
            audit_denied(&state, route, source, principal.actor()).await;
        }
        return Err(ApiFailure::forbidden(codes::FORBIDDEN, why));
    }
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

/// Longest request path an `access.denied` entry keeps.
const MAX_ROUTE: usize = 256;

/// A request's method and path as called (with the id it named), cut to
/// [`MAX_ROUTE`] characters.
fn route_of(request: &Request) -> String {
    let path: String = request.uri().path().chars().take(MAX_ROUTE).collect();
    format!("{} {path}", request.method())
}

/// Record `access.denied` for `actor` calling `route` from `source`.
async fn audit_denied(state: &AppState, route: String, source: IpAddr, actor: String) {
    let make = || async move {
        audit::entry(
            actor.clone(),
            "access.denied",
            format!("route:{route}"),
            source,
        )
        .outcome("denied")
        .details(serde_json::json!({ "route": route, "principal": actor }))
    };
    state
        .refusals
        .record(&*state.store, &state.metrics, source, make)
        .await;
}

/// The login session cookie's name.
pub const COOKIE: &str = "muster_session";

/// How long a dashboard login lasts.
pub const SESSION_LIFETIME_MS: i64 = 12 * 3600 * 1000;

/// The `Set-Cookie` value that starts a login session with this token: never
/// readable by scripts, only over TLS, never sent by another site's request.
pub fn session_set_cookie(token: &str) -> String {
    format!(
        "{COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_LIFETIME_MS / 1000
    )
}

/// The session cookie's value, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, COOKIE)
}

/// The value of the cookie called `name`, if any.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
}

/// The live, enabled user behind a session cookie: checked at every request, so a
/// disabled user is refused at once.
pub async fn user_for_cookie(state: &AppState, value: &str) -> ApiResult<UserRecord> {
    let now = now_ms();
    let user = by_hash(state, value, |h| async move {
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

/// Remember that a key was used; written by the flush task. Returns quickly: one
/// map lookup, no I/O.
pub fn note_key_use(state: &AppState, key: &ApiKeyRecord) {
    let now = now_ms();
    if key.last_used_at.is_some_and(|t| now - t < 60_000) {
        return;
    }
    let mut used = state.key_use.lock().unwrap_or_else(|p| p.into_inner());
    used.insert(key.id.clone(), now);
}

/// Write the gathered key uses (called by the `last_seen` flush task).
pub async fn flush_key_use(state: &AppState) {
    let batch: Vec<(String, i64)> =
        std::mem::take(&mut *state.key_use.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect();
    if !batch.is_empty()
        && let Err(e) = state.store.record_key_use(&batch).await
    {
        tracing::warn!(error = %e, "could not record API key use");
    }
}
