//! The browser's way through single sign-on (SPEC §14):
//!
//! 1. `GET /auth/oidc/login?next=…` makes `state`, `nonce` and a PKCE verifier,
//!    seals them (and `next`) into a cookie scoped to `/auth/oidc` for ten minutes,
//!    and sends the browser to the provider.
//! 2. The provider sends it back to `GET /auth/oidc/callback?code=…&state=…`. The
//!    cookie must open and its `state` match; the code is exchanged (with the
//!    verifier) and the ID token checked; [`admit`] decides; the store records the
//!    user and a login session in one transaction with its audit entry.
//!
//! Every refusal is audited with its reason (within the refusal budget, so a flood
//! of forged callbacks cannot grow the log without bound) and shown plainly; no
//! token or code is ever shown or logged.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, html};
use muster_store::StoreError;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::{assets, error_page, safe_next};
use crate::audit::{self, AuditExt};
use crate::auth::{SESSION_LIFETIME_MS, cookie, session_set_cookie};
use crate::clock::now_ms;
use crate::extract::ClientSource;
use crate::oidc::Settings;
use crate::oidc::provider::{self, Claims, OidcError};
use crate::secrets::random_body;
use crate::sso::admit::{Identity, admit};
use crate::sso::{current, redirect_url};
use crate::state::AppState;

const PENDING_COOKIE: &str = "muster_sso";
/// Associated data of the sealed cookie: it opens as nothing else.
const PENDING_AAD: &[u8] = b"muster sso pending sign-in";
/// How long a sign-in may take at the provider.
const PENDING_TTL_MS: i64 = 10 * 60 * 1000;

/// What the callback must check, sealed into the cookie.
#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
    issuer: String,
    expires: i64,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /auth/oidc/login`: off to the provider.
pub async fn login(State(state): State<Arc<AppState>>, Query(q): Query<LoginQuery>) -> Response {
    let settings = match current(&state).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "Single sign-on is not set up on this hub (muster sso set).",
            );
        }
        Err(f) => return error_page(f.status, &f.message),
    };
    let found = match state.sso.cache.get(&state.sso.http, &settings.issuer).await {
        Ok(d) => d,
        Err(e) => return provider_down(&e),
    };
    let begun = match provider::begin(&found, &settings, &redirect_url(&state)) {
        Ok(b) => b,
        Err(e) => return provider_down(&e),
    };
    let pending = Pending {
        state: begun.state,
        nonce: begun.nonce,
        verifier: begun.verifier,
        next: safe_next(q.next.as_deref()),
        issuer: settings.issuer,
        expires: now_ms() + PENDING_TTL_MS,
    };
    let sealed = state.keys.encrypt(
        &serde_json::to_vec(&pending).unwrap_or_default(),
        PENDING_AAD,
    );
    // Lax, not Strict: the provider's redirect back is a navigation from another
    // site, and the cookie must come along with it.
    let set = format!(
        "{PENDING_COOKIE}={sealed}; HttpOnly; Secure; SameSite=Lax; Path=/auth/oidc; Max-Age={}",
        PENDING_TTL_MS / 1000
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    let h = response.headers_mut();
    if let (Ok(to), Ok(c)) = (
        HeaderValue::from_str(&begun.url),
        HeaderValue::from_str(&set),
    ) {
        h.insert(header::LOCATION, to);
        h.insert(header::SET_COOKIE, c);
    }
    response
}

fn provider_down(e: &OidcError) -> Response {
    tracing::warn!(error = %e, "single sign-on: the provider failed");
    error_page(
        StatusCode::BAD_GATEWAY,
        "The sign-in provider could not be reached or answered badly. Try again in a \
         moment; if it persists, an admin finds the cause in the hub's log.",
    )
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// A refused sign-in: the reason for the audit log, what the person is told.
struct Refused {
    reason: &'static str,
    /// For the audit entry: what exactly (never a token).
    detail: Option<String>,
    status: StatusCode,
    message: String,
    who: Option<Identity>,
}

impl Refused {
    fn new(reason: &'static str, status: StatusCode, message: impl Into<String>) -> Self {
        Refused {
            reason,
            detail: None,
            status,
            message: message.into(),
            who: None,
        }
    }
    fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(cut(&d.into(), 300));
        self
    }
}

/// `GET /auth/oidc/callback`: back from the provider.
pub async fn callback(
    State(state): State<Arc<AppState>>,
    ClientSource(source): ClientSource,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let outcome = finish(&state, &headers, q, source).await;
    // Whatever happened, the pending sign-in is spent.
    let clear =
        format!("{PENDING_COOKIE}=; HttpOnly; Secure; SameSite=Lax; Path=/auth/oidc; Max-Age=0");
    let mut response = match outcome {
        Ok(Done { next, token }) => signed_in(&session_set_cookie(&token), &next),
        Err(r) => {
            refuse(&state, source, &r).await;
            refused_page(r.status, &r.message)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// A sign-in let through: where to go, and the new login session's token.
struct Done {
    next: String,
    token: String,
}

async fn finish(
    state: &AppState,
    headers: &HeaderMap,
    q: CallbackQuery,
    source: IpAddr,
) -> Result<Done, Refused> {
    let bad_state = || {
        Refused::new(
            "bad_state",
            StatusCode::BAD_REQUEST,
            "This sign-in was not started here, was started too long ago, or was \
             already used. Start again from the sign-in page.",
        )
    };
    let pending: Pending = cookie(headers, PENDING_COOKIE)
        .and_then(|c| state.keys.decrypt(c, PENDING_AAD).ok())
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or_else(|| bad_state().detail("no pending sign-in cookie"))?;
    if pending.expires <= now_ms() {
        return Err(bad_state().detail("the pending sign-in expired"));
    }
    let given = q.state.unwrap_or_default();
    if !bool::from(given.as_bytes().ct_eq(pending.state.as_bytes())) {
        return Err(bad_state().detail("state does not match"));
    }
    if let Some(error) = q.error {
        // The provider's own words, shown as text (escaped by the page) and cut.
        let said = match q.error_description {
            Some(d) => format!("{} ({})", cut(&error, 80), cut(&d, 200)),
            None => cut(&error, 80),
        };
        return Err(Refused::new(
            "provider_error",
            StatusCode::FORBIDDEN,
            format!("The sign-in provider refused: {said}"),
        )
        .detail(said));
    }
    let code = q
        .code
        .filter(|c| !c.is_empty() && c.len() <= 4096)
        .ok_or_else(|| bad_state().detail("no code"))?;
    let settings = current(state)
        .await
        .ok()
        .flatten()
        .filter(|s| s.issuer == pending.issuer)
        .ok_or_else(|| bad_state().detail("single sign-on settings changed meanwhile"))?;
    let _slot = state
        .sso
        .exchange_slot()
        .await
        .map_err(|f| Refused::new("busy", StatusCode::SERVICE_UNAVAILABLE, f.message))?;
    let sso = &state.sso;
    let found = sso
        .cache
        .get(&sso.http, &settings.issuer)
        .await
        .map_err(oidc_refusal)?;
    let claims = provider::finish(
        &sso.cache,
        &sso.http,
        found,
        &settings,
        &redirect_url(state),
        provider::Returned {
            code: &code,
            verifier: &pending.verifier,
            nonce: &pending.nonce,
        },
    )
    .await
    .map_err(oidc_refusal)?;
    let id = identity(&settings, claims).map_err(|why| {
        Refused::new(
            "bad_claims",
            StatusCode::FORBIDDEN,
            "The provider's answer could not be used.",
        )
        .detail(why)
    })?;
    let store_failed = |e: StoreError| {
        tracing::error!(error = %e, "single sign-on: the database failed");
        Refused::new(
            "store_failed",
            StatusCode::SERVICE_UNAVAILABLE,
            "The hub could not record the sign-in. Try again.",
        )
    };
    let linked = state
        .store
        .find_user_by_subject(&id.issuer, &id.subject)
        .await
        .map_err(store_failed)?;
    // Entra: the UPN first (its `email` may be unverified), then the email.
    let names: Vec<&String> = id.username.iter().chain(id.email.iter()).collect();
    let mut by_name = None;
    if linked.is_none() {
        for name in names {
            by_name = state.store.find_user(name).await.map_err(store_failed)?;
            if by_name.is_some() {
                break;
            }
        }
    }
    let groups = state.store.list_sso_groups().await.map_err(store_failed)?;
    let now = now_ms();
    let admission = admit(&id, linked, by_name, &groups, now).map_err(|r| {
        let mut refused = Refused::new(r.reason(), StatusCode::FORBIDDEN, r.message());
        refused.who = Some(id.clone());
        refused
    })?;
    let token = random_body();
    let (user, new, matched) = (admission.user, admission.new, admission.matched);
    state
        .store
        .record_sso_login(
            &user,
            new,
            &state.keys.hash_secret(&token),
            now + SESSION_LIFETIME_MS,
            &login_entry(&user, &id, &matched, new, source),
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) | StoreError::NotFound => Refused::new(
                "changed_meanwhile",
                StatusCode::CONFLICT,
                "Your user changed while you signed in. Start again from the sign-in page.",
            ),
            other => store_failed(other),
        })?;
    Ok(Done {
        next: pending.next,
        token,
    })
}

fn login_entry(
    user: &muster_store::UserRecord,
    id: &Identity,
    matched: &[String],
    new: bool,
    source: IpAddr,
) -> muster_store::AuditEntry {
    audit::entry(
        format!("user:{}", user.name),
        "user.sso_login",
        format!("user:{}", user.name),
        source,
    )
    .details(serde_json::json!({
        "subject": id.subject,
        "issuer": id.issuer,
        "role": user.role,
        "groups": matched,
        "created": new,
    }))
}

fn oidc_refusal(e: OidcError) -> Refused {
    let (status, message) = match &e {
        OidcError::Unreachable(_) => (
            StatusCode::BAD_GATEWAY,
            "The sign-in provider could not be reached or answered badly. Try again in a moment.",
        ),
        OidcError::Exchange(_) => (
            StatusCode::FORBIDDEN,
            "The sign-in provider did not accept this sign-in (a code is good once, for a \
             short time). Start again from the sign-in page.",
        ),
        OidcError::Token { .. } => (
            StatusCode::FORBIDDEN,
            "The sign-in provider's answer did not pass the hub's checks, so you were not \
             signed in. An admin finds why in the audit log.",
        ),
    };
    let detail = match &e {
        OidcError::Token { kind, detail } => format!("{kind}: {detail}"),
        other => other.to_string(),
    };
    if matches!(e, OidcError::Unreachable(_)) {
        tracing::warn!(error = %e, "single sign-on: the provider failed");
    }
    Refused::new(e.reason(), status, message).detail(detail)
}

/// The claims as an [`Identity`], each value bounded and cleaned: they came from
/// outside and end up in the database, the audit log and pages.
fn identity(settings: &Settings, c: Claims) -> Result<Identity, String> {
    let subject = c.subject;
    if subject.is_empty() || subject.len() > 255 || subject.chars().any(char::is_control) {
        return Err("the subject is empty, too long or has control characters".to_owned());
    }
    let clean = |v: Option<String>, max: usize| {
        v.map(|s| s.trim().to_owned()).filter(|s| {
            !s.is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
        })
    };
    // An address the provider says is unverified is not used to find anyone.
    let email = clean(c.email, 254)
        .filter(|_| c.email_verified != Some(false))
        .filter(|e| crate::validate::looks_like_email(e))
        .map(|e| e.to_lowercase());
    // `preferred_username` is trusted only where the tenant's admins set it (Entra's
    // UPN); elsewhere people may choose their own, and could pick someone's email.
    let username = clean(c.preferred_username, 254)
        .filter(|_| crate::oidc::settings::is_entra(&settings.issuer))
        .filter(|u| crate::validate::looks_like_email(u))
        .map(|u| u.to_lowercase());
    let claim = &settings.groups_claim;
    let groups = match c.extra.get(claim) {
        Some(serde_json::Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(|v| v.as_str())
                .filter(|g| !g.is_empty() && g.len() <= 256)
                .take(5000)
                .map(str::to_owned)
                .collect(),
        ),
        Some(serde_json::Value::String(one)) if one.len() <= 256 => Some(vec![one.clone()]),
        _ => None,
    };
    // Entra's group overage: too many groups for the token, a pointer instead.
    let overage = groups.is_none()
        && (c
            .extra
            .get("_claim_names")
            .and_then(|n| n.get(claim))
            .is_some()
            || c.extra.get("hasgroups").and_then(|v| v.as_bool()) == Some(true));
    Ok(Identity {
        issuer: settings.issuer.clone(),
        subject,
        email,
        username,
        display_name: clean(c.name, 200),
        groups,
        overage,
    })
}

/// Record a refusal in the audit log (within the refusal budget).
async fn refuse(state: &AppState, source: IpAddr, r: &Refused) {
    let target = match &r.who {
        Some(id) => format!(
            "user:{}",
            id.email
                .clone()
                .or_else(|| id.username.clone())
                .unwrap_or_else(|| format!("sub:{}", id.subject))
        ),
        None => "sso".to_owned(),
    };
    let mut details = serde_json::json!({ "reason": r.reason });
    if let Some(d) = &r.detail {
        details["detail"] = d.clone().into();
    }
    if let Some(id) = &r.who {
        details["subject"] = cut(&id.subject, 255).into();
        if let Some(g) = &id.groups {
            details["groups"] = g.iter().take(20).cloned().collect::<Vec<_>>().into();
        }
    }
    state
        .refusals
        .record(&*state.store, &state.metrics, source, || async move {
            audit::entry("anonymous", "user.sso_refused", target, source)
                .outcome("denied")
                .details(details)
        })
        .await;
}

fn cut(s: &str, max: usize) -> String {
    let cleaned: String = s.chars().filter(|c| !c.is_control()).collect();
    match cleaned.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &cleaned[..i]),
        None => cleaned,
    }
}

/// Signed in: the session cookie is set, then a page that moves on by itself. Not
/// a redirect: the browser arrived from the provider's site, and a redirect would
/// still count as that site's navigation, which does not carry the SameSite=Strict
/// session cookie; a navigation from this page does.
fn signed_in(set_cookie: &str, next: &str) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(format!("0;url={next}"));
                title { "Signed in — Muster" }
                link rel="stylesheet" href=(assets::css_path());
            }
            body.narrow {
                main #main {
                    h1 { "Signed in" }
                    p { a #continue href=(next) { "Continue" } }
                }
            }
        }
    };
    let mut response = body.into_response();
    if let Ok(v) = HeaderValue::from_str(set_cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

fn refused_page(status: StatusCode, message: &str) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign-in refused — Muster" }
                link rel="stylesheet" href=(assets::css_path());
            }
            body.narrow {
                main #main {
                    h1 { "Sign-in refused" }
                    p #sso-error role="alert" { (message) }
                    p { a href="/login" { "Back to the sign-in page" } }
                }
            }
        }
    };
    (status, body).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        crate::oidc::settings::check(
            &muster_proto::SetSsoRequest {
                issuer: Some("https://idp.example.com".into()),
                client_id: "c".into(),
                ..Default::default()
            },
            "hub",
        )
        .unwrap()
    }

    fn claims(extra: serde_json::Value) -> Claims {
        Claims {
            subject: "s-1".into(),
            email: Some("Ann@Example.COM".into()),
            email_verified: None,
            name: Some("Ann\u{7}  ".into()),
            preferred_username: None,
            extra: serde_json::from_value(extra).unwrap(),
            from_userinfo: false,
        }
    }

    #[test]
    fn claims_become_a_bounded_clean_identity() {
        let id = identity(
            &settings(),
            claims(serde_json::json!({"groups": ["g1", "", 7, "g2"]})),
        )
        .unwrap();
        assert_eq!(id.email.as_deref(), Some("ann@example.com"));
        assert_eq!(id.groups.unwrap(), ["g1", "g2"]);
        assert_eq!(
            id.display_name, None,
            "a name with a control character is dropped"
        );
        assert!(!id.overage);
        // One group as a string is a list of one.
        let id = identity(&settings(), claims(serde_json::json!({"groups": "g1"}))).unwrap();
        assert_eq!(id.groups.unwrap(), ["g1"]);
    }

    #[test]
    fn an_unverified_email_finds_nobody() {
        let mut c = claims(serde_json::json!({}));
        c.email_verified = Some(false);
        assert_eq!(identity(&settings(), c).unwrap().email, None);
        let mut c = claims(serde_json::json!({}));
        c.email = Some("not an email".into());
        assert_eq!(identity(&settings(), c).unwrap().email, None);
    }

    #[test]
    fn entra_group_overage_is_recognized() {
        let c = claims(serde_json::json!({
            "_claim_names": {"groups": "src1"},
            "_claim_sources": {"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}}
        }));
        let id = identity(&settings(), c).unwrap();
        assert!(id.overage && id.groups.is_none());
        let c = claims(serde_json::json!({"hasgroups": true}));
        assert!(identity(&settings(), c).unwrap().overage);
    }

    #[test]
    fn a_bad_subject_is_refused() {
        let mut c = claims(serde_json::json!({}));
        c.subject = "a\nb".into();
        assert!(identity(&settings(), c).is_err());
        let mut c = claims(serde_json::json!({}));
        c.subject = "x".repeat(256);
        assert!(identity(&settings(), c).is_err());
    }

    #[test]
    fn cut_bounds_and_cleans() {
        assert_eq!(cut("abc", 2), "ab…");
        assert_eq!(cut("a\u{1b}[31mb", 10), "a[31mb");
    }
}
