//! `GET /hub` (admins): what this hub is — version, address, the CA's hash and the
//! pin tokens carry, the database backend — and the hubs sharing its database.

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
        p.muted.small { "A hub that stops renewing its lease (killed, cut off) is shown as expired within " (state.hub_lease.as_secs()) " s; its agents count as offline until they reconnect to another hub." }
    };
    page("Hub", &viewer, Nav::Hub, false, body)
}
