//! `GET /login`: the password form. The script posts it to `POST /api/v1/login`
//! (which sets the session cookie) and then goes to `next`. The slot for single
//! sign-on buttons is left empty until SSO exists.

use axum::extract::Query;
use maud::{DOCTYPE, Markup, html};

use super::assets::{css_path, js_path};
use super::safe_next;

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn page(Query(q): Query<LoginQuery>) -> Markup {
    let next = safe_next(q.next.as_deref());
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
                    form #login-form data-next=(next) novalidate {
                        label for="user" { "User name" }
                        input #user name="user" type="text" autocomplete="username" required autofocus;
                        label for="password" { "Password" }
                        input #password name="password" type="password" autocomplete="current-password" required;
                        p.error #login-error role="alert" hidden {}
                        button.primary type="submit" { "Sign in" }
                    }
                    // Single sign-on (a later issue) puts its "Sign in with …" buttons here.
                    div.sso #sso {}
                }
            }
        }
    }
}
