//! The HTTP surface: the route table (with the role each route needs, declared here
//! and nowhere else) and thin handlers that parse, call the domain, and render.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::Method;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Extension, Json, Router, middleware};
use axum_server::tls::TlsInfo;
use muster_proto::{
    AgentInfo, AgentList, CaResponse, CreateTokenRequest, CreateTokenResponse, EnrollRequest,
    Health, MAX_BODY_BYTES, TOKEN_PREFIX, TokenInfo, TokenList, codes,
};
use muster_store::{AgentEnd, AgentRecord, AgentState, AuditEntry, TokenRecord};

use crate::auth::{Principal, Role, bearer, require};
use crate::enroll::{self, check_label, check_text};
use crate::error::{ApiFailure, ApiResult};
use crate::rules::{parse_cidr, parse_pattern};
use crate::secrets::{display_prefix, random_body};
use crate::state::{AppState, Metrics, now_ms, rfc3339};

/// Longest token lifetime: ten years, beyond which `--no-expiry` says it better.
const MAX_TTL_S: u64 = 10 * 365 * 24 * 3600;

/// Who may call a route: `None` is public.
type Access = Option<Role>;

/// Every route with the role it needs: the one place access is declared. The router
/// is built from it, and a test walks it with every kind of caller.
fn table() -> Vec<(Access, Method, &'static str, MethodRouter<Arc<AppState>>)> {
    use Method as M;
    let (agent, member, admin) = (Some(Role::Agent), Some(Role::Member), Some(Role::Admin));
    vec![
        (None, M::GET, "/healthz", get(healthz)),
        (None, M::GET, "/readyz", get(readyz)),
        (None, M::GET, "/metrics", get(metrics)),
        (None, M::GET, "/api/v1/ca", get(ca)),
        (None, M::POST, "/api/v1/enroll", post(enroll)),
        (None, M::POST, "/api/v1/login", post(crate::users::login)),
        (None, M::POST, "/api/v1/logout", post(crate::users::logout)),
        (agent, M::GET, "/api/v1/agent/me", get(agent_me)),
        (agent, M::GET, "/api/v1/agent/session", get(agent_session)),
        (
            agent,
            M::POST,
            "/api/v1/agent/renew",
            post(crate::renew::renew),
        ),
        (agent, M::POST, "/api/v1/agent/unenroll", post(unenroll)),
        (member, M::GET, "/api/v1/whoami", get(whoami)),
        (member, M::GET, "/api/v1/agents", get(list_agents)),
        (member, M::GET, "/api/v1/agents/{id}", get(show_agent)),
        (
            admin,
            M::POST,
            "/api/v1/agents/{id}/revoke",
            post(revoke_agent),
        ),
        (
            admin,
            M::DELETE,
            "/api/v1/agents/{id}",
            delete(remove_agent),
        ),
        (admin, M::POST, "/api/v1/tokens", post(create_token)),
        (admin, M::GET, "/api/v1/tokens", get(list_tokens)),
        (
            admin,
            M::POST,
            "/api/v1/tokens/{id}/revoke",
            post(revoke_token),
        ),
        (admin, M::POST, "/api/v1/keys", post(crate::keys::create)),
        (admin, M::GET, "/api/v1/keys", get(crate::keys::list)),
        (
            admin,
            M::POST,
            "/api/v1/keys/{id}/rotate",
            post(crate::keys::rotate),
        ),
        (
            admin,
            M::POST,
            "/api/v1/keys/{id}/revoke",
            post(crate::keys::revoke),
        ),
        (admin, M::POST, "/api/v1/users", post(crate::users::create)),
        (admin, M::GET, "/api/v1/users", get(crate::users::list)),
        (
            admin,
            M::POST,
            "/api/v1/users/{id}/disable",
            post(crate::users::disable),
        ),
        (
            admin,
            M::POST,
            "/api/v1/users/{id}/enable",
            post(crate::users::enable),
        ),
        (
            admin,
            M::DELETE,
            "/api/v1/users/{id}",
            delete(crate::users::remove),
        ),
        (admin, M::GET, "/api/v1/audit", get(list_audit)),
        (admin, M::GET, "/api/v1/audit/verify", get(verify_audit)),
        (admin, M::GET, "/api/v1/approvals", get(list_approvals)),
        (
            admin,
            M::POST,
            "/api/v1/approvals/approve",
            post(approve_matching),
        ),
        (
            admin,
            M::POST,
            "/api/v1/approvals/{id}/approve",
            post(approve_request),
        ),
        (
            admin,
            M::POST,
            "/api/v1/approvals/{id}/deny",
            post(deny_request),
        ),
        (
            admin,
            M::POST,
            "/api/v1/trust-rules",
            post(create_trust_rule),
        ),
        (admin, M::GET, "/api/v1/trust-rules", get(list_trust_rules)),
        (
            admin,
            M::DELETE,
            "/api/v1/trust-rules/{id}",
            delete(remove_trust_rule),
        ),
    ]
}

/// The route table without handlers, for tests and docs.
pub fn route_table() -> Vec<(Access, Method, &'static str)> {
    table().into_iter().map(|(a, m, p, _)| (a, m, p)).collect()
}

pub fn router(state: Arc<AppState>) -> Router {
    let mut groups: Vec<(Access, Router<Arc<AppState>>)> = Vec::new();
    for (access, _, path, handler) in table() {
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
    app.fallback(|| async { ApiFailure::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: middleware::Next,
) -> axum::response::Response {
    Metrics::inc(&state.metrics.http_requests);
    next.run(request).await
}

/// `Json<T>` whose rejections are our JSON errors (400, or 413 past the body limit).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiFailure::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    codes::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than {} KiB", MAX_BODY_BYTES / 1024),
                ))
            }
            Err(rejection) => Err(ApiFailure::bad_request(rejection.body_text())),
        }
    }
}

async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

async fn readyz(State(state): State<Arc<AppState>>) -> ApiResult<Json<Health>> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            "database unreachable",
        )
    })?;
    Ok(Json(Health {
        status: "ready".to_owned(),
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state
            .metrics
            .render(&state.sessions, state.store.enroll_commits()),
    )
}

async fn ca(State(state): State<Arc<AppState>>) -> Json<CaResponse> {
    Json(CaResponse {
        ca_pem: state.ca.cert_pem().to_owned(),
        ca_hash: state.ca_hash.to_string(),
    })
}

async fn enroll(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(
        match enroll::enroll(
            &state,
            crate::rules::client_source(peer.ip(), &headers, &state.trusted_proxies),
            bearer(&headers),
            req,
        )
        .await?
        {
            enroll::Answer::Issued(status, body) => (status, Json(body)).into_response(),
            enroll::Answer::Pending(pending) => {
                (StatusCode::ACCEPTED, Json(pending)).into_response()
            }
        },
    )
}

async fn whoami(Extension(principal): Extension<Principal>) -> Json<serde_json::Value> {
    Json(match principal {
        Principal::Admin(k) | Principal::Member(k) => {
            serde_json::json!({"kind": "api_key", "id": k.id, "name": k.name, "role": k.role})
        }
        Principal::Agent(a) => serde_json::json!({"kind": "agent", "id": a.id}),
        Principal::User(u) => serde_json::json!({"kind": "user", "name": u.name, "role": u.role}),
    })
}

/// The agent's own record. When it presents its client certificate too, that
/// certificate must be its current one: a replaced certificate is refused.
async fn agent_me(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    tls: Option<Extension<Arc<TlsInfo>>>,
) -> ApiResult<Json<AgentInfo>> {
    let agent = calling_agent(principal)?;
    if let Some(cert) = tls.as_ref().and_then(|t| t.peer_certificates.first()) {
        check_agent_cert(&agent, cert)?;
    }
    Ok(Json(agent_info(&agent, &state)))
}

pub(crate) fn calling_agent(principal: Principal) -> ApiResult<AgentRecord> {
    match principal {
        Principal::Agent(agent) => Ok(*agent),
        _ => Err(ApiFailure::unauthorized(
            codes::UNAUTHORIZED,
            "not an agent",
        )),
    }
}

/// The client certificate must be this agent's current one: the key and the
/// certificate name the same agent, and a replaced certificate is refused. (TLS
/// already checked that it chains to our CA and is within its validity.)
pub(crate) fn check_agent_cert(agent: &AgentRecord, der: &[u8]) -> ApiResult<()> {
    // After a renewal the previous certificate keeps working until it expires (the
    // agent may still hold a session opened with it).
    let previous_ok = agent.prev_cert_expires_at.is_some_and(|e| e > now_ms());
    let matches = muster_ca::cert_info_der(der).is_ok_and(|info| {
        info.subject_cn == agent.id
            && (info.serial_hex == agent.cert_serial
                || (previous_ok
                    && agent.prev_cert_serial.as_deref() == Some(info.serial_hex.as_str())))
    });
    if matches {
        Ok(())
    } else {
        Err(ApiFailure::unauthorized(
            codes::KEY_INVALID,
            "the client certificate is not this agent's current certificate",
        ))
    }
}

/// `GET /api/v1/agent/session`: the agent's live WebSocket (SPEC §9). Needs both the
/// agent key (checked by the route's role) and the agent's client certificate.
async fn agent_session(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    tls: Option<Extension<Arc<TlsInfo>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: axum::extract::WebSocketUpgrade,
) -> ApiResult<axum::response::Response> {
    let agent = calling_agent(principal)?;
    let Some(cert) = tls.as_ref().and_then(|t| t.peer_certificates.first()) else {
        return Err(ApiFailure::unauthorized(
            codes::UNAUTHORIZED,
            "a session needs the agent's client certificate",
        ));
    };
    check_agent_cert(&agent, cert)?;
    if agent.cloned_at.is_some() {
        return Err(crate::renew::cloned_refusal());
    }
    let frame = 64 * 1024;
    Ok(ws
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_write_buffer_size(2 * frame)
        .max_message_size(frame)
        .max_frame_size(frame)
        .on_upgrade(move |socket| crate::sessions::run(state, agent, peer.ip(), socket)))
}

pub fn agent_info(a: &AgentRecord, state: &AppState) -> AgentInfo {
    let status = match a.state {
        AgentState::Active if a.cloned_at.is_some() => "cloned",
        AgentState::Active => match state.sessions.health(&a.id) {
            Some((muster_proto::AgentHealth::Ok, _)) => "online",
            Some((muster_proto::AgentHealth::Degraded, _)) => "degraded",
            None => "offline",
        },
        AgentState::Revoked => "revoked",
        AgentState::Removed => "removed",
    };
    AgentInfo {
        id: a.id.clone(),
        name: a.name.clone(),
        hostname: a.facts.hostname.clone(),
        status: status.to_owned(),
        ip: a.facts.ip.clone(),
        os_info: a.facts.os_info.clone(),
        arch: a.facts.arch.clone(),
        agent_version: a.facts.agent_version.clone(),
        labels: a.facts.labels.clone(),
        packs: a.facts.packs.clone(),
        enrolled_at: rfc3339(a.enrolled_at),
        last_seen_at: a.last_seen_at.map(rfc3339),
        cert_expires_at: Some(rfc3339(a.cert_expires_at)),
        interfaces: a.facts.interfaces.clone(),
        generation: a.generation,
        clone_events: Vec::new(),
    }
}

#[derive(serde::Deserialize)]
struct PageQuery {
    limit: Option<i64>,
    after: Option<String>,
}

/// The fleet, a page at a time (default 100, at most 1,000), in name order. The
/// cursor is the last agent's name and id; a member's scope filters as it goes.
async fn list_agents(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    axum::extract::Query(q): axum::extract::Query<PageQuery>,
) -> ApiResult<Json<AgentList>> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut position: Option<(String, String)> = match &q.after {
        Some(cursor) => {
            let raw = b64
                .decode(cursor)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiFailure::bad_request("invalid page cursor"))?;
            let (name, id) = raw
                .split_once('\n')
                .ok_or_else(|| ApiFailure::bad_request("invalid page cursor"))?;
            Some((name.to_owned(), id.to_owned()))
        }
        None => None,
    };
    let mut page = Vec::new();
    let mut more = false;
    loop {
        let batch = state
            .store
            .list_agents_page(
                position.as_ref().map(|(n, i)| (n.as_str(), i.as_str())),
                limit + 1,
            )
            .await?;
        let exhausted = batch.len() as i64 <= limit;
        for a in &batch {
            if page.len() as i64 == limit {
                more = true;
                break;
            }
            position = Some((a.name.clone(), a.id.clone()));
            if visible(&principal, a) {
                page.push(agent_info(a, &state));
            }
        }
        if more || exhausted {
            break;
        }
    }
    let next = more
        .then(|| position.map(|(n, i)| b64.encode(format!("{n}\n{i}"))))
        .flatten();
    Ok(Json(AgentList { agents: page, next }))
}

/// Whether a member key's `--agents` glob lets it see this agent (admins see all).
fn visible(principal: &Principal, agent: &AgentRecord) -> bool {
    match principal {
        Principal::Member(key) => key
            .agents_glob
            .as_deref()
            .is_none_or(|glob| crate::rules::hostname_matches(glob, &agent.name)),
        _ => true,
    }
}

/// An agent by UUID, or by the name of a live agent.
async fn find_agent(state: &AppState, id_or_name: &str) -> ApiResult<AgentRecord> {
    let by_id = if uuid::Uuid::parse_str(id_or_name).is_ok() {
        state.store.get_agent(id_or_name).await?
    } else {
        None
    };
    let found = match by_id {
        Some(a) => Some(a),
        None => state.store.find_live_agent_by_name(id_or_name).await?,
    };
    found.ok_or_else(|| ApiFailure::not_found(format!("no agent {id_or_name:?}")))
}

async fn show_agent(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    let agent = find_agent(&state, &id).await?;
    // Outside a member's scope looks the same as absent: no existence leaks.
    if agent.state == AgentState::Removed || !visible(&principal, &agent) {
        return Err(ApiFailure::not_found(format!("no agent {id:?}")));
    }
    let mut info = agent_info(&agent, &state);
    if agent.cloned_at.is_some() {
        info.clone_events = state
            .store
            .clone_events(&agent.id)
            .await?
            .into_iter()
            .map(|e| muster_proto::CloneEventInfo {
                at: rfc3339(e.at),
                source: e.source,
                presented_generation: e.presented,
                expected_generation: e.expected,
                via: e.via,
            })
            .collect();
    }
    Ok(Json(info))
}

/// `POST /api/v1/agent/unenroll`: an agent being uninstalled revokes itself, so it
/// does not linger as a ghost (SPEC §6). Needs its certificate as well as its key.
async fn unenroll(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    tls: Option<Extension<Arc<TlsInfo>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> ApiResult<StatusCode> {
    let agent = calling_agent(principal.clone())?;
    let Some(cert) = tls.as_ref().and_then(|t| t.peer_certificates.first()) else {
        return Err(ApiFailure::unauthorized(
            codes::UNAUTHORIZED,
            "unenrolling needs the agent's client certificate",
        ));
    };
    check_agent_cert(&agent, cert)?;
    end_agent_as(
        &state,
        &principal,
        peer,
        &agent.id,
        AgentEnd::Revoke,
        "agent.unenrolled",
    )
    .await
    .map(|_| StatusCode::NO_CONTENT)
}

async fn end_agent(
    state: &AppState,
    principal: &Principal,
    peer: SocketAddr,
    id: &str,
    end: AgentEnd,
) -> ApiResult<Json<AgentInfo>> {
    let action = match end {
        AgentEnd::Revoke => "agent.revoked",
        AgentEnd::Remove => "agent.removed",
    };
    end_agent_as(state, principal, peer, id, end, action).await
}

async fn end_agent_as(
    state: &AppState,
    principal: &Principal,
    peer: SocketAddr,
    id: &str,
    end: AgentEnd,
    action: &'static str,
) -> ApiResult<Json<AgentInfo>> {
    let agent = find_agent(state, id).await?;
    let now = now_ms();
    let audit = AuditEntry {
        at: now,
        actor: principal.actor(),
        action: action.to_owned(),
        target: format!("agent:{}", agent.id),
        source: peer.ip().to_string(),
        outcome: "ok".to_owned(),
        details: serde_json::json!({"name": agent.name}).to_string(),
    };
    let ended = state
        .store
        .end_agent(&agent.id, end, now, &audit)
        .await
        .map_err(|e| match e {
            muster_store::StoreError::NotFound => ApiFailure::new(
                StatusCode::CONFLICT,
                codes::CONFLICT,
                format!("agent {id:?} is already {}", agent.state.as_str()),
            ),
            other => other.into(),
        })?;
    tracing::info!(agent_id = %ended.id, action, "agent credentials ended");
    state.sessions.kick(
        &ended.id,
        match end {
            AgentEnd::Revoke => "the agent was revoked by an admin",
            AgentEnd::Remove => "the agent was removed by an admin",
        },
    );
    Ok(Json(agent_info(&ended, state)))
}

async fn revoke_agent(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    end_agent(&state, &principal, peer, &id, AgentEnd::Revoke).await
}

async fn remove_agent(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    end_agent(&state, &principal, peer, &id, AgentEnd::Remove).await
}

fn token_info(t: &TokenRecord, now: i64) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        prefix: t.prefix.clone(),
        description: t.description.clone(),
        uses: t.uses.max(0) as u32,
        max_uses: t.max_uses.map(|m| m.max(0) as u32),
        expires_at: t.expires_at.map(rfc3339),
        state: t.state(now).as_str().to_owned(),
        pattern: t.pattern.clone(),
        cidrs: t.cidrs.clone(),
        labels: t.labels.clone(),
        allow_replace: t.allow_replace,
        created_at: rfc3339(t.created_at),
    }
}

async fn create_token(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreateTokenResponse>)> {
    if req.max_uses == Some(0) {
        return Err(ApiFailure::bad_request("max_uses must be at least 1"));
    }
    if let Some(ttl) = req.ttl_s
        && (ttl == 0 || ttl > MAX_TTL_S)
    {
        return Err(ApiFailure::bad_request(
            "ttl must be between 1 second and 10 years (or use no expiry)",
        ));
    }
    if let Some(p) = &req.pattern {
        check_text("pattern", p, false)?;
        parse_pattern(p).map_err(ApiFailure::bad_request)?;
    }
    if req.cidrs.len() > 64 {
        return Err(ApiFailure::bad_request("at most 64 CIDRs per token"));
    }
    let cidrs = req
        .cidrs
        .iter()
        .map(|c| parse_cidr(c).map(|n| n.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiFailure::bad_request)?;
    if req.labels.len() > 64 {
        return Err(ApiFailure::bad_request("at most 64 labels per token"));
    }
    for (k, v) in &req.labels {
        check_label(k, v)?;
    }
    if let Some(d) = &req.description
        && (d.len() > 1024 || d.chars().any(char::is_control))
    {
        return Err(ApiFailure::bad_request(
            "description must be printable text of at most 1024 bytes",
        ));
    }

    let now = now_ms();
    let secret = format!("{TOKEN_PREFIX}{}", random_body());
    let token = format!("{secret}.{}", state.ca_hash.pin());
    let record = TokenRecord {
        id: uuid::Uuid::new_v4().to_string(),
        hash: state.keys.hash_secret(&secret),
        prefix: display_prefix(&secret),
        description: req.description.clone(),
        max_uses: req.max_uses.map(i64::from),
        uses: 0,
        expires_at: req.ttl_s.map(|ttl| now + (ttl as i64) * 1000),
        revoked_at: None,
        pattern: req.pattern.clone(),
        cidrs,
        labels: req.labels.clone(),
        allow_replace: req.allow_replace,
        created_at: now,
        created_by: principal.actor(),
    };
    let audit = AuditEntry {
        at: now,
        actor: principal.actor(),
        action: "token.created".to_owned(),
        target: format!("token:{}", record.id),
        source: peer.ip().to_string(),
        outcome: "ok".to_owned(),
        details: serde_json::json!({
            "prefix": record.prefix, "max_uses": record.max_uses, "expires_at": record.expires_at,
            "pattern": record.pattern, "cidrs": record.cidrs, "labels": record.labels,
        })
        .to_string(),
    };
    state.store.create_token(&record, &audit).await?;
    tracing::info!(token_id = %record.id, prefix = %record.prefix, "enrollment token created");
    let enroll_command = format!("muster enroll --hub {} --token {token}", state.hub_url);
    Ok((
        StatusCode::CREATED,
        Json(CreateTokenResponse {
            id: record.id,
            token,
            expires_at: record.expires_at.map(rfc3339),
            max_uses: req.max_uses,
            enroll_command,
        }),
    ))
}

async fn list_tokens(State(state): State<Arc<AppState>>) -> ApiResult<Json<TokenList>> {
    let now = now_ms();
    let tokens = state.store.list_tokens().await?;
    Ok(Json(TokenList {
        tokens: tokens.iter().map(|t| token_info(t, now)).collect(),
    }))
}

async fn revoke_token(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenInfo>> {
    let now = now_ms();
    let audit = AuditEntry {
        at: now,
        actor: principal.actor(),
        action: "token.revoked".to_owned(),
        target: String::new(),
        source: peer.ip().to_string(),
        outcome: "ok".to_owned(),
        details: "{}".to_owned(),
    };
    let token = state
        .store
        .revoke_token(&id, now, &audit)
        .await
        .map_err(|e| match e {
            muster_store::StoreError::NotFound => ApiFailure::not_found(format!("no token {id:?}")),
            other => other.into(),
        })?;
    state.tokens.forget(&token.id);
    Ok(Json(token_info(&token, now)))
}

fn approval_info(r: &muster_store::PendingRecord, now: i64) -> muster_proto::ApprovalInfo {
    muster_proto::ApprovalInfo {
        id: r.id.clone(),
        kind: r.kind.clone(),
        agent_id: r.agent_id.clone(),
        name: r.name.clone(),
        hostname: r.hostname.clone(),
        source: r.source.clone(),
        facts: serde_json::from_str(&r.facts).ok(),
        status: r.status.clone(),
        reason: r.reason.clone(),
        created_at: rfc3339(r.created_at),
        expires_at: rfc3339(r.expires_at),
        age_s: ((now - r.created_at).max(0) / 1000) as u64,
    }
}

async fn list_approvals(
    State(state): State<Arc<AppState>>,
) -> ApiResult<Json<muster_proto::ApprovalList>> {
    let now = now_ms();
    let pending = state.store.list_pending(now).await?;
    Ok(Json(muster_proto::ApprovalList {
        requests: pending.iter().map(|r| approval_info(r, now)).collect(),
    }))
}

async fn decide(
    state: &AppState,
    principal: &Principal,
    peer: SocketAddr,
    id: &str,
    approve: bool,
    reason: Option<&str>,
) -> ApiResult<muster_proto::ApprovalInfo> {
    if let Some(r) = reason {
        check_text("reason", r, true)?;
    }
    let now = now_ms();
    let audit = AuditEntry {
        at: now,
        actor: principal.actor(),
        action: if approve {
            "request.approved"
        } else {
            "request.denied"
        }
        .to_owned(),
        target: format!("request:{id}"),
        source: peer.ip().to_string(),
        outcome: "ok".to_owned(),
        details: serde_json::json!({ "reason": reason }).to_string(),
    };
    let decided = state
        .store
        .decide_request(id, approve, reason, &principal.actor(), now, &audit)
        .await
        .map_err(|e| match e {
            muster_store::StoreError::NotFound => ApiFailure::not_found(format!(
                "no waiting request {id:?} (decided or expired already?)"
            )),
            other => other.into(),
        })?;
    tracing::info!(request_id = %id, approve, "queued request decided");
    Ok(approval_info(&decided, now))
}

async fn approve_request(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> ApiResult<Json<muster_proto::ApprovalInfo>> {
    Ok(Json(
        decide(&state, &principal, peer, &id, true, None).await?,
    ))
}

async fn deny_request(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<muster_proto::DecideRequest>,
) -> ApiResult<Json<muster_proto::ApprovalInfo>> {
    Ok(Json(
        decide(&state, &principal, peer, &id, false, body.reason.as_deref()).await?,
    ))
}

/// Approve every waiting request whose hostname matches the pattern.
async fn approve_matching(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<muster_proto::DecideRequest>,
) -> ApiResult<Json<muster_proto::ApprovalList>> {
    let pattern = body
        .pattern
        .as_deref()
        .ok_or_else(|| ApiFailure::bad_request("give a hostname pattern to approve"))?;
    let matcher = parse_pattern(pattern).map_err(ApiFailure::bad_request)?;
    let mut approved = Vec::new();
    for r in state.store.list_pending(now_ms()).await? {
        if matcher.is_match(&r.hostname) {
            approved.push(decide(&state, &principal, peer, &r.id, true, None).await?);
        }
    }
    Ok(Json(muster_proto::ApprovalList { requests: approved }))
}

fn rule_info(r: &muster_store::TrustRuleRecord) -> muster_proto::TrustRuleInfo {
    muster_proto::TrustRuleInfo {
        id: r.id.clone(),
        pattern: r.pattern.clone(),
        cidrs: r.cidrs.clone(),
        labels: r.labels.clone(),
        max_per_hour: r.max_per_hour.max(0) as u32,
        created_at: rfc3339(r.created_at),
    }
}

async fn create_trust_rule(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(req): ApiJson<muster_proto::CreateTrustRule>,
) -> ApiResult<(StatusCode, Json<muster_proto::TrustRuleInfo>)> {
    check_text("pattern", &req.pattern, false)?;
    parse_pattern(&req.pattern).map_err(ApiFailure::bad_request)?;
    if req.cidrs.len() > 64 || req.labels.len() > 64 {
        return Err(ApiFailure::bad_request(
            "at most 64 CIDRs and 64 labels per rule",
        ));
    }
    let cidrs = req
        .cidrs
        .iter()
        .map(|c| parse_cidr(c).map(|n| n.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiFailure::bad_request)?;
    for (k, v) in &req.labels {
        check_label(k, v)?;
    }
    let max_per_hour = req.max_per_hour.unwrap_or(100);
    if max_per_hour == 0 {
        return Err(ApiFailure::bad_request("max_per_hour must be at least 1"));
    }
    let now = now_ms();
    let rule = muster_store::TrustRuleRecord {
        id: uuid::Uuid::new_v4().to_string(),
        pattern: req.pattern.clone(),
        cidrs,
        labels: req.labels.clone(),
        max_per_hour: i64::from(max_per_hour),
        created_at: now,
        created_by: principal.actor(),
    };
    let audit = AuditEntry {
        at: now,
        actor: principal.actor(),
        action: "trust_rule.created".to_owned(),
        target: format!("rule:{}", rule.id),
        source: peer.ip().to_string(),
        outcome: "ok".to_owned(),
        details: serde_json::json!({"pattern": rule.pattern, "cidrs": rule.cidrs, "labels": rule.labels, "max_per_hour": rule.max_per_hour}).to_string(),
    };
    state.store.create_trust_rule(&rule, &audit).await?;
    if rule.cidrs.is_empty() {
        tracing::warn!(rule_id = %rule.id, pattern = %rule.pattern, "trust rule without CIDR: any source may enroll a matching hostname");
    }
    Ok((StatusCode::CREATED, Json(rule_info(&rule))))
}

async fn list_trust_rules(
    State(state): State<Arc<AppState>>,
) -> ApiResult<Json<muster_proto::TrustRuleList>> {
    let rules = state.store.list_trust_rules().await?;
    Ok(Json(muster_proto::TrustRuleList {
        rules: rules.iter().map(rule_info).collect(),
    }))
}

async fn remove_trust_rule(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let audit = AuditEntry {
        at: now_ms(),
        actor: principal.actor(),
        action: "trust_rule.removed".to_owned(),
        target: format!("rule:{id}"),
        source: peer.ip().to_string(),
        outcome: "ok".to_owned(),
        details: "{}".to_owned(),
    };
    state
        .store
        .remove_trust_rule(&id, &audit)
        .await
        .map_err(|e| match e {
            muster_store::StoreError::NotFound => {
                ApiFailure::not_found(format!("no trust rule {id:?}"))
            }
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    agent: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    /// Unix milliseconds.
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<i64>,
}

async fn list_audit(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> ApiResult<Json<muster_proto::AuditList>> {
    let target = match q.agent {
        Some(a) => Some(format!(
            "agent:{}",
            find_agent(&state, &a).await.map(|r| r.id).unwrap_or(a)
        )),
        None => None,
    };
    let filter = muster_store::AuditFilter {
        target,
        actor: q.actor,
        action: q.action,
        since: q.since,
        until: q.until,
        limit: q.limit.unwrap_or(1000).clamp(1, 10_000),
    };
    let entries = state.store.audit_entries(&filter).await?;
    Ok(Json(muster_proto::AuditList {
        entries: entries
            .into_iter()
            .map(|r| muster_proto::AuditEntryInfo {
                seq: r.seq,
                at: rfc3339(r.entry.at),
                actor: r.entry.actor,
                action: r.entry.action,
                target: r.entry.target,
                source: r.entry.source,
                outcome: r.entry.outcome,
                details: serde_json::from_str(&r.entry.details).unwrap_or(serde_json::Value::Null),
            })
            .collect(),
    }))
}

async fn verify_audit(
    State(state): State<Arc<AppState>>,
) -> ApiResult<Json<muster_proto::AuditVerifyResult>> {
    let v = state.store.verify_audit().await?;
    Ok(Json(muster_proto::AuditVerifyResult {
        ok: v.broken.is_none(),
        count: v.count,
        broken_seq: v.broken.as_ref().map(|b| b.0),
        problem: v.broken.map(|b| b.1),
    }))
}
