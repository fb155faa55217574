//! The hub's own routes: liveness, readiness, metrics, the CA certificate, and
//! `whoami` for any API caller.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use muster_proto::{CaResponse, Health, PrincipalKind, WhoAmI};

use crate::error::{ApiFailure, ApiResult};
use crate::principal::Principal;
use crate::state::AppState;
use crate::validate::stored_role;

#[utoipa::path(get, path = "/healthz", tag = "system", summary = "Liveness: the process answers", responses((status = 200, description = "alive", body = muster_proto::Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// How long `/readyz` waits for the database. Found by the PostgreSQL-restart chaos
/// drill (scripts/chaos): with the server down, the ping waited out the pool's
/// acquire timeout (10 s), longer than load balancers and Kubernetes wait for a
/// probe (1 s by default), so the hub was taken for hung rather than not ready.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[utoipa::path(get, path = "/readyz", tag = "system", summary = "Readiness: the database answers", responses((status = 200, description = "ready", body = muster_proto::Health), (status = 503, description = "the database is unreachable", body = muster_proto::ApiError)))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> ApiResult<Json<Health>> {
    match tokio::time::timeout(READY_WAIT, state.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            return Err(ApiFailure::unavailable("database unreachable", None));
        }
        Err(_) => {
            tracing::warn!("readiness check failed: no answer from the database in 2 s");
            return Err(ApiFailure::unavailable("database unreachable", None));
        }
    }
    Ok(Json(Health {
        status: "ready".to_owned(),
    }))
}

#[utoipa::path(get, path = "/metrics", tag = "system", summary = "Prometheus metrics", responses((status = 200, description = "metrics in the Prometheus text format", body = String, content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    // The fleet as every hub sharing the database sees it (a database failure
    // leaves the lines out rather than failing the scrape).
    let fleet = match crate::live::fleet_counts(&state).await {
        Ok(f) => fleet_metrics(&f.counts),
        Err(e) => {
            tracing::warn!(error = %e, "could not count the fleet for /metrics");
            String::new()
        }
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state
            .metrics
            .render(&state.sessions, state.store.enroll_commits())
            + &fleet
            + &format!(
                "# HELP muster_presence_pending Session changes waiting to be written for the other hubs.\n\
                 # TYPE muster_presence_pending gauge\n\
                 muster_presence_pending {}\n\
                 # HELP muster_probe_calls_in_flight Probes sent to agents and not yet answered.\n\
                 # TYPE muster_probe_calls_in_flight gauge\n\
                 muster_probe_calls_in_flight {}\n",
                state.presence.len(),
                state.calls.in_flight()
            )
            + &state.handshakes.render_metrics()
            + &state.downloads.render_metrics()
            + &state.events.render_metrics()
            + &state.history.render_metrics(),
    )
}

fn fleet_metrics(c: &muster_proto::StatusCounts) -> String {
    let mut out = String::from(
        "# HELP muster_agents Agents by status, across every hub sharing the database.\n\
         # TYPE muster_agents gauge\n",
    );
    for (status, n) in [
        ("online", c.online),
        ("degraded", c.degraded),
        ("offline", c.offline),
        ("revoked", c.revoked),
        ("cloned", c.cloned),
        ("pending", c.pending),
    ] {
        out.push_str(&format!("muster_agents{{status=\"{status}\"}} {n}\n"));
    }
    out
}

#[utoipa::path(get, path = "/api/v1/ca", tag = "system", summary = "The hub's CA certificate and its pin", responses((status = 200, description = "the CA certificate (PEM) and its SHA-256 pin", body = muster_proto::CaResponse)))]
pub async fn ca(State(state): State<Arc<AppState>>) -> Json<CaResponse> {
    Json(CaResponse {
        ca_pem: state.ca.cert_pem().to_owned(),
        ca_hash: state.ca_hash.to_string(),
    })
}

#[utoipa::path(get, path = "/api/v1/whoami", tag = "system", summary = "Who the credential belongs to", responses((status = 200, description = "the caller", body = muster_proto::WhoAmI)), security(("api_key" = ["member"]), ("session" = ["member"])))]
pub async fn whoami(Extension(principal): Extension<Principal>) -> Json<WhoAmI> {
    Json(match principal {
        Principal::Admin(k) | Principal::Member(k) => WhoAmI {
            kind: PrincipalKind::ApiKey,
            id: Some(k.id),
            name: Some(k.name),
            role: Some(stored_role(&k.role)),
        },
        Principal::Agent(a) => WhoAmI {
            kind: PrincipalKind::Agent,
            id: Some(a.id),
            name: Some(a.name),
            role: None,
        },
        Principal::User(u) => WhoAmI {
            kind: PrincipalKind::User,
            id: None,
            name: Some(u.name),
            role: Some(stored_role(&u.role)),
        },
        // Not reached: a hub's token opens only the hub-to-hub routes.
        Principal::Hub => WhoAmI {
            kind: PrincipalKind::ApiKey,
            id: None,
            name: Some("hub".to_owned()),
            role: None,
        },
    })
}
