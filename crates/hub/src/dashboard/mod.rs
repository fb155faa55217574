//! The web dashboard (SPEC §13): server-rendered pages (maud) for people logged in
//! with a session cookie, one embedded stylesheet and one embedded script.
//!
//! Pages only read. Every change a page offers is a form that the script sends to
//! the JSON API (`/api/v1/...`) with the `X-Muster-CSRF` header: the same handlers,
//! checks and audit entries as the CLI, and no second path to the store.
//!
//! Which role each page needs is declared in `api.rs` beside the API's routes; the
//! [`require_page`] middleware enforces it the way a browser expects (a redirect to
//! the login page, an HTML refusal), and [`secure_headers`] puts the
//! Content-Security-Policy and friends on every response of the dashboard.

pub mod access;
pub mod agent;
pub mod api_docs;
pub mod assets;
pub mod audit;
pub mod enrollment;
pub mod fleet;
pub mod hub;
mod layout;
pub mod login;
pub mod sso;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use crate::auth::{session_cookie, user_for_cookie};
use crate::principal::{Principal, Role};
use crate::state::AppState;

/// The policy of every dashboard response: our own script and stylesheet only, no
/// inline code, no framing, forms and fetches to this origin only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
base-uri 'none'";

/// Middleware: the security headers every dashboard response carries.
pub async fn secure_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages show live data and who is logged in: never from a cache.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The person looking at a page.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub name: String,
    pub admin: bool,
}

/// Middleware for pages: a live login session of a user with `role`, else a
/// redirect to `/login?next=<this page>` (no session, or it expired) or an HTML
/// refusal (a member asking for an admin page). Puts the [`Viewer`] and the
/// [`Principal`] in the request's extensions.
pub async fn require_page(
    State((state, role)): State<(Arc<AppState>, Role)>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = match session_cookie(request.headers()) {
        Some(cookie) => user_for_cookie(&state, cookie).await,
        None => {
            return to_login(request.uri());
        }
    };
    let user = match user {
        Ok(u) => u,
        Err(f) if f.status == StatusCode::UNAUTHORIZED => return to_login(request.uri()),
        Err(f) => return error_page(f.status, "The hub could not check your session."),
    };
    let admin = user.role == "admin";
    if role == Role::Admin && !admin {
        return error_page(
            StatusCode::FORBIDDEN,
            "This page is for admins. Your role lets you see the fleet and its agents.",
        );
    }
    request.extensions_mut().insert(Viewer {
        name: user.name.clone(),
        admin,
    });
    request
        .extensions_mut()
        .insert(Principal::User(Box::new(user)));
    next.run(request).await
}

/// 303 to the login page, asking it to come back to `uri` afterwards.
fn to_login(uri: &axum::http::Uri) -> Response {
    let back = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = if back == "/" {
        "/login".to_owned()
    } else {
        format!("/login?next={}", percent_encode(back))
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// Where a login may send the browser next: a path on this site (`/…`, never
/// `//host` or `/\host`, which browsers read as another site), else `/`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && n.len() <= 2048
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Percent-encode everything but unreserved characters and `/`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `s` as one segment of a URL path.
pub fn path_segment(s: &str) -> String {
    percent_encode(s).replace('/', "%2F")
}

/// A plain HTML page saying what went wrong (no layout: it may have no viewer).
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let body = html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Muster — " (status.as_u16()) }
                link rel="stylesheet" href=(assets::css_path());
            }
            body.narrow {
                main {
                    h1 { (status.canonical_reason().unwrap_or("Error")) }
                    p { (message) }
                    p { a href="/" { "Back to the fleet" } }
                }
            }
        }
    };
    (status, body).into_response()
}

/// A time as `<time>`: exact UTC in `datetime` and `title`; the script shows it in
/// the browser's zone.
pub fn time(rfc3339: Option<&str>) -> Markup {
    match rfc3339 {
        Some(t) => html! { time datetime=(t) title=(format!("{t} (UTC)")) { (t) } },
        None => html! { span.muted { "never" } },
    }
}

/// An agent's status as text, icon and colour (the colour is never alone).
pub fn status_badge(status: muster_proto::AgentStatus) -> Markup {
    use muster_proto::AgentStatus as S;
    let icon = match status {
        S::Online => "●",
        S::Degraded => "◐",
        S::Offline => "○",
        S::Revoked => "⊘",
        S::Removed => "✕",
        S::Pending => "…",
        S::Cloned => "⚠",
    };
    html! {
        span class={ "status status-" (status.as_str()) } data-status=(status.as_str()) {
            span.icon aria-hidden="true" { (icon) } " "
            span.word { (status.as_str()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        for ok in ["/", "/agents/x?y=1", "/audit?action=a%20b"] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "/a\nb",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn percent_encoding_keeps_paths_readable() {
        assert_eq!(percent_encode("/agents/x?y=1&z"), "/agents/x%3Fy%3D1%26z");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
