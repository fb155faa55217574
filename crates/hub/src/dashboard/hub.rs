//! `GET /hub` (admins): what this hub is — version, address, the CA's hash and the
//! pin tokens carry, the database backend.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use maud::{Markup, html};

use super::Viewer;
use super::layout::{Nav, page};
use crate::state::AppState;

pub async fn page_handler(
    State(state): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
) -> Markup {
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
    };
    page("Hub", &viewer, Nav::Hub, false, body)
}
