//! `GET /agents/{id}`: one agent — identity and certificate, facts, labels, its
//! packs and probes (with a form to run one and see the answer), its last update,
//! its audit trail (admins), and the admin actions (label edit, pack decisions,
//! update, revoke, remove) as forms the script sends to the JSON API.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use maud::html;
use muster_proto::AgentStatus;
use muster_store::AgentState;

use super::fleet::labels;
use super::layout::{Nav, page};
use super::{Viewer, error_page, status_badge, time};
use crate::clock::rfc3339;
use crate::handlers::agents::{agent_info, find_agent, session_history};
use crate::handlers::audit::{AuditQuery, list_audit};
use crate::state::AppState;

/// Audit entries shown on the page.
const TRAIL: i64 = 50;

pub async fn page_handler(
    State(state): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let agent = match find_agent(&state, &id).await {
        Ok(a) if a.state != AgentState::Removed => a,
        Ok(_) => return error_page(StatusCode::NOT_FOUND, "This agent was removed."),
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            return error_page(StatusCode::NOT_FOUND, "There is no such agent.");
        }
        Err(e) => return error_page(e.status, "The agent could not be read; try again."),
    };
    let info = agent_info(&agent, &state);
    // The audit API itself, as the CLI's `muster audit list --agent` calls it.
    let trail = if viewer.admin {
        let q = AuditQuery {
            agent: Some(agent.id.clone()),
            limit: Some(TRAIL),
            ..Default::default()
        };
        match list_audit(State(state.clone()), Query(q)).await {
            Ok(Json(list)) => Some(list.entries),
            Err(_) => None,
        }
    } else {
        None
    };
    let sessions = session_history(&state, &agent.id)
        .await
        .map(|h| h.sessions)
        .ok();
    let live = agent.state == AgentState::Active;
    let packs = crate::probes::packs_of(&state, &agent).await.ok();
    let probes: Vec<&muster_proto::ProbeInfo> = packs
        .iter()
        .flatten()
        .filter(|p| p.state == "ready")
        .flat_map(|p| p.pack.probes.iter())
        .collect();
    let body = html! {
        div.heading {
            h1 { (info.name) }
            div data-agent-id=(info.id) { span.status-cell { (status_badge(info.status)) } }
        }
        @if viewer.admin {
            div.actions {
                @if live && info.status != AgentStatus::Revoked {
                    form data-api={ "/api/v1/agents/" (info.id) "/revoke" } data-method="POST"
                        data-confirm={ "Revoke " (info.name) "? Its certificate and key stop working at once." } {
                        button.danger type="submit" #revoke { "Revoke" }
                    }
                }
                form data-api={ "/api/v1/agents/" (info.id) } data-method="DELETE" data-then="/"
                    data-confirm={ "Remove " (info.name) " from the fleet? Its credentials stop working; its history stays in the audit log." } {
                    button.danger type="submit" #remove { "Remove" }
                }
            }
        }
        section {
            h2 { "Identity" }
            dl.facts {
                dt { "UUID" } dd { code { (info.id) } " " button.copy type="button" data-copy-text=(info.id) { "Copy" } }
                dt { "Name" } dd { (info.name) }
                dt { "Certificate serial" } dd { code { (agent.cert_serial) } }
                dt { "Certificate expires" } dd { (time(info.cert_expires_at.as_deref())) }
                dt { "Generation" } dd { (info.generation) }
                dt { "Enrolled" } dd { (time(Some(&info.enrolled_at))) }
                dt { "Last seen" } dd.last-seen { (time(info.last_seen_at.as_deref())) }
                @if let Some(at) = agent.revoked_at { dt { "Revoked" } dd { (time(Some(&rfc3339(at)))) } }
            }
        }
        section {
            h2 { "Facts" }
            dl.facts {
                dt { "Hostname" } dd { (info.hostname) }
                dt { "Operating system" } dd #os-info { (info.os_info) }
                dt { "Architecture" } dd { (info.arch) }
                dt { "Address" } dd { (info.ip) }
                dt { "Agent version" } dd {
                    (info.agent_version)
                    @if info.outdated { " " span.tag.warn { "outdated" } }
                }
                @if !info.packs.is_empty() { dt { "Packs" } dd { (info.packs.join(", ")) } }
                @if !info.interfaces.is_empty() {
                    dt { "Interfaces" } dd {
                        ul.plain { @for i in &info.interfaces { li {
                            strong { (i.name) } " " code { (i.mac.as_deref().unwrap_or("")) } " "
                            (i.addresses.join(", "))
                            @if !i.is_up { " " span.muted { "(down)" } }
                        } } }
                    }
                }
            }
        }
        section {
            h2 { "Labels" }
            p.labels { @if info.labels.is_empty() { span.muted { "none" } } @else { (labels(&info.labels)) } }
            @if viewer.admin && live {
                form.stack data-api={ "/api/v1/agents/" (info.id) "/labels" } data-method="POST" data-body="labels" {
                    label { "Set (key=value, one per line or comma-separated)"
                        textarea name="set" rows="2" {} }
                    label { "Remove (keys)" input type="text" name="remove" placeholder="env, team"; }
                    button type="submit" { "Change labels" }
                }
            }
        }
        section #probes {
            h2 { "Packs and probes" }
            @match &packs {
                None => p.error { "The agent's packs could not be read; reload to try again." },
                Some(list) if list.is_empty() => p.muted { "This agent announced no packs (agents before 0.2 offer none)." },
                Some(list) => {
                    div.table-wrap { table.packs {
                        thead { tr { th { "Pack" } th { "Version" } th { "State" } th { "Needs" } th { "Probes" } th { "" } } }
                        tbody { @for pk in list { tr data-pack=(pk.pack.name) {
                            td { (pk.pack.name) }
                            td { (pk.pack.version) }
                            td.pack-state {
                                span class={ "tag pack-" (pk.state) } { (pk.state) }
                                @if let Some(r) = &pk.pack.reason { " " span.muted { (r) } }
                            }
                            td { (pk.pack.needs.join(", ")) }
                            td { (pk.pack.probes.iter().map(|q| q.name.as_str()).collect::<Vec<_>>().join(", ")) }
                            td.row-actions { @if viewer.admin && live && (pk.state == "pending" || pk.state == "denied" || pk.state == "ready") {
                                @if pk.state != "ready" || !pk.pack.needs.is_empty() {
                                    @if pk.state != "ready" {
                                        form data-api={ "/api/v1/agents/" (info.id) "/packs/" (super::path_segment(&pk.pack.name)) "/approve" } data-method="POST"
                                            data-confirm={ "Let " (pk.pack.name) " on " (info.name) " use: " (pk.pack.needs.join(", ")) "?" } {
                                            button.small type="submit" { "Approve" }
                                        }
                                    }
                                    @if pk.state != "denied" {
                                        form data-api={ "/api/v1/agents/" (info.id) "/packs/" (super::path_segment(&pk.pack.name)) "/deny" } data-method="POST"
                                            data-confirm={ "Refuse " (pk.pack.name) " on " (info.name) "?" } {
                                            button.danger.small type="submit" { "Deny" }
                                        }
                                    }
                                }
                            } }
                        } } }
                    } }
                    @if live && !probes.is_empty() {
                        form.stack #probe-form data-api={ "/api/v1/agents/" (info.id) "/probes/{probe}" } data-method="POST" data-body="probe" data-then="probe" {
                            label { "Probe"
                                select name="probe" { @for q in &probes { option value=(q.name) { (q.name) " — " (q.description) } } }
                            }
                            label { "Parameters (key=value, one per line; e.g. unit=nginx.service)"
                                textarea name="params" rows="2" {} }
                            button.primary type="submit" { "Run probe" }
                        }
                        section #probe-result.result hidden aria-live="polite" {
                            h3 #probe-outcome {}
                            pre { code #probe-output {} }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Last update" }
            @if viewer.admin && live {
                form.filters data-api={ "/api/v1/agents/" (info.id) "/update" } data-method="POST" data-body="update"
                    data-confirm={ "Send " (info.name) " an update order now?" } {
                    label { "Version" input type="text" name="version" placeholder="newest published"; }
                    button type="submit" { "Update agent" }
                }
            }
            @match &info.update {
                Some(u) => p { (serde_json::to_value(u.phase).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
                    " · version " (u.version) " · " (time(Some(&u.at)))
                    @if !u.message.is_empty() { " — " (u.message) } },
                None => p.muted { "This agent never updated itself through the hub." },
            }
        }
        section {
            h2 { "Sessions" }
            @match &sessions {
                None => p.error { "The session history could not be read; reload to try again." },
                Some(list) if list.is_empty() => p.muted { "No session yet: the agent has not connected since it enrolled." },
                Some(list) => div.table-wrap { table #sessions {
                    thead { tr { th { "Connected" } th { "Disconnected" } th { "Address" } th { "Why it ended" } } }
                    tbody { @for s in list { tr {
                        td { (time(Some(&s.connected_at))) }
                        td { @match &s.disconnected_at { Some(t) => (time(Some(t))), None => "connected" } }
                        td { (s.address) }
                        td { (s.reason.as_deref().unwrap_or("")) }
                    } } }
                } },
            }
        }
        @if let Some(entries) = &trail {
            section {
                h2 { "Audit trail" }
                @if entries.is_empty() { p.muted { "No entries." } } @else {
                    div.table-wrap { table {
                        thead { tr { th { "When" } th { "Actor" } th { "Action" } th { "Outcome" } th { "Source" } } }
                        tbody { @for e in entries { tr {
                            td { (time(Some(&e.at))) }
                            td { (e.actor_name.as_deref().unwrap_or(&e.actor)) }
                            td { code { (e.action) } }
                            td { (e.outcome) }
                            td { (e.source) }
                        } } }
                    } }
                }
            }
        }
    };
    page(&info.name, &viewer, Nav::Fleet, true, body).into_response()
}
