//! The HTTP surface: the route table (with the role each route needs, declared here
//! and nowhere else), the router built from it, and the middleware around it.
//! Handlers live with their resource in `handlers/`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::Method;
use axum::routing::{MethodRouter, any, delete, get, post, put};
use axum::{Router, middleware};
use muster_proto::MAX_BODY_BYTES;

use crate::auth::require;
use crate::body_limit::{BodyBudget, bound_body};
use crate::dashboard::{self, require_page, secure_headers};
use crate::error::{ApiFailure, json_errors};
use crate::handlers::{
    agent, agents, approvals, audit, enroll, events, hubs, install, integrations, keys, probes,
    releases, renewal, sessions, sso, system, tokens, updates, users,
};
use crate::mcp;
use crate::metrics::Metrics;
use crate::openapi;
use crate::principal::Role;
use crate::state::AppState;

/// Who may call a route: `None` is public.
type Access = Option<Role>;

/// Every route with the role it needs: the one place access is declared. The router
/// is built from it, and a test walks it with every kind of caller.
fn table() -> Vec<(Access, Method, &'static str, MethodRouter<Arc<AppState>>)> {
    use Method as M;
    let (agent, member, admin) = (Some(Role::Agent), Some(Role::Member), Some(Role::Admin));
    vec![
        (None, M::GET, "/healthz", get(system::healthz)),
        (None, M::GET, "/readyz", get(system::readyz)),
        (None, M::GET, "/metrics", get(system::metrics)),
        (None, M::GET, "/api/v1/ca", get(system::ca)),
        (None, M::GET, "/api/v1/openapi.json", get(openapi::serve)),
        (None, M::POST, "/api/v1/enroll", post(enroll::enroll)),
        (None, M::POST, "/api/v1/login", post(users::login)),
        (None, M::POST, "/api/v1/logout", post(users::logout)),
        (None, M::GET, "/bootstrap", get(install::bootstrap)),
        (None, M::GET, "/api/v1/agent/latest", get(releases::latest)),
        (
            None,
            M::GET,
            "/api/v1/agent/download/{version}/{os}/{arch}",
            get(releases::download),
        ),
        (member, M::GET, "/api/v1/releases", get(releases::list)),
        (admin, M::PUT, RELEASE_UPLOAD, put(releases::publish)),
        (agent, M::GET, "/api/v1/agent/me", get(agent::agent_me)),
        (
            agent,
            M::GET,
            "/api/v1/agent/session",
            get(sessions::agent_session),
        ),
        (agent, M::POST, "/api/v1/agent/renew", post(renewal::renew)),
        (
            agent,
            M::POST,
            "/api/v1/agent/update-status",
            post(updates::agent_report),
        ),
        (
            agent,
            M::POST,
            "/api/v1/agent/unenroll",
            post(agent::unenroll),
        ),
        (member, M::GET, "/api/v1/whoami", get(system::whoami)),
        (admin, M::GET, "/api/v1/hubs", get(hubs::list)),
        (member, M::GET, "/api/v1/agents", get(agents::list_agents)),
        (
            member,
            M::GET,
            "/api/v1/agents/summary",
            get(agents::summary),
        ),
        (
            member,
            M::GET,
            "/api/v1/agents/{id}/sessions",
            get(agents::agent_sessions),
        ),
        (member, M::GET, "/api/v1/events", get(events::events)),
        (
            member,
            M::GET,
            "/api/v1/agents/{id}",
            get(agents::show_agent),
        ),
        (
            admin,
            M::POST,
            "/api/v1/agents/{id}/revoke",
            post(agents::revoke_agent),
        ),
        (
            admin,
            M::DELETE,
            "/api/v1/agents/{id}",
            delete(agents::remove_agent),
        ),
        (
            admin,
            M::POST,
            "/api/v1/agents/{id}/labels",
            post(agents::change_labels),
        ),
        (
            member,
            M::GET,
            "/api/v1/agents/{id}/probes",
            get(probes::list),
        ),
        (
            member,
            M::POST,
            "/api/v1/agents/{id}/probes/{probe}",
            post(probes::run_one),
        ),
        (
            member,
            M::POST,
            "/api/v1/probes/{probe}",
            post(probes::run_many),
        ),
        // MCP over Streamable HTTP: POST carries the JSON-RPC; GET and DELETE reach
        // it too and are answered 405 (stateless: no stream, no session to end).
        (member, M::POST, "/mcp", any(mcp::endpoint)),
        // Another hub of the fleet asking this one to run a probe on its sessions.
        (
            Some(Role::Hub),
            M::POST,
            crate::forward::PATH,
            post(probes::run_for_hub),
        ),
        (
            admin,
            M::POST,
            "/api/v1/agents/{id}/packs/{pack}/{decision}",
            post(probes::decide),
        ),
        (
            admin,
            M::POST,
            "/api/v1/agents/{id}/update",
            post(updates::update_agent),
        ),
        (admin, M::POST, "/api/v1/tokens", post(tokens::create_token)),
        (admin, M::GET, "/api/v1/tokens", get(tokens::list_tokens)),
        (
            admin,
            M::POST,
            "/api/v1/tokens/{id}/revoke",
            post(tokens::revoke_token),
        ),
        (admin, M::POST, "/api/v1/keys", post(keys::create)),
        (admin, M::GET, "/api/v1/keys", get(keys::list)),
        (
            admin,
            M::POST,
            "/api/v1/keys/{id}/rotate",
            post(keys::rotate),
        ),
        (
            admin,
            M::POST,
            "/api/v1/keys/{id}/revoke",
            post(keys::revoke),
        ),
        (admin, M::POST, "/api/v1/users", post(users::create)),
        (admin, M::GET, "/api/v1/users", get(users::list)),
        (
            admin,
            M::POST,
            "/api/v1/users/{id}/disable",
            post(users::disable),
        ),
        (
            admin,
            M::POST,
            "/api/v1/users/{id}/enable",
            post(users::enable),
        ),
        (
            admin,
            M::DELETE,
            "/api/v1/users/{id}",
            delete(users::remove),
        ),
        (admin, M::GET, "/api/v1/sso", get(sso::get_sso)),
        (admin, M::PUT, "/api/v1/sso", put(sso::set_sso)),
        (admin, M::DELETE, "/api/v1/sso", delete(sso::clear_sso)),
        (admin, M::GET, "/api/v1/sso/groups", get(sso::list_groups)),
        (admin, M::POST, "/api/v1/sso/groups", post(sso::add_group)),
        (
            admin,
            M::DELETE,
            "/api/v1/sso/groups/{id}",
            delete(sso::remove_group),
        ),
        (
            admin,
            M::POST,
            "/api/v1/integrations",
            post(integrations::create),
        ),
        (
            admin,
            M::GET,
            "/api/v1/integrations",
            get(integrations::list),
        ),
        (
            admin,
            M::GET,
            "/api/v1/integrations/{name}",
            get(integrations::show),
        ),
        (
            admin,
            M::DELETE,
            "/api/v1/integrations/{name}",
            delete(integrations::remove),
        ),
        (
            admin,
            M::POST,
            "/api/v1/integrations/{name}/test",
            post(integrations::test),
        ),
        (
            member,
            M::POST,
            "/api/v1/integrations/{name}/probes/{probe}",
            post(integrations::run_probe),
        ),
        (admin, M::GET, "/api/v1/audit", get(audit::list_audit)),
        (
            admin,
            M::GET,
            "/api/v1/audit/verify",
            get(audit::verify_audit),
        ),
        (
            admin,
            M::POST,
            "/api/v1/audit/verify",
            post(audit::verify_with_checkpoint),
        ),
        (
            admin,
            M::GET,
            "/api/v1/approvals",
            get(approvals::list_approvals),
        ),
        (
            admin,
            M::POST,
            "/api/v1/approvals/approve",
            post(approvals::approve_matching),
        ),
        (
            admin,
            M::POST,
            "/api/v1/approvals/{id}/approve",
            post(approvals::approve_request),
        ),
        (
            admin,
            M::POST,
            "/api/v1/approvals/{id}/deny",
            post(approvals::deny_request),
        ),
        (
            admin,
            M::POST,
            "/api/v1/trust-rules",
            post(approvals::create_trust_rule),
        ),
        (
            admin,
            M::GET,
            "/api/v1/trust-rules",
            get(approvals::list_trust_rules),
        ),
        (
            admin,
            M::DELETE,
            "/api/v1/trust-rules/{id}",
            delete(approvals::remove_trust_rule),
        ),
    ]
}

/// The dashboard's pages (GET only), each with the role its viewer needs; `None`
/// is public. A page refuses the way a browser expects (a redirect to `/login`, an
/// HTML page), not with the API's JSON; its changes go through the routes above.
fn pages() -> Vec<(Access, &'static str, MethodRouter<Arc<AppState>>)> {
    let (member, admin) = (Some(Role::Member), Some(Role::Admin));
    vec![
        (None, "/login", get(dashboard::login::page)),
        (None, "/auth/oidc/login", get(dashboard::sso::login)),
        (None, "/auth/oidc/callback", get(dashboard::sso::callback)),
        (None, "/assets/{name}", get(dashboard::assets::serve)),
        (member, "/", get(dashboard::fleet::page_handler)),
        (member, "/agents/{id}", get(dashboard::agent::page_handler)),
        (
            admin,
            "/enrollment",
            get(dashboard::enrollment::page_handler),
        ),
        (admin, "/access", get(dashboard::access::page_handler)),
        (admin, "/audit", get(dashboard::audit::page_handler)),
        (admin, "/hub", get(dashboard::hub::page_handler)),
        (member, "/api", get(dashboard::api_docs::page_handler)),
    ]
}

/// The dashboard's pages without handlers, for tests and docs.
pub fn page_table() -> Vec<(Access, &'static str)> {
    pages().into_iter().map(|(a, p, _)| (a, p)).collect()
}

/// The pages, each behind its role check, all with the dashboard's headers.
fn dashboard_router(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let mut app = Router::new();
    for (access, path, handler) in pages() {
        let route = Router::new().route(path, handler);
        app = app.merge(match access {
            None => route,
            Some(role) => route.route_layer(middleware::from_fn_with_state(
                (state.clone(), role),
                require_page,
            )),
        });
    }
    app.layer(middleware::from_fn(secure_headers))
}

/// The one route that reads its own body: a release binary, streamed to disk with
/// its own limit after authentication, so it skips the pre-auth body buffer.
const RELEASE_UPLOAD: &str = "/api/v1/releases/{version}/{os}/{arch}";

/// The route table without handlers, for tests and docs.
pub fn route_table() -> Vec<(Access, Method, &'static str)> {
    table().into_iter().map(|(a, m, p, _)| (a, m, p)).collect()
}

/// The hub's HTTP service. `body_timeout` is `--request-body-timeout` (see
/// `body_limit`).
pub fn router(state: Arc<AppState>, body_timeout: Duration) -> Router {
    // Outermost last: every error leaves as JSON; bodies are bounded before auth or
    // a handler waits on them, except the upload's, which it streams itself.
    let bounded = grouped(&state, false)
        .fallback(|| async { ApiFailure::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            BodyBudget::new(body_timeout),
            bound_body,
        ));
    let streamed = grouped(&state, true).layer(DefaultBodyLimit::disable());
    // Only the API's errors are rewritten as JSON; pages answer in HTML.
    let api = Router::new()
        .merge(bounded)
        .merge(streamed)
        .layer(middleware::from_fn(json_errors));
    Router::new()
        .merge(dashboard_router(&state))
        .merge(api)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// The routes of the table (those streaming their own body, or the others), one
/// group per role, each group behind its role check.
fn grouped(state: &Arc<AppState>, streamed: bool) -> Router<Arc<AppState>> {
    let mut groups: Vec<(Access, Router<Arc<AppState>>)> = Vec::new();
    for (access, _, path, handler) in table() {
        if (path == RELEASE_UPLOAD) != streamed {
            continue;
        }
        let at = match groups.iter().position(|(a, _)| *a == access) {
            Some(i) => i,
            None => {
                groups.push((access, Router::new()));
                groups.len() - 1
            }
        };
        let (_, group) = groups.swap_remove(at);
        groups.push((access, group.route(path, handler)));
    }
    let mut app = Router::new();
    for (access, group) in groups {
        app = app.merge(match access {
            None => group,
            Some(role) => group.route_layer(middleware::from_fn_with_state(
                (state.clone(), role),
                require,
            )),
        });
    }
    app
}

async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: middleware::Next,
) -> axum::response::Response {
    Metrics::inc(&state.metrics.http_requests);
    next.run(request).await
}

/// The published contract and the route table cannot drift apart: CI runs these.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod openapi_tests {
    use std::collections::BTreeSet;

    use super::*;

    fn documented() -> BTreeSet<(String, String)> {
        let doc = openapi::document();
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in openapi::METHODS {
                if item.get(*method).is_some() {
                    ops.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        ops
    }

    #[test]
    fn every_route_is_documented_with_its_role_and_nothing_else_is() {
        let doc = openapi::document();
        let mut routes = BTreeSet::new();
        for (access, method, path) in route_table() {
            let op = &doc["paths"][path][method.as_str().to_lowercase()];
            assert!(
                op.is_object(),
                "{method} {path} is in api::table() but not in the OpenAPI document: \
                 annotate its handler with #[utoipa::path] and list it in openapi.rs"
            );
            let role = openapi::role_of(op).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            assert_eq!(
                role, access,
                "{method} {path}: the document's security says {role:?}, the table {access:?}"
            );
            routes.insert((method.as_str().to_owned(), path.to_owned()));
        }
        let extra: Vec<_> = documented().difference(&routes).cloned().collect();
        assert!(extra.is_empty(), "documented but not routed: {extra:?}");
    }

    #[test]
    fn every_operation_has_a_unique_id_a_summary_and_documented_errors() {
        let doc = openapi::document();
        let mut ids = BTreeSet::new();
        for (method, path) in documented() {
            let op = &doc["paths"][&path][method.to_lowercase()];
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
            for (status, response) in op["responses"].as_object().expect("responses") {
                let error = status.starts_with('4') || status.starts_with('5');
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                assert!(
                    !error || schema == "#/components/schemas/ApiError",
                    "{method} {path} {status}: an error must be documented as ApiError"
                );
            }
        }
    }

    /// `docs/openapi.json` is the served document. Regenerate it with
    /// `UPDATE_OPENAPI=1 cargo test -p muster-hub openapi`.
    #[test]
    fn docs_openapi_json_is_current() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&file, openapi::bytes()).unwrap();
        }
        let committed = std::fs::read(&file).unwrap_or_default();
        assert!(
            committed == openapi::bytes(),
            "docs/openapi.json is stale: regenerate it with \
             `UPDATE_OPENAPI=1 cargo test -p muster-hub openapi` and commit it"
        );
    }
}
