//! `GET /audit` (admins): the audit log through its API (`list_audit`), filtered
//! by agent, actor, action and date range, with the chain's verification state
//! (`verify_audit`) at the top.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use maud::html;

use super::layout::{Nav, page};
use super::{Viewer, error_page, time};
use crate::handlers::audit::{AuditQuery, list_audit, verify_audit};
use crate::state::AppState;

/// Entries shown at most.
const SHOWN: i64 = 200;

#[derive(serde::Deserialize, Default)]
pub struct AuditPageQuery {
    agent: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    /// `YYYY-MM-DD` (UTC), from the date inputs.
    since: Option<String>,
    until: Option<String>,
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Unix milliseconds at the start of a `YYYY-MM-DD` day (UTC), plus `days`.
fn day_ms(day: &str, days: i64) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(day, &format).ok()?;
    let t = date.midnight().assume_utc() + time::Duration::days(days);
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

pub async fn page_handler(
    State(state): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<AuditPageQuery>,
) -> Response {
    let since = given(&q.since);
    let until = given(&q.until);
    let query = AuditQuery {
        agent: given(&q.agent),
        actor: given(&q.actor),
        action: given(&q.action),
        since: since.as_deref().and_then(|d| day_ms(d, 0)),
        // The whole last day.
        until: until.as_deref().and_then(|d| day_ms(d, 1)),
        limit: Some(SHOWN),
    };
    let entries = match list_audit(State(state.clone()), Query(query)).await {
        Ok(Json(list)) => list.entries,
        Err(e) => return error_page(e.status, "The audit log could not be read; try again."),
    };
    let verdict = verify_audit(State(state)).await.ok().map(|Json(v)| v);
    let body = html! {
        div.heading {
            h1 { "Audit" }
            @match &verdict {
                Some(v) if v.ok => p.chain.chain-ok #chain-state data-chain="ok" {
                    span aria-hidden="true" { "✔ " } "Chain verified: " (v.count) " entries, none changed." }
                Some(v) => p.chain.chain-broken #chain-state data-chain="broken" {
                    span aria-hidden="true" { "✖ " } "Chain broken"
                    @if let Some(seq) = v.broken_seq { " at entry " (seq) }
                    @if let Some(p) = &v.problem { ": " (p) }
                },
                None => p.chain #chain-state data-chain="unknown" { "The chain could not be verified." },
            }
        }
        form.filters method="get" action="/audit" role="search" {
            label { "Agent" input type="text" name="agent" placeholder="name or UUID" value=[given(&q.agent)]; }
            label { "Actor" input type="text" name="actor" placeholder="user:root" value=[given(&q.actor)]; }
            label { "Action" input type="text" name="action" placeholder="agent.revoked" value=[given(&q.action)]; }
            label { "From (UTC)" input type="date" name="since" value=[since.as_deref()]; }
            label { "To (UTC)" input type="date" name="until" value=[until.as_deref()]; }
            button type="submit" { "Apply" }
            " " a href="/audit" { "Clear" }
        }
        @if entries.is_empty() { p.empty { "No entries match." } } @else {
            p.muted.small { "Newest first, at most " (SHOWN) "." }
            div.table-wrap { table.audit {
                thead { tr {
                    th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Actor" }
                    th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Outcome" } th scope="col" { "Source" }
                } }
                tbody { @for e in &entries { tr {
                    td { (e.seq) }
                    td { (time(Some(&e.at))) }
                    td { (e.actor) @if let Some(n) = &e.actor_name { " (" (n) ")" } }
                    td { code { (e.action) } }
                    td { (e.target) @if let Some(n) = &e.target_name { " (" (n) ")" } }
                    td { (e.outcome) }
                    td { (e.source) }
                } } }
            } }
        }
    };
    page("Audit", &viewer, Nav::Audit, false, body).into_response()
}
