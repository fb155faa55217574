//! `GET /enrollment` (admins): the token form, whose answer (the one-liners from
//! `POST /api/v1/tokens`) the script shows with copy buttons; the tokens with a
//! revoke button each; the approval queue (approve, deny with a reason, approve by
//! pattern) and the trust rules (add, remove), all through their API.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use maud::html;
use muster_proto::TokenState;

use super::fleet::labels;
use super::layout::{Nav, page};
use super::{Viewer, error_page, time};
use crate::handlers::approvals::{list_approvals, list_trust_rules};
use crate::handlers::tokens::list_tokens;
use crate::state::AppState;

pub async fn page_handler(
    State(state): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let read = (
        list_tokens(State(state.clone())).await,
        list_approvals(State(state.clone())).await,
        list_trust_rules(State(state.clone())).await,
    );
    let (tokens, pending, rules) = match read {
        (Ok(Json(t)), Ok(Json(a)), Ok(Json(r))) => (t.tokens, a.requests, r.rules),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return error_page(e.status, "Enrollment could not be read; try again.");
        }
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
        section #approvals data-live-region="approvals" {
            h2 { "Waiting for approval" }
            @if !state.approval_queue {
                p.muted { "This hub refuses enrollments without a credential (no approval queue)." }
            } @else if pending.is_empty() {
                p.muted { "No machine is waiting. Machines that enroll without a token wait here." }
            } @else {
                div.table-wrap { table.approvals {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Hostname" } th scope="col" { "Kind" }
                        th scope="col" { "Source" } th scope="col" { "Operating system" } th scope="col" { "Asked" } th scope="col" { "" }
                    } }
                    tbody { @for r in &pending { tr data-request-id=(r.id) {
                        td { (r.name) }
                        td { (r.hostname) }
                        td { (r.kind.as_str()) }
                        td { (r.source) }
                        td { @if let Some(f) = &r.facts { (f.os_info) } }
                        td { (time(Some(&r.created_at))) }
                        td.row-actions {
                            form data-api={ "/api/v1/approvals/" (r.id) "/approve" } data-method="POST" {
                                button.small.primary type="submit" { "Approve" }
                            }
                            form.inline data-api={ "/api/v1/approvals/" (r.id) "/deny" } data-method="POST" data-body="reason" {
                                input.small type="text" name="reason" placeholder="reason" aria-label={ "Reason to deny " (r.name) };
                                button.danger.small type="submit" { "Deny" }
                            }
                        }
                    } } }
                } }
                form.filters data-api="/api/v1/approvals/approve" data-method="POST" data-body="pattern"
                    data-confirm="Approve every waiting machine whose name matches?" {
                    label { "Approve all matching" input type="text" name="pattern" required placeholder="lab-*"; }
                    button type="submit" { "Approve matching" }
                }
            }
        }
        section #trust-rules {
            h2 { "Trust rules" }
            p.muted.small { "Machines whose name matches a rule (and whose address is in its networks) enroll without a token, within the rule's hourly limit." }
            form.grid data-api="/api/v1/trust-rules" data-method="POST" data-body="rule" {
                label { "Hostname glob" input type="text" name="pattern" required placeholder="lab-*"; }
                label { "Source CIDRs" input type="text" name="cidrs" placeholder="10.1.0.0/16"; }
                label { "Labels" input type="text" name="labels" placeholder="site=lab"; }
                label { "At most per hour" input type="number" name="max_per_hour" min="1" placeholder="default"; }
                div { button.primary type="submit" { "Add rule" } }
            }
            @if rules.is_empty() { p.muted { "No trust rules." } } @else {
                div.table-wrap { table.rules {
                    thead { tr { th scope="col" { "Pattern" } th scope="col" { "Networks" } th scope="col" { "Labels" } th scope="col" { "Per hour" } th scope="col" { "Created" } th scope="col" { "" } } }
                    tbody { @for r in &rules { tr {
                        td { code { (r.pattern) } }
                        td { @for c in &r.cidrs { span.chip { (c) } " " } }
                        td { (labels(&r.labels)) }
                        td { (r.max_per_hour) }
                        td { (time(Some(&r.created_at))) }
                        td { form data-api={ "/api/v1/trust-rules/" (r.id) } data-method="DELETE"
                            data-confirm={ "Remove the rule for " (r.pattern) "?" } {
                            button.danger.small type="submit" { "Remove" }
                        } }
                    } } }
                } }
            }
        }
    };
    page("Enrollment", &viewer, Nav::Enrollment, true, body).into_response()
}
