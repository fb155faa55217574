//! Who is calling: bearer credentials resolved to a [`Principal`], and the role each
//! group of routes requires.
//!
//! The role a route needs is declared once, where the router is built (`api.rs`),
//! by the middleware layered on its group; handlers read the resulting `Principal`
//! from the request extensions.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use muster_proto::{AGENT_KEY_PREFIX, API_KEY_PREFIX, codes};
use muster_store::{AgentRecord, AgentState, ApiKeyRecord};

use crate::error::{ApiFailure, ApiResult};
use crate::state::{AppState, now_ms};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub enum Principal {
    Admin(ApiKeyRecord),
    Member(ApiKeyRecord),
    Agent(Box<AgentRecord>),
    /// A dashboard user, by login session cookie.
    User(Box<muster_store::UserRecord>),
}

impl Principal {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        match self {
            Principal::Admin(k) | Principal::Member(k) => format!("key:{}", k.id),
            Principal::Agent(a) => format!("agent:{}", a.id),
            Principal::User(u) => format!("user:{}", u.name),
        }
    }
}

/// The roles routes can require, from least to most privileged for API keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An enrolled, live agent presenting its agent key.
    Agent,
    /// A member or admin API key.
    Member,
    /// An admin API key.
    Admin,
}

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
        && role != Role::Agent
        && let Some(cookie) = crate::users::session_cookie(headers)
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
        let user = crate::users::user_for_cookie(state, cookie).await?;
        return match (user.role.as_str(), role) {
            ("admin", _) | ("member", Role::Member) => Ok(Principal::User(Box::new(user))),
            _ => Err(ApiFailure::forbidden(
                codes::FORBIDDEN,
                "this user's role does not allow that",
            )),
        };
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
        Role::Member | Role::Admin => {
            let key = api_key(state, value).await?;
            crate::keys::note_use(state, &key);
            match (key.role.as_str(), role) {
                ("admin", _) => Ok(Principal::Admin(key)),
                ("member", Role::Member) => Ok(Principal::Member(key)),
                _ => Err(ApiFailure::forbidden(
                    codes::FORBIDDEN,
                    "this API key's role does not allow that",
                )),
            }
        }
    }
}

/// Middleware that admits only callers holding `role` and records who they are.
pub async fn require(
    State((state, role)): State<(Arc<AppState>, Role)>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiFailure> {
    let principal = authenticate(&state, request.headers(), request.method(), role).await?;
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}
