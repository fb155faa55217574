//! The MCP endpoint (SPEC §15): `/mcp`, Streamable HTTP through rmcp, with four
//! tools — `list_agents`, `get_agent`, `list_probes`, `run_probe` — that call the
//! REST handlers themselves, so a tool sees, refuses and audits exactly what the
//! matching route does.
//!
//! Authentication is the route table's (`member`: an API key as bearer, refused
//! with 401 before rmcp sees the request). The transport is stateless: every POST
//! carries one JSON-RPC exchange and is answered with `application/json`; no
//! `Mcp-Session-Id` is issued, so there is no session map to bound or expire, and
//! a client may land on any hub of a cluster. GET (a server-initiated stream) and
//! DELETE (ending a session) are answered 405 by rmcp. Requests of one API key
//! run at most [`PER_KEY`] at once; the excess gets 429.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use muster_proto::{MAX_BODY_BYTES, RunProbeRequest};
use rmcp::ErrorData;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::error::{ApiFailure, ApiResult};
use crate::extract::{ApiJson, Caller};
use crate::handlers::agents::{self, agent_info_with, visible};
use crate::handlers::probes;
use crate::principal::Principal;
use crate::rules::hostname_matches;
use crate::state::AppState;
use crate::updates::LatestReleases;

/// MCP requests one API key (or user) may have in flight at once: a tool call can
/// wait up to two minutes on agents, and an assistant looping on it must not hold
/// more than this of the hub.
pub const PER_KEY: usize = 8;

/// Most agents `list_agents` returns; past it the answer says it was cut.
const MAX_LISTED: usize = 1000;

/// `/mcp` (any method): one MCP exchange for an authenticated caller.
#[utoipa::path(post, path = "/mcp", tag = "mcp", operation_id = "mcp", summary = "Model Context Protocol over Streamable HTTP (JSON-RPC)", request_body(content = Object, content_type = "application/json", description = "a JSON-RPC message"), responses((status = 200, description = "the JSON-RPC answer", body = Object), (status = 202, description = "a notification or response was accepted"), (status = 400, description = "not a valid MCP message", body = muster_proto::ApiError), (status = 406, description = "Accept must allow application/json and text/event-stream", body = muster_proto::ApiError), (status = 415, description = "the body must be application/json", body = muster_proto::ApiError), (status = 429, description = "too many MCP calls in flight for this caller", body = muster_proto::ApiError)), security(("api_key" = ["member"]), ("session" = ["member"])))]
pub async fn endpoint(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: Request,
) -> Response {
    let actor = caller.actor();
    let Some(_slot) = state.mcp_slots.take(&actor) else {
        return ApiFailure::rate_limited(
            format!("at most {PER_KEY} MCP requests at once per key"),
            1,
        )
        .into_response();
    };
    let tools = Tools {
        state: state.clone(),
        caller,
    };
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_sse_retry(None)
        .with_max_request_body_bytes(MAX_BODY_BYTES)
        // The Host check guards servers on a developer's loopback against DNS
        // rebinding; the hub is reached by its public name and every request
        // carries an API key, which a rebinding page does not have.
        .disable_allowed_hosts();
    let service = StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    match service.oneshot(request).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(never) => match never {},
    }
}

/// The tools of one request, bound to its caller.
#[derive(Clone)]
struct Tools {
    state: Arc<AppState>,
    caller: Caller,
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

/// The four tools with their input schemas.
fn catalog() -> Vec<Tool> {
    let agent = json!({"type": "string", "description": "the agent's name or id"});
    vec![
        Tool::new(
            "list_agents",
            "List the fleet's agents this key may see: name, id, status, OS, labels, last seen.",
            schema(json!({
                "type": "object",
                "properties": {
                    "glob": {"type": "string", "description": "agent name glob, e.g. web-*"},
                    "label": {"type": "string", "description": "key=value"},
                    "status": {"type": "string", "description": "online, offline, degraded, …"}
                },
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "get_agent",
            "Show one agent: host facts, labels, packs, status, certificate expiry.",
            schema(json!({
                "type": "object",
                "properties": {"agent": agent},
                "required": ["agent"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "list_probes",
            "The probes an agent offers, by pack, with each pack's state and each probe's parameters.",
            schema(json!({
                "type": "object",
                "properties": {"agent": agent},
                "required": ["agent"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "run_probe",
            "Run a read-only probe (e.g. system.info, system.disks) on one agent (agent) or on \
             every matching agent (agents: a name glob, and/or label: key=value) and return \
             each agent's outcome and result.",
            schema(json!({
                "type": "object",
                "properties": {
                    "agent": agent,
                    "agents": {"type": "string", "description": "agent name glob, e.g. web-* or *"},
                    "label": {"type": "string", "description": "key=value"},
                    "probe": {"type": "string", "description": "pack.probe, e.g. system.disks"},
                    "params": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "the probe's parameters, e.g. {\"unit\": \"nginx.service\"}"
                    },
                    "timeout_s": {"type": "integer", "minimum": 1, "maximum": 120}
                },
                "required": ["probe"],
                "additionalProperties": false
            })),
        ),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    glob: Option<String>,
    label: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentArg {
    agent: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunArgs {
    agent: Option<String>,
    agents: Option<String>,
    label: Option<String>,
    probe: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
    timeout_s: Option<u64>,
}

fn args<T: serde::de::DeserializeOwned>(params: &CallToolRequestParams) -> ApiResult<T> {
    let value = Value::Object(params.arguments.clone().unwrap_or_default());
    serde_json::from_value(value)
        .map_err(|e| ApiFailure::bad_request(format!("arguments of {}: {e}", params.name)))
}

/// A tool's answer: pretty JSON as text, the same value as structured content.
fn answer(value: Value) -> CallToolResult {
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    result
}

/// A refusal or failure as the tool's result (`isError`), with the API's code.
fn failure(f: &ApiFailure) -> CallToolResult {
    let value = json!({"code": f.code, "message": f.message});
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    result
}

fn to_value<T: serde::Serialize>(v: T) -> ApiResult<Value> {
    serde_json::to_value(v).map_err(|e| ApiFailure::internal("could not render a tool result", &e))
}

impl Tools {
    async fn call(&self, params: &CallToolRequestParams) -> ApiResult<Value> {
        let state = || State(self.state.clone());
        match &*params.name {
            "list_agents" => self.list_agents(args(params)?).await,
            "get_agent" => {
                let AgentArg { agent } = args(params)?;
                let principal = Extension(self.caller.principal.clone());
                let Json(info) = agents::show_agent(state(), principal, Path(agent)).await?;
                to_value(info)
            }
            "list_probes" => {
                let AgentArg { agent } = args(params)?;
                let Json(packs) = probes::list(state(), self.caller.clone(), Path(agent)).await?;
                to_value(packs)
            }
            "run_probe" => {
                let a: RunArgs = args(params)?;
                let many = a.agents.is_some() || a.label.is_some();
                let req = RunProbeRequest {
                    params: a.params,
                    timeout_s: a.timeout_s,
                    agents: a.agents,
                    label: a.label,
                };
                let caller = self.caller.clone();
                match (a.agent, many) {
                    (Some(agent), false) => {
                        let path = Path((agent, a.probe));
                        let Json(run) =
                            probes::run_one(state(), caller, path, ApiJson(req)).await?;
                        to_value(run)
                    }
                    (None, true) => {
                        let path = Path(a.probe);
                        let Json(runs) =
                            probes::run_many(state(), caller, path, ApiJson(req)).await?;
                        to_value(runs)
                    }
                    _ => Err(ApiFailure::bad_request(
                        "say which agents: either agent (one name or id), or agents (a name \
                         glob) and/or label (key=value)",
                    )),
                }
            }
            other => Err(ApiFailure::not_found(format!("no tool {other:?}"))),
        }
    }

    /// The fleet as `GET /api/v1/agents` shows it to this caller, filtered.
    async fn list_agents(&self, a: ListArgs) -> ApiResult<Value> {
        if let Some(glob) = &a.glob {
            crate::rules::parse_pattern(glob).map_err(ApiFailure::bad_request)?;
        }
        let label = match a.label.as_deref() {
            Some(l) => Some(
                l.split_once('=')
                    .ok_or_else(|| ApiFailure::bad_request("label must be key=value"))?,
            ),
            None => None,
        };
        let principal: &Principal = &self.caller.principal;
        let mut latest = LatestReleases::default();
        let mut listed = Vec::new();
        let mut truncated = false;
        for agent in self.state.store.list_agents(false).await? {
            let wanted = visible(principal, &agent)
                && a.glob
                    .as_deref()
                    .is_none_or(|g| hostname_matches(g, &agent.name))
                && label
                    .is_none_or(|(k, v)| agent.facts.labels.get(k).map(String::as_str) == Some(v));
            if !wanted {
                continue;
            }
            let info = agent_info_with(&agent, &self.state, &mut latest);
            let status = to_value(info.status)?;
            if a.status.as_deref().is_some_and(|s| status != s) {
                continue;
            }
            if listed.len() == MAX_LISTED {
                truncated = true;
                break;
            }
            listed.push(json!({
                "name": info.name,
                "id": info.id,
                "status": status,
                "os": info.os_info,
                "arch": info.arch,
                "labels": info.labels,
                "last_seen_at": info.last_seen_at,
            }));
        }
        Ok(json!({"agents": listed, "truncated": truncated}))
    }
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("muster", env!("CARGO_PKG_VERSION")))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(catalog()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !catalog().iter().any(|t| t.name == request.name) {
            return Err(ErrorData::invalid_params(
                format!("no tool {:?}", request.name),
                None,
            ));
        }
        Ok(match self.call(&request).await {
            Ok(value) => answer(value),
            Err(f) => failure(&f),
        }
        .into())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_holds_at_most_per_key_slots_and_idle_callers_leave_the_map() {
        let slots = crate::slots::CallerSlots::new(PER_KEY);
        let held: Vec<_> = (0..PER_KEY).map(|_| slots.take("key:a").unwrap()).collect();
        assert!(slots.take("key:a").is_none());
        assert!(slots.take("key:b").is_some(), "another key has its own");
        drop(held);
        assert_eq!(slots.active(), 0);
    }

    #[test]
    fn the_catalog_is_the_four_tools_with_object_schemas() {
        let names: Vec<_> = catalog().into_iter().map(|t| t.name.into_owned()).collect();
        assert_eq!(
            names,
            ["list_agents", "get_agent", "list_probes", "run_probe"]
        );
        for t in catalog() {
            assert_eq!(t.input_schema["type"], "object");
        }
    }
}
