//! `GET /enrollment` (admins): the token form, whose answer (the one-liners from
//! `POST /api/v1/tokens`) the script shows with copy buttons, and the tokens with
//! a revoke button each.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use maud::html;
use muster_proto::TokenState;

use super::fleet::labels;
use super::layout::{Nav, page};
use super::{Viewer, error_page, time};
use crate::handlers::tokens::list_tokens;
use crate::state::AppState;

pub async fn page_handler(
    State(state): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let tokens = match list_tokens(State(state)).await {
        Ok(Json(list)) => list.tokens,
        Err(e) => return error_page(e.status, "The tokens could not be read; try again."),
    };
    let body = html! {
        h1 { "Enrollment" }
        section {
            h2 { "New enrollment token" }
            form.grid #token-form data-api="/api/v1/tokens" data-method="POST" data-body="token" data-then="token" {
                label { "Uses" input type="number" name="uses" min="1" placeholder="unlimited"; }
                label { "Expires after"
                    select name="ttl" {
                        option value="3600" { "1 hour" }
                        option value="86400" selected { "1 day" }
                        option value="604800" { "7 days" }
                        option value="2592000" { "30 days" }
                        option value="" { "never" }
                    }
                }
                label { "Hostname glob" input type="text" name="pattern" placeholder="web-*"; }
                label { "Source CIDRs" input type="text" name="cidrs" placeholder="10.0.0.0/8, 192.168.1.0/24"; }
                label { "Labels" input type="text" name="labels" placeholder="env=prod, team=web"; }
                label { "Description" input type="text" name="description" placeholder="what this token is for"; }
                div { button.primary type="submit" { "Create token" } }
            }
            section #token-result.result hidden aria-live="polite" {
                h3 { "Run on the machine to enroll" }
                p.muted.small { "The token is shown this once." }
                @for (id, label) in [("install-sh", "Linux and macOS (as root)"), ("install-ps", "Windows (PowerShell as Administrator)"), ("install-enroll", "Muster already installed")] {
                    div.command {
                        span.label { (label) }
                        pre { code #(id) {} }
                        button.copy type="button" data-copy=(format!("#{id}")) { "Copy" }
                    }
                }
            }
        }
        section {
            h2 { "Tokens" }
            @if tokens.is_empty() { p.empty { "No tokens yet: create one above." } } @else {
                div.table-wrap { table.tokens {
                    thead { tr {
                        th scope="col" { "Token" } th scope="col" { "Description" } th scope="col" { "Uses" }
                        th scope="col" { "Scope" } th scope="col" { "State" } th scope="col" { "Expires" } th scope="col" { "" }
                    } }
                    tbody { @for t in &tokens { tr data-token-id=(t.id) {
                        td { code { (t.prefix) "…" } }
                        td { (t.description.as_deref().unwrap_or("")) }
                        td { (t.uses) " / " @match t.max_uses { Some(m) => (m), None => "∞" } }
                        td {
                            @if let Some(p) = &t.pattern { span.chip { "name " (p) } " " }
                            @for c in &t.cidrs { span.chip { (c) } " " }
                            (labels(&t.labels))
                        }
                        td { (t.state.as_str()) }
                        td { @if t.expires_at.is_some() { (time(t.expires_at.as_deref())) } @else { "never" } }
                        td { @if t.state == TokenState::Active {
                            form data-api={ "/api/v1/tokens/" (t.id) "/revoke" } data-method="POST"
                                data-confirm="Revoke this token? Machines not yet enrolled with it will be refused." {
                                button.danger.small type="submit" { "Revoke" }
                            }
                        } }
                    } } }
                } }
            }
        }
    };
    page("Enrollment", &viewer, Nav::Enrollment, false, body).into_response()
}
