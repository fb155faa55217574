//! `GET /login`: the password form and, when single sign-on is set up, the "Sign
//! in with …" button (a plain link to `/auth/oidc/login`, SPEC §14). The script
//! posts the form to `POST /api/v1/login` (which sets the session cookie) and then
//! goes to `next`. With `--password-login off` only the button is offered.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, html};

use super::assets::{css_path, js_path};
use super::safe_next;
use crate::auth::{session_cookie, user_for_cookie};
use crate::state::AppState;

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    // Already signed in: straight on.
    if let Some(cookie) = session_cookie(&headers)
        && user_for_cookie(&state, cookie).await.is_ok()
    {
        let mut response = StatusCode::SEE_OTHER.into_response();
        let to = HeaderValue::from_str(&next).unwrap_or(HeaderValue::from_static("/"));
        response.headers_mut().insert(header::LOCATION, to);
        return response;
    }
    // A database hiccup costs the button, not the page: passwords still work.
    let sso = crate::sso::current(&state).await.ok().flatten();
    let passwords = state.sso.password_login;
    let sso_href = if next == "/" {
        "/auth/oidc/login".to_owned()
    } else {
        format!("/auth/oidc/login?next={}", super::percent_encode(&next))
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in — Muster" }
                link rel="stylesheet" href=(css_path());
                script src=(js_path()) defer {}
            }
            body.narrow {
                main #main.login {
                    h1 { "Muster" }
                    @if let Some(s) = &sso {
                        div.sso #sso {
                            a.button.primary #sso-login href=(sso_href) {
                                "Sign in with " (s.display_name)
                            }
                        }
                    }
                    @if passwords {
                        @if sso.is_some() {
                            p.muted.or { "or with a password" }
                        }
                        form #login-form data-next=(next) novalidate {
                            label for="user" { "User name" }
                            input #user name="user" type="text" autocomplete="username" required autofocus;
                            label for="password" { "Password" }
                            input #password name="password" type="password" autocomplete="current-password" required;
                            p.error #login-error role="alert" hidden {}
                            button.primary type="submit" { "Sign in" }
                        }
                    } @else if sso.is_none() {
                        p.error role="alert" {
                            "Password login is off and single sign-on is not set up. \
                             An admin can restart the hub with --password-login on."
                        }
                    }
                }
            }
        }
    }
    .into_response()
}
