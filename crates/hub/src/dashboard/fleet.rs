//! `GET /`: the fleet, a page at a time, filtered by status, label and name glob.
//!
//! Never loads the whole fleet: it walks the store's name-ordered pages from the
//! cursor, narrowed in SQL by name glob and label, keeps what matches exactly (and
//! has the status asked for), and stops at a full page or after [`SCAN_MAX`] rows,
//! offering to go on from there. Sorting by name is the store's order across all
//! pages; by last seen or status orders the rows of the page shown.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use maud::{Markup, html};
use muster_proto::{AgentInfo, AgentStatus};

use super::layout::{Nav, page};
use super::{Viewer, percent_encode, status_badge, time};
use crate::handlers::agents::agent_info_with;
use crate::rules::parse_pattern;
use crate::state::AppState;
use crate::updates::LatestReleases;
use muster_store::{AgentPageFilter, AgentRecord};

/// Rows per page.
const PAGE: usize = 50;
/// Rows read from the store per query.
const BATCH: i64 = 500;
/// Rows examined per request at most, however few match.
const SCAN_MAX: usize = 10_000;

#[derive(serde::Deserialize, Default, Clone)]
pub struct FleetQuery {
    status: Option<String>,
    label: Option<String>,
    name: Option<String>,
    sort: Option<String>,
    after: Option<String>,
}

/// A query value, with an empty form field meaning "not given".
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

struct Filter<'a> {
    status: Option<AgentStatus>,
    label: Option<(&'a str, Option<&'a str>)>,
    /// Compiled once per request: compiling per row costs more than the row.
    name: Option<globset::GlobMatcher>,
}

impl Filter<'_> {
    /// What the stored record alone decides (before the status is worked out).
    fn admits_record(&self, a: &AgentRecord) -> bool {
        self.name.as_ref().is_none_or(|g| g.is_match(&a.name))
            && self
                .label
                .is_none_or(|(k, v)| match (a.facts.labels.get(k), v) {
                    (Some(have), Some(want)) => have == want,
                    (Some(_), None) => true,
                    (None, _) => false,
                })
    }

    fn admits(&self, a: &AgentInfo) -> bool {
        self.status.is_none_or(|s| a.status == s)
    }
}

fn encode_cursor(name: &str, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{name}\n{id}"))
}

fn decode_cursor(c: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (n, i) = raw.split_once('\n')?;
    Some((n.to_owned(), i.to_owned()))
}

pub async fn page_handler(
    State(state): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<FleetQuery>,
) -> Response {
    match render(&state, &viewer, &q).await {
        Ok(m) => m.into_response(),
        Err(e) => super::error_page(e.status, "The fleet could not be read; try again."),
    }
}

async fn render(
    state: &AppState,
    viewer: &Viewer,
    q: &FleetQuery,
) -> crate::error::ApiResult<Markup> {
    let status_word = given(&q.status);
    let filter = Filter {
        status: status_word.and_then(|s| s.parse().ok()),
        label: given(&q.label).map(|l| match l.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (l, None),
        }),
        name: None,
    };
    let mut filter = filter;
    let mut bad_glob = None;
    if let Some(glob) = given(&q.name) {
        match parse_pattern(glob) {
            Ok(m) => filter.name = Some(m),
            Err(e) => bad_glob = Some(e),
        }
    }
    // The store narrows by name and label in SQL; the rows are still checked here
    // exactly (its match is a coarse LIKE), and the status only here (it lives in
    // the session registry).
    let narrow = AgentPageFilter {
        name_glob: given(&q.name).map(str::to_owned),
        label: filter
            .label
            .map(|(k, v)| (k.to_owned(), v.map(str::to_owned))),
    };
    let filtered = filter.status.is_some() || filter.label.is_some() || filter.name.is_some();
    let mut position = given(&q.after).and_then(decode_cursor);
    let mut rows: Vec<AgentInfo> = Vec::new();
    let mut scanned = 0usize;
    let mut more = false;
    let mut latest = LatestReleases::default();
    'scan: while bad_glob.is_none() {
        let batch = state
            .store
            .list_agents_page_where(
                position.as_ref().map(|(n, i)| (n.as_str(), i.as_str())),
                &narrow,
                BATCH,
            )
            .await?;
        let exhausted = (batch.len() as i64) < BATCH;
        for a in &batch {
            if rows.len() == PAGE || scanned == SCAN_MAX {
                more = true;
                break 'scan;
            }
            scanned += 1;
            position = Some((a.name.clone(), a.id.clone()));
            if !filter.admits_record(a) {
                continue;
            }
            let info = agent_info_with(a, state, &mut latest);
            if filter.admits(&info) {
                rows.push(info);
            }
        }
        if exhausted {
            break;
        }
    }
    let cut_short = more && rows.len() < PAGE;
    let sort = given(&q.sort).unwrap_or("name");
    match sort {
        "last_seen" => rows.sort_by(|a, b| b.last_seen_at.cmp(&a.last_seen_at)),
        "status" => {
            rows.sort_by(|a, b| (a.status.as_str(), &a.name).cmp(&(b.status.as_str(), &b.name)))
        }
        _ => {}
    }
    let next_link = more
        .then(|| position.as_ref().map(|(n, i)| encode_cursor(n, i)))
        .flatten()
        .map(|cursor| {
            let mut link = format!("/?after={cursor}");
            for (k, v) in [
                ("status", given(&q.status)),
                ("label", given(&q.label)),
                ("name", given(&q.name)),
                ("sort", given(&q.sort)),
            ] {
                if let Some(v) = v {
                    link.push_str(&format!("&{k}={}", percent_encode(v)));
                }
            }
            link
        });
    let first_page = given(&q.after).is_none();
    // The whole fleet by status (a users's view is never scoped to some agents).
    let counts = crate::live::fleet_counts(state).await.ok().map(|f| {
        let c = f.counts;
        [
            (AgentStatus::Online, c.online),
            (AgentStatus::Degraded, c.degraded),
            (AgentStatus::Offline, c.offline),
            (AgentStatus::Revoked, c.revoked),
            (AgentStatus::Cloned, c.cloned),
            (
                AgentStatus::Pending,
                if viewer.admin { c.pending } else { 0 },
            ),
        ]
    });
    let body = html! {
        div.heading {
            h1 { "Fleet" }
            // Counted when the page is made, then kept current by the live updates.
            @if let Some(c) = &counts {
                ul.counts #status-counts aria-label="Agents by status" {
                    @for (s, n) in c {
                        li { (status_badge(*s)) " " span data-count-status=(s.as_str()) { (n) } }
                    }
                }
            }
        }
        form.filters method="get" action="/" role="search" {
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in AgentStatus::ALL {
                        @if *s != AgentStatus::Removed {
                            option value=(s.as_str()) selected[status_word == Some(s.as_str())] { (s.as_str()) }
                        }
                    }
                }
            }
            label { "Label "
                input type="text" name="label" placeholder="key=value" value=[given(&q.label)];
            }
            label { "Name "
                input type="text" name="name" placeholder="web-*" value=[given(&q.name)];
            }
            label { "Sort "
                select name="sort" {
                    @for (v, l) in [("name", "name"), ("last_seen", "last seen"), ("status", "status")] {
                        option value=(v) selected[sort == v] { (l) }
                    }
                }
            }
            button type="submit" { "Apply" }
            @if filtered || sort != "name" { " " a href="/" { "Clear" } }
        }
        div data-live-region="fleet" {
        @if let Some(e) = &bad_glob {
            p.error role="alert" { (e) }
        } @else if rows.is_empty() && first_page && !filtered && !more {
            div.empty {
                p { "No agents yet — " a href="/enrollment" { "create an enrollment token" } " and run its one-liner on a machine." }
            }
        } @else if rows.is_empty() && !more {
            p.empty { "No agent matches these filters." }
        } @else {
            @if sort != "name" { p.muted.small { "Sorted within this page; pages follow name order." } }
            div.table-wrap {
                table.agents {
                    thead { tr {
                        th scope="col" { "Status" }
                        th scope="col" { "Name" }
                        th scope="col" { "Labels" }
                        th scope="col" { "Version" }
                        th scope="col" { "Last seen" }
                    } }
                    tbody {
                        @for a in &rows {
                            tr data-agent-id=(a.id) {
                                td.status-cell {
                                    (status_badge(a.status))
                                    @if !a.problems.is_empty() { br; span.muted.small.problems { (a.problems.join("; ")) } }
                                }
                                td { a href={ "/agents/" (a.id) } { (a.name) } }
                                td { (labels(&a.labels)) }
                                td {
                                    (a.agent_version)
                                    @if a.outdated { " " span.tag.warn title="A newer release is published for this platform" { "outdated" } }
                                }
                                td.last-seen { (time(a.last_seen_at.as_deref())) }
                            }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if !first_page { a href="/" { "« First page" } " " }
            @if let Some(link) = &next_link {
                a href=(link) rel="next" { @if cut_short { "Search further »" } @else { "Next page »" } }
            }
            @if cut_short { p.muted.small { "Looked at " (scanned) " agents for matches; more remain." } }
        }
        }
    };
    Ok(page("Fleet", viewer, Nav::Fleet, true, body))
}

/// Labels as `key=value` chips, each a link to the fleet filtered by it.
pub fn labels(labels: &std::collections::BTreeMap<String, String>) -> Markup {
    html! {
        @for (k, v) in labels {
            a.chip href={ "/?label=" (percent_encode(&format!("{k}={v}"))) } { (k) "=" (v) } " "
        }
    }
}
