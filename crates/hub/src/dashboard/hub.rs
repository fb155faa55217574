//! `GET /hub` (admins): what this hub is — version, address, the CA's hash and the
//! pin tokens carry, the database backend —, the hubs sharing its database, and the
//! integrations it probes (SPEC §15) with their status and a button to test each.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use maud::{Markup, html};

use super::layout::{Nav, page};
use super::{Viewer, time};
use crate::handlers::hubs::hub_list;
use crate::state::AppState;

pub async fn page_handler(
    State(state): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
) -> Markup {
    let hubs = hub_list(&state).await;
    let integrations = state.store.list_integrations().await;
    let hash = state.ca_hash.to_string();
    let pin = state.ca_hash.pin();
    let body = html! {
        h1 { "Hub" }
        dl.facts {
            dt { "Version" } dd { (env!("CARGO_PKG_VERSION")) }
            dt { "Address" } dd { code { (state.hub_url) } }
            dt { "CA hash" } dd { code #ca-hash { (hash) } " " button.copy type="button" data-copy="#ca-hash" { "Copy" } }
            dt { "CA pin (in tokens)" } dd { code #ca-pin { (pin) } " " button.copy type="button" data-copy="#ca-pin" { "Copy" } }
            dt { "TLS certificate" } dd { @if state.public_tls { "from --tls-cert (publicly trusted)" } @else { "issued by the hub's CA" } }
            dt { "Database" } dd { (state.store.backend()) }
            dt { "Enrollment without a credential" } dd { @if state.approval_queue { "queued for approval" } @else { "refused" } }
        }
        h2 { "Hubs sharing the database" }
        @match hubs {
            Err(_) => p.error { "The hubs could not be read; reload to try again." }
            Ok(list) => table #hubs {
                thead { tr { th { "Address" } th { "State" } th { "Version" } th.num { "Sessions" } th { "Lease renewed" } th { "Started" } } }
                tbody {
                    @for h in &list.hubs {
                        tr data-hub=(h.id) {
                            td { code { (h.address) } @if h.this_hub { " " span.muted { "(this hub)" } } }
                            td { span class={ "hub-state hub-" (h.state.as_str()) } { (h.state.as_str()) } }
                            td { (h.version) }
                            td.num { (h.sessions) }
                            td { (time(Some(&h.renewed_at))) " " span.muted { "(" (h.lease_age_ms / 1000) " s ago)" } }
                            td { (time(Some(&h.started_at))) }
                        }
                    }
                }
            }
        }
        h2 { "Integrations" }
        @match integrations {
            Err(_) => p.error { "The integrations could not be read; reload to try again." }
            Ok(list) if list.is_empty() => p.muted { "None: " code { "muster integrations add NAME --type http --url URL --auth bearer --secret-stdin" } }
            Ok(list) => div.table-wrap { table #integrations {
                thead { tr { th { "Name" } th { "URL" } th { "Auth" } th { "Status" } th { "Last tested" } th { "" } } }
                tbody { @for i in &list { tr data-integration=(i.name) {
                    td { (i.name) }
                    td { code { (i.url) } }
                    td { (i.auth) }
                    td.integration-status {
                        span class={ "tag integration-" (i.status) } { (i.status) }
                        @if let Some(e) = &i.last_error { " " span.muted.small { (e) } }
                    }
                    td { (time(i.last_tested_at.map(crate::clock::rfc3339).as_deref())) }
                    td.row-actions {
                        form data-api={ "/api/v1/integrations/" (super::path_segment(&i.name)) "/test" } data-method="POST" {
                            button.small type="submit" { "Test" }
                        }
                    }
                } } }
            } },
        }
        p.muted.small { "A hub that stops renewing its lease (killed, cut off) is shown as expired within " (state.hub_lease.as_secs()) " s; its agents count as offline until they reconnect to another hub." }
    };
    page("Hub", &viewer, Nav::Hub, false, body)
}
