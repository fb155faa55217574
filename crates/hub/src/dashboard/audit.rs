//! `GET /audit` (admins): the audit log through its API (`list_audit`), filtered
//! by agent, actor, action and date range, with the chain's verification state
//! (`verify_audit`) at the top. Pages go back in time by keyset (`before`, the
//! last `seq` shown), and every link to the next page keeps the filters.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use maud::html;

use super::layout::{Nav, page};
use super::{Viewer, error_page, percent_encode, time};
use crate::handlers::audit::{AuditQuery, list_audit, verify_audit};
use crate::state::AppState;

/// Entries shown at most.
const SHOWN: i64 = 200;

/// Characters of an entry's details shown in the table; the rest is in the cell's
/// `title`, so one long rule or label set does not stretch every row.
const DETAILS_SHOWN: usize = 80;

#[derive(serde::Deserialize, Default)]
pub struct AuditPageQuery {
    agent: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    /// `YYYY-MM-DD` (UTC), from the date inputs.
    since: Option<String>,
    until: Option<String>,
    /// Keyset cursor: entries older than this `seq`. Text, so a mangled link gets
    /// our error page rather than the extractor's.
    before: Option<String>,
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

/// The filters of this page as query parameters (`&k=v…`), for paging links.
fn filter_params(q: &AuditPageQuery) -> String {
    let mut params = String::new();
    for (k, v) in [
        ("agent", &q.agent),
        ("actor", &q.actor),
        ("action", &q.action),
        ("since", &q.since),
        ("until", &q.until),
    ] {
        if let Some(v) = given(v) {
            params.push_str(&format!("&{k}={}", percent_encode(&v)));
        }
    }
    params
}

/// The page of entries older than `seq`, same filters.
fn older_link(q: &AuditPageQuery, seq: i64) -> String {
    format!("/audit?before={seq}{}", filter_params(q))
}

/// The first page, same filters.
fn newest_link(q: &AuditPageQuery) -> String {
    match filter_params(q).strip_prefix('&') {
        Some(params) => format!("/audit?{params}"),
        None => "/audit".to_owned(),
    }
}

/// An entry's details as `key=value, …` (strings bare, the rest as JSON, nulls
/// left out), cut to
/// [`DETAILS_SHOWN`] characters; the full text comes second when it was cut, for
/// the cell's `title`. Agents supply some of these values: the caller puts both
/// into markup that escapes them.
fn details(d: &serde_json::Value) -> (String, Option<String>) {
    let text = match d {
        serde_json::Value::Null => String::new(),
        // Absent values (`reason=null`) say nothing an admin needs: left out.
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                v => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        v => v.to_string(),
    };
    if text.chars().count() <= DETAILS_SHOWN {
        return (text, None);
    }
    let mut shown: String = text.chars().take(DETAILS_SHOWN - 1).collect();
    shown.push('…');
    (shown, Some(text))
}

pub async fn page_handler(
    State(state): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<AuditPageQuery>,
) -> Response {
    let before = match given(&q.before).map(|b| b.parse::<i64>()) {
        None => None,
        Some(Ok(b)) if b >= 1 => Some(b),
        Some(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "The page link is not valid; start again from the first page.",
            );
        }
    };
    let since = given(&q.since);
    let until = given(&q.until);
    let query = AuditQuery {
        agent: given(&q.agent),
        actor: given(&q.actor),
        action: given(&q.action),
        since: since.as_deref().and_then(|d| day_ms(d, 0)),
        // The whole last day.
        until: until.as_deref().and_then(|d| day_ms(d, 1)),
        before,
        // One more than shown: whether it comes back says if there is an older page.
        limit: Some(SHOWN + 1),
    };
    let mut entries = match list_audit(State(state.clone()), Query(query)).await {
        Ok(Json(list)) => list.entries,
        Err(e) => return error_page(e.status, "The audit log could not be read; try again."),
    };
    let more = entries.len() as i64 > SHOWN;
    entries.truncate(SHOWN as usize);
    let older_link = more
        .then(|| entries.last().map(|e| older_link(&q, e.seq)))
        .flatten();
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
            p.muted.small {
                "Newest first, " (SHOWN) " a page"
                @if let Some(b) = before { ", older than entry " (b) }
                "."
            }
            div.table-wrap { table.audit {
                thead { tr {
                    th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Actor" }
                    th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Outcome" } th scope="col" { "Source" }
                    th scope="col" { "Details" }
                } }
                tbody { @for e in &entries { tr {
                    td { (e.seq) }
                    td { (time(Some(&e.at))) }
                    td { (e.actor) @if let Some(n) = &e.actor_name { " (" (n) ")" } }
                    td { code { (e.action) } }
                    td { (e.target) @if let Some(n) = &e.target_name { " (" (n) ")" } }
                    td { (e.outcome) }
                    td { (e.source) }
                    @let (shown, full) = details(&e.details);
                    td.details title=[full] { (shown) }
                } } }
            } }
        }
        @if before.is_some() || older_link.is_some() {
            nav.pager aria-label="Pages" {
                @if before.is_some() { a href=(newest_link(&q)) { "« Newest entries" } }
                @if let Some(link) = &older_link { a href=(link) rel="next" { "Older entries →" } }
            }
        }
    };
    page("Audit", &viewer, Nav::Audit, false, body).into_response()
}
