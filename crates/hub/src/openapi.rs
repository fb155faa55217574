//! The hub's published API contract: an OpenAPI 3.1 document made from the
//! handlers' `#[utoipa::path]` annotations and the wire types' schemas (proto's
//! `openapi` feature), served at `GET /api/v1/openapi.json` and shown to people on
//! the dashboard's API page.
//!
//! Invariant: the document lists exactly the operations of the route table in
//! `api.rs`, each with the security of the role the table gives it (tests in
//! `api.rs` compare the two), and `docs/openapi.json` is this document byte for
//! byte (regenerate with `UPDATE_OPENAPI=1 cargo test -p muster-hub openapi`).

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::principal::Role;

#[derive(OpenApi)]
#[openapi(paths(
    crate::handlers::system::healthz,
    crate::handlers::system::readyz,
    crate::handlers::system::metrics,
    crate::handlers::system::ca,
    crate::handlers::system::whoami,
    serve,
    crate::handlers::enroll::enroll,
    crate::handlers::users::login,
    crate::handlers::users::logout,
    crate::handlers::users::create,
    crate::handlers::users::list,
    crate::handlers::users::disable,
    crate::handlers::users::enable,
    crate::handlers::users::remove,
    crate::handlers::install::bootstrap,
    crate::handlers::releases::latest,
    crate::handlers::releases::download,
    crate::handlers::releases::list,
    crate::handlers::releases::publish,
    crate::handlers::agent::agent_me,
    crate::handlers::agent::unenroll,
    crate::handlers::sessions::agent_session,
    crate::handlers::renewal::renew,
    crate::handlers::updates::agent_report,
    crate::handlers::updates::update_agent,
    crate::handlers::hubs::list,
    crate::handlers::agents::list_agents,
    crate::handlers::agents::summary,
    crate::handlers::agents::agent_sessions,
    crate::handlers::agents::show_agent,
    crate::handlers::agents::revoke_agent,
    crate::handlers::agents::remove_agent,
    crate::handlers::agents::change_labels,
    crate::handlers::events::events,
    crate::handlers::probes::list,
    crate::handlers::probes::run_one,
    crate::handlers::probes::run_many,
    crate::handlers::probes::decide,
    crate::mcp::endpoint,
    crate::handlers::tokens::create_token,
    crate::handlers::tokens::list_tokens,
    crate::handlers::tokens::revoke_token,
    crate::handlers::keys::create,
    crate::handlers::keys::list,
    crate::handlers::keys::rotate,
    crate::handlers::keys::revoke,
    crate::handlers::sso::get_sso,
    crate::handlers::sso::set_sso,
    crate::handlers::sso::clear_sso,
    crate::handlers::sso::list_groups,
    crate::handlers::sso::add_group,
    crate::handlers::sso::remove_group,
    crate::handlers::integrations::create,
    crate::handlers::integrations::list,
    crate::handlers::integrations::show,
    crate::handlers::integrations::remove,
    crate::handlers::integrations::test,
    crate::handlers::integrations::run_probe,
    crate::handlers::audit::list_audit,
    crate::handlers::audit::verify_audit,
    crate::handlers::audit::verify_with_checkpoint,
    crate::handlers::probes::run_for_hub,
    crate::handlers::approvals::list_approvals,
    crate::handlers::approvals::approve_matching,
    crate::handlers::approvals::approve_request,
    crate::handlers::approvals::deny_request,
    crate::handlers::approvals::create_trust_rule,
    crate::handlers::approvals::list_trust_rules,
    crate::handlers::approvals::remove_trust_rule
))]
struct Paths;

/// The document as served: built once, from code alone, so it is the same for every
/// hub in the process and safe to keep in a static.
static DOCUMENT: LazyLock<Value> = LazyLock::new(build);

/// Its bytes, pretty-printed (the same bytes as `docs/openapi.json`).
static BYTES: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut bytes = serde_json::to_vec_pretty(&*DOCUMENT).unwrap_or_default();
    bytes.push(b'\n');
    bytes
});

/// The document, as JSON.
pub fn document() -> &'static Value {
    &DOCUMENT
}

/// The document's bytes as served.
pub fn bytes() -> &'static [u8] {
    &BYTES
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system", summary = "This document", responses((status = 200, description = "the OpenAPI 3.1 document of this API", body = Object)))]
pub async fn serve() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        bytes(),
    )
        .into_response()
}

/// Names of the security schemes, as the annotations write them.
pub const API_KEY: &str = "api_key";
pub const SESSION: &str = "session";
pub const AGENT_KEY: &str = "agent_key";
pub const AGENT_MTLS: &str = "agent_mtls";
pub const HUB_TOKEN: &str = "hub_token";

/// Paths the hub answers without its database: no 503 for them.
const WITHOUT_DATABASE: &[&str] = &[
    "/healthz",
    "/metrics",
    "/api/v1/ca",
    "/api/v1/openapi.json",
    "/bootstrap",
];

/// Methods of a path item, in the order the page lists them.
pub const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

fn build() -> Value {
    let mut doc = match serde_json::to_value(Paths::openapi()) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "could not render the OpenAPI document");
            return Value::Null;
        }
    };
    doc["info"] = json!({
        "title": "Muster hub API",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Enrollment, identity and fleet API of a Muster hub. Every error \
            is `{\"error\":{\"code\",\"message\"}}` (schema ApiError); clients match on \
            `code`. Roles: `admin` and `member` API keys (Authorization: Bearer mak_…) or \
            a dashboard login session (cookie `muster_session`, plus the X-Muster-CSRF \
            header on changes); agents present their agent key (Bearer mag_…) and, where \
            marked, their client certificate.",
        "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
    });
    doc["components"]["securitySchemes"] = json!({
        API_KEY: {
            "type": "http", "scheme": "bearer",
            "description": "An API key (`mak_…`); the scope names the role it needs: `member` (member or admin keys) or `admin`.",
        },
        SESSION: {
            "type": "apiKey", "in": "cookie", "name": crate::auth::COOKIE,
            "description": "A dashboard login session (POST /api/v1/login); changes also need the `X-Muster-CSRF` header. The scope names the user role needed.",
        },
        AGENT_KEY: {
            "type": "http", "scheme": "bearer",
            "description": "An enrolled, live agent's key (`mag_…`).",
        },
        HUB_TOKEN: {
            "type": "http", "scheme": "bearer",
            "description": "Another hub of the fleet: a token derived from the shared hub secret.",
        },
        AGENT_MTLS: {
            "type": "mutualTLS",
            "description": "The agent's current client certificate, issued by the hub's CA, presented in the TLS handshake.",
        },
    });
    add_common_responses(&mut doc);
    widen_unsigned(&mut doc);
    doc
}

/// utoipa writes `u32` as `int32` and `u64` as `int64` (both with `minimum: 0`),
/// formats whose ranges are the signed ones: a tool generating "valid" data stops
/// at 2^31 where the hub takes up to 2^32 − 1, and calls 2^63 invalid where the
/// hub takes it. Each gets its real maximum instead (a `u32` with a larger lower
/// bound, such as `max_uses`, too).
fn widen_unsigned(value: &mut Value) {
    match value {
        Value::Object(map) => {
            // Ours only: no signed 32-bit field has a lower bound.
            let minimum = map.get("minimum").and_then(Value::as_u64);
            let unsigned = minimum == Some(0);
            let max = match map.get("format").and_then(Value::as_str) {
                Some("int32") if minimum.is_some() => Some((json!(u32::MAX), "int64")),
                Some("int64") if unsigned => Some((json!(u64::MAX), "uint64")),
                _ => None,
            };
            if let Some((max, format)) = max {
                map.insert("maximum".to_owned(), max);
                map.insert("format".to_owned(), json!(format));
            }
            map.values_mut().for_each(widen_unsigned);
        }
        Value::Array(items) => items.iter_mut().for_each(widen_unsigned),
        _ => {}
    }
}

/// The refusals every operation of a kind can get from the layers around its
/// handler (the role check, the body limits, the database), added where the
/// annotation did not already say more precisely: they are decided from the
/// operation's security and body, exactly as those layers decide.
fn add_common_responses(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        for method in METHODS {
            let Some(op) = item.get_mut(*method) else {
                continue;
            };
            let role = role_of(op).ok().flatten();
            let mut add: Vec<(&str, &str)> = Vec::new();
            match role {
                Some(Role::Agent) => add.push(("401", "no agent key, or not a live agent's")),
                Some(_) => {
                    add.push((
                        "401",
                        "no credential, or an unknown, revoked or expired one",
                    ));
                    add.push((
                        "403",
                        "the credential's role does not allow this, or a session change lacks X-Muster-CSRF",
                    ));
                }
                None => {}
            }
            if op.get("requestBody").is_some() {
                add.push(("400", "the body is not valid for this operation"));
                add.push(("408", "the body did not arrive in time"));
                add.push(("413", "the body is larger than the hub accepts"));
            }
            if !WITHOUT_DATABASE.contains(&path.as_str()) {
                add.push(("503", "the hub's database is unavailable; see Retry-After"));
            }
            let responses = &mut op["responses"];
            for (status, why) in add {
                if responses.get(status).is_none() {
                    responses[status] = json!({
                        "description": why,
                        "content": { "application/json": {
                            "schema": { "$ref": "#/components/schemas/ApiError" }
                        }},
                    });
                }
            }
        }
    }
}

/// The role an operation's security asks for: `None` when public, an error when
/// its requirements do not name one role the way the annotations write them.
pub fn role_of(op: &Value) -> Result<Option<Role>, String> {
    let Some(requirements) = op.get("security").and_then(Value::as_array) else {
        return Ok(None);
    };
    let mut roles = Vec::new();
    for requirement in requirements {
        let Some(schemes) = requirement.as_object() else {
            return Err("a security requirement is not an object".to_owned());
        };
        for (scheme, scopes) in schemes {
            let scopes: Vec<&str> = scopes
                .as_array()
                .map(|s| s.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let role = match (scheme.as_str(), scopes.as_slice()) {
                (AGENT_KEY, ["agent"]) => Role::Agent,
                (AGENT_MTLS, []) => continue,
                (HUB_TOKEN, ["hub"]) => Role::Hub,
                (API_KEY | SESSION, ["member"]) => Role::Member,
                (API_KEY | SESSION, ["admin"]) => Role::Admin,
                (other, scopes) => {
                    return Err(format!("unexpected security {other} {scopes:?}"));
                }
            };
            roles.push(role);
        }
    }
    roles.dedup();
    match roles.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        more => Err(format!("several roles {more:?}")),
    }
}
