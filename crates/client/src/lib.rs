//! A typed HTTPS client for the hub's API, used by the agent, the admin CLI, the
//! bench and the tests alike, so all of them exercise the same code path.
//!
//! Errors come back typed: the hub's `{"error":{"code","message"}}` becomes
//! [`ClientError::Api`] with its stable code, so callers can print one clear line.

mod events;
mod probes;
mod releases;
mod session;
mod sso;
mod trust;

use std::sync::Arc;
use std::time::Duration;

use muster_proto::{
    AgentInfo, AgentList, ApiError, CaResponse, CreateTokenRequest, CreateTokenResponse,
    EnrollRequest, EnrollResponse, PendingResponse, TokenInfo, TokenList,
};
use reqwest::StatusCode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;

pub use events::EventStream;
pub use session::{Session, SessionError, connect_session};
pub use trust::Trust;

/// What went wrong talking to the hub.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The hub answered with an error; `code` is one of `muster_proto::codes`.
    #[error("{message} ({code})")]
    Api {
        status: u16,
        code: String,
        message: String,
        /// Seconds the hub asked the caller to wait (`Retry-After` on 429 and 503).
        retry_after: Option<u64>,
    },
    /// The hub's CA is not the one pinned: possibly someone in the middle. Nothing
    /// secret was sent.
    #[error(
        "the hub at {url} presented a CA that does not match the pinned hash; nothing was sent. Check the hash with `muster hub ca-hash` on the hub"
    )]
    CaMismatch { url: String },
    /// No answer (DNS, refused, timeout, TLS failure).
    #[error("cannot reach the hub at {url}: {detail}")]
    Unreachable {
        url: String,
        detail: String,
        /// Something listened but closed the connection before answering (reset, cut
        /// mid-handshake, timed out): a hub refusing at its door while busy (a full
        /// handshake queue, a restart), worth trying again shortly. False for
        /// "nothing listens there" and name lookups that failed.
        dropped: bool,
    },
    #[error("invalid hub URL {0:?}: expected https://host:port")]
    InvalidUrl(String),
    /// The hub answered something this client does not understand.
    #[error("unexpected answer from the hub: {0}")]
    Protocol(String),
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl ClientError {
    /// Seconds the hub asked the caller to wait before trying again.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ClientError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The hub's error code, when the hub answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A client certificate and its key, for calls an agent makes as itself.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Filters for [`HubClient::audit`].
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Agent id or name.
    pub agent: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Only entries older than this `seq` (the next page's cursor).
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

/// The answer to a renewal.
#[derive(Debug)]
pub enum RenewOutcome {
    Renewed(muster_proto::RenewResponse),
    /// 202: past the grace window, waiting for an admin.
    Pending(PendingResponse),
}

/// The answer to an enrollment.
#[derive(Debug)]
pub enum EnrollOutcome {
    /// 201: a new agent.
    Created(EnrollResponse),
    /// 200: an existing agent re-enrolled.
    Reenrolled(EnrollResponse),
    /// 202: waiting for an admin's approval.
    Pending(PendingResponse),
}

#[derive(Clone)]
pub struct HubClient {
    http: reqwest::Client,
    base: String,
    bearer: Option<String>,
    mismatch: Arc<trust::MismatchFlag>,
    /// Where the operator can correct the hub URL, for the unreachable-hub line.
    address_hint: String,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Options beyond the URL and trust.
#[derive(Clone, Default)]
pub struct ClientOptions {
    pub identity: Option<ClientIdentity>,
    /// Whole-request timeout; default 30 s.
    pub timeout: Option<Duration>,
    /// Local address to connect from (machines with several; tests use 127.0.0.x).
    pub local_address: Option<std::net::IpAddr>,
    /// Extra headers on every request (e.g. what a proxy in front would add).
    pub headers: Vec<(String, String)>,
    /// Where the hub URL came from, said when the hub refuses the connection
    /// (default: "check --hub / the address in hub.json", the admin's sources).
    pub address_hint: Option<String>,
}

impl HubClient {
    pub fn new(url: &str, trust: Trust) -> Result<Self> {
        Self::with_options(url, trust, ClientOptions::default())
    }

    pub fn with_options(url: &str, trust: Trust, opts: ClientOptions) -> Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        let parsed =
            reqwest::Url::parse(&base).map_err(|_| ClientError::InvalidUrl(url.to_owned()))?;
        if parsed.scheme() != "https" || parsed.host_str().is_none() {
            return Err(ClientError::InvalidUrl(url.to_owned()));
        }
        let (tls, mismatch) = tls_config(&trust, opts.identity.as_ref())?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &opts.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| ClientError::Protocol(format!("invalid header name {k:?}")))?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| ClientError::Protocol(format!("invalid value for header {k}")))?;
            headers.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .local_address(opts.local_address)
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(10))
            .timeout(opts.timeout.unwrap_or(Duration::from_secs(30)))
            .user_agent(concat!("muster/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(HubClient {
            http,
            base,
            bearer: None,
            mismatch,
            address_hint: opts
                .address_hint
                .unwrap_or_else(|| "check --hub / the address in hub.json".to_owned()),
        })
    }

    /// The same client, authenticating with `bearer` (API key, agent key).
    pub fn with_bearer(mut self, bearer: impl Into<String>) -> Self {
        self.bearer = Some(bearer.into());
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        bearer: Option<&str>,
    ) -> Result<reqwest::Response> {
        let req = match bearer.or(self.bearer.as_deref()) {
            Some(b) => req.bearer_auth(b),
            None => req,
        };
        req.send().await.map_err(|e| self.transport_error(&e))
    }

    fn transport_error(&self, e: &reqwest::Error) -> ClientError {
        if self.mismatch.is_set() {
            return ClientError::CaMismatch {
                url: self.base.clone(),
            };
        }
        // The innermost cause says what happened ("connection refused", "certificate…").
        let mut detail = e.to_string();
        let mut io_kind = None;
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail = s.to_string();
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                io_kind = Some(io.kind());
            }
            source = s.source();
        }
        let dropped = matches!(
            io_kind,
            Some(
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::TimedOut
            )
        ) || e.is_timeout()
            // Causes behind a boxed error do not downcast; their text still says.
            || {
                let lower = detail.to_ascii_lowercase();
                [
                    "connection reset",
                    "connection aborted",
                    "unexpected eof",
                    "handshake eof",
                    "broken pipe",
                    "timed out",
                ]
                .iter()
                .any(|w| lower.contains(w))
            };
        ClientError::Unreachable {
            url: self.base.clone(),
            dropped,
            detail: match io_kind {
                // The commonest mistake of all (wrong port, hub not started): say what
                // to check instead of the OS's "Connection refused (os error 111)".
                Some(std::io::ErrorKind::ConnectionRefused) => format!(
                    "connection refused (is the hub running and listening there? {})",
                    self.address_hint
                ),
                _ => detail,
            },
        }
    }

    async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T> {
        let status = resp.status();
        let retry_after = retry_after(&resp);
        let body = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Protocol(format!("reading the answer: {e}")))?;
        if status.is_success() {
            serde_json::from_slice(&body)
                .map_err(|e| ClientError::Protocol(format!("{e} (HTTP {status})")))
        } else {
            Err(api_error(status, &body, retry_after))
        }
    }

    /// The answer when it is a success, else the hub's error, typed.
    async fn success(resp: reqwest::Response) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = retry_after(&resp);
        let body = resp.bytes().await.unwrap_or_default();
        Err(api_error(status, &body, retry_after))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Self::decode(self.send(self.http.get(self.url(path)), None).await?).await
    }

    async fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        Self::decode(
            self.send(self.http.post(self.url(path)).json(body), None)
                .await?,
        )
        .await
    }

    pub async fn ca(&self) -> Result<CaResponse> {
        self.get("/api/v1/ca").await
    }

    pub async fn healthz(&self) -> Result<serde_json::Value> {
        self.get("/healthz").await
    }

    /// `POST /api/v1/enroll` with `credential` (token, API key or agent key) or none.
    pub async fn enroll(
        &self,
        credential: Option<&str>,
        req: &EnrollRequest,
    ) -> Result<EnrollOutcome> {
        let builder = self.http.post(self.url("/api/v1/enroll")).json(req);
        let resp = match credential {
            Some(c) => self.send(builder.bearer_auth(c), None).await?,
            None => builder.send().await.map_err(|e| self.transport_error(&e))?,
        };
        match resp.status() {
            StatusCode::CREATED => Ok(EnrollOutcome::Created(Self::decode(resp).await?)),
            StatusCode::OK => Ok(EnrollOutcome::Reenrolled(Self::decode(resp).await?)),
            StatusCode::ACCEPTED => Ok(EnrollOutcome::Pending(Self::decode(resp).await?)),
            _ => Err(Self::decode::<serde_json::Value>(resp)
                .await
                .err()
                .unwrap_or_else(|| ClientError::Protocol("unexpected success status".to_owned()))),
        }
    }

    pub async fn create_token(&self, req: &CreateTokenRequest) -> Result<CreateTokenResponse> {
        self.post("/api/v1/tokens", req).await
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        Ok(self.get::<TokenList>("/api/v1/tokens").await?.tokens)
    }

    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo> {
        self.post(
            &format!("/api/v1/tokens/{}/revoke", path_segment(id)),
            &serde_json::json!({}),
        )
        .await
    }

    /// The whole fleet view, fetched a page at a time.
    pub async fn list_agents(&self) -> Result<Vec<AgentInfo>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(c) => format!("/api/v1/agents?limit=1000&after={c}"),
                None => "/api/v1/agents?limit=1000".to_owned(),
            };
            let page = self.get::<AgentList>(&path).await?;
            all.extend(page.agents);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// One page of the fleet view.
    pub async fn agents_page(&self, limit: u32, after: Option<&str>) -> Result<AgentList> {
        let path = match after {
            Some(c) => format!("/api/v1/agents?limit={limit}&after={}", path_segment(c)),
            None => format!("/api/v1/agents?limit={limit}"),
        };
        self.get(&path).await
    }

    pub async fn agent(&self, id_or_name: &str) -> Result<AgentInfo> {
        self.get(&format!("/api/v1/agents/{}", path_segment(id_or_name)))
            .await
    }

    /// An agent's recorded sessions, newest first.
    pub async fn agent_sessions(&self, id_or_name: &str) -> Result<muster_proto::SessionHistory> {
        self.get(&format!(
            "/api/v1/agents/{}/sessions",
            path_segment(id_or_name)
        ))
        .await
    }

    /// The fleet counted by status.
    pub async fn fleet_summary(&self) -> Result<muster_proto::FleetSummary> {
        self.get("/api/v1/agents/summary").await
    }

    pub async fn revoke_agent(&self, id_or_name: &str) -> Result<AgentInfo> {
        self.post(
            &format!("/api/v1/agents/{}/revoke", path_segment(id_or_name)),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn remove_agent(&self, id_or_name: &str) -> Result<AgentInfo> {
        let req = self
            .http
            .delete(self.url(&format!("/api/v1/agents/{}", path_segment(id_or_name))));
        Self::decode(self.send(req, None).await?).await
    }

    /// Set and remove an agent's labels in one change (admin); the agent as it is
    /// afterwards.
    pub async fn change_labels(
        &self,
        id_or_name: &str,
        change: &muster_proto::ChangeLabelsRequest,
    ) -> Result<AgentInfo> {
        self.post(
            &format!("/api/v1/agents/{}/labels", path_segment(id_or_name)),
            change,
        )
        .await
    }

    /// Ask a live agent to install a published release (admin, SPEC §10): the
    /// order as sent. `agent_offline` when it has no session on this hub,
    /// `no_release` when nothing fits its platform.
    pub async fn update_agent(
        &self,
        id_or_name: &str,
        req: &muster_proto::UpdateRequest,
    ) -> Result<muster_proto::UpdateOrder> {
        self.post(
            &format!("/api/v1/agents/{}/update", path_segment(id_or_name)),
            req,
        )
        .await
    }

    /// The calling agent revokes itself (it is being uninstalled).
    pub async fn unenroll(&self) -> Result<()> {
        let resp = self
            .send(self.http.post(self.url("/api/v1/agent/unenroll")), None)
            .await?;
        Self::success(resp).await.map(drop)
    }

    /// The calling agent's own record (`Authorization` must be its agent key).
    pub async fn agent_me(&self) -> Result<AgentInfo> {
        self.get("/api/v1/agent/me").await
    }

    /// GET a path and return the status and raw body (metrics, diagnostics).
    pub async fn get_raw(&self, path: &str) -> Result<(u16, Vec<u8>)> {
        let resp = self.send(self.http.get(self.url(path)), None).await?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Protocol(format!("reading the answer: {e}")))?;
        Ok((status, body.to_vec()))
    }

    /// POST raw bytes and return the status and body as they came: for probing the
    /// hub with malformed input (tests, diagnostics).
    pub async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        bearer: Option<&str>,
    ) -> Result<(u16, Vec<u8>)> {
        let req = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let resp = self.send(req, bearer).await?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Protocol(format!("reading the answer: {e}")))?;
        Ok((status, body.to_vec()))
    }

    /// Renew the calling agent's certificate (`Authorization`: its agent key). A
    /// renewal past the hub's grace window may come back pending an admin.
    pub async fn renew(&self, req: &muster_proto::RenewRequest) -> Result<RenewOutcome> {
        let resp = self
            .send(
                self.http.post(self.url("/api/v1/agent/renew")).json(req),
                None,
            )
            .await?;
        if resp.status() == StatusCode::ACCEPTED {
            Ok(RenewOutcome::Pending(Self::decode(resp).await?))
        } else {
            Ok(RenewOutcome::Renewed(Self::decode(resp).await?))
        }
    }

    pub async fn create_trust_rule(
        &self,
        req: &muster_proto::CreateTrustRule,
    ) -> Result<muster_proto::TrustRuleInfo> {
        self.post("/api/v1/trust-rules", req).await
    }

    pub async fn list_trust_rules(&self) -> Result<Vec<muster_proto::TrustRuleInfo>> {
        Ok(self
            .get::<muster_proto::TrustRuleList>("/api/v1/trust-rules")
            .await?
            .rules)
    }

    pub async fn remove_trust_rule(&self, id: &str) -> Result<()> {
        let req = self
            .http
            .delete(self.url(&format!("/api/v1/trust-rules/{}", path_segment(id))));
        let resp = self.send(req, None).await?;
        Self::success(resp).await.map(drop)
    }

    /// `POST /api/v1/login`: the user and the session cookie (`name=value`).
    pub async fn login(
        &self,
        user: &str,
        password: &str,
    ) -> Result<(muster_proto::UserInfo, String)> {
        let body = muster_proto::LoginRequest {
            user: user.to_owned(),
            password: password.to_owned(),
        };
        let resp = self
            .send(self.http.post(self.url("/api/v1/login")).json(&body), None)
            .await?;
        let cookie = resp
            .headers()
            .get(reqwest::header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_default();
        Ok((Self::decode(resp).await?, cookie))
    }

    pub async fn create_user(
        &self,
        req: &muster_proto::CreateUserRequest,
    ) -> Result<muster_proto::UserInfo> {
        self.post("/api/v1/users", req).await
    }

    /// The hubs sharing the database (admin).
    pub async fn list_hubs(&self) -> Result<Vec<muster_proto::HubInfo>> {
        Ok(self
            .get::<muster_proto::HubList>("/api/v1/hubs")
            .await?
            .hubs)
    }

    pub async fn list_users(&self) -> Result<Vec<muster_proto::UserInfo>> {
        Ok(self
            .get::<muster_proto::UserList>("/api/v1/users")
            .await?
            .users)
    }

    /// `disable`, `enable` or `remove` a user.
    pub async fn change_user(&self, name: &str, change: &str) -> Result<muster_proto::UserInfo> {
        let path = format!("/api/v1/users/{}", path_segment(name));
        let req = match change {
            "remove" => self.http.delete(self.url(&path)),
            other => self
                .http
                .post(self.url(&format!("{path}/{other}")))
                .json(&serde_json::json!({})),
        };
        Self::decode(self.send(req, None).await?).await
    }

    pub async fn create_key(
        &self,
        req: &muster_proto::CreateKeyRequest,
    ) -> Result<muster_proto::CreatedKey> {
        self.post("/api/v1/keys", req).await
    }

    pub async fn list_keys(&self) -> Result<Vec<muster_proto::KeyInfo>> {
        Ok(self
            .get::<muster_proto::KeyList>("/api/v1/keys")
            .await?
            .keys)
    }

    pub async fn rotate_key(&self, id: &str) -> Result<muster_proto::CreatedKey> {
        self.post(
            &format!("/api/v1/keys/{}/rotate", path_segment(id)),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn revoke_key(&self, id: &str) -> Result<muster_proto::KeyInfo> {
        self.post(
            &format!("/api/v1/keys/{}/revoke", path_segment(id)),
            &serde_json::json!({}),
        )
        .await
    }

    /// Any request, for probing access rules: the status code only.
    pub async fn status_of(&self, method: &str, path: &str) -> Result<u16> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| ClientError::Protocol(format!("bad method {method}")))?;
        let req = self
            .http
            .request(method, self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("{}");
        Ok(self.send(req, None).await?.status().as_u16())
    }

    /// Audit entries, newest first, filtered.
    pub async fn audit(&self, q: &AuditQuery) -> Result<Vec<muster_proto::AuditEntryInfo>> {
        let mut params = Vec::new();
        for (k, v) in [
            ("agent", &q.agent),
            ("actor", &q.actor),
            ("action", &q.action),
        ] {
            if let Some(v) = v {
                params.push(format!("{k}={}", path_segment(v)));
            }
        }
        for (k, v) in [
            ("since", q.since_ms),
            ("until", q.until_ms),
            ("before", q.before),
            ("limit", q.limit),
        ] {
            if let Some(v) = v {
                params.push(format!("{k}={v}"));
            }
        }
        Ok(self
            .get::<muster_proto::AuditList>(&format!("/api/v1/audit?{}", params.join("&")))
            .await?
            .entries)
    }

    pub async fn verify_audit(&self) -> Result<muster_proto::AuditVerifyResult> {
        self.get("/api/v1/audit/verify").await
    }

    /// Walk the chain and check it still reaches `checkpoint`'s entry unchanged.
    pub async fn verify_audit_checkpoint(
        &self,
        checkpoint: &muster_proto::AuditCheckpoint,
    ) -> Result<muster_proto::AuditVerifyResult> {
        let req = muster_proto::VerifyAuditRequest {
            checkpoint: Some(checkpoint.clone()),
        };
        self.post("/api/v1/audit/verify", &req).await
    }

    pub async fn list_approvals(&self) -> Result<Vec<muster_proto::ApprovalInfo>> {
        Ok(self
            .get::<muster_proto::ApprovalList>("/api/v1/approvals")
            .await?
            .requests)
    }

    pub async fn approve(&self, id: &str) -> Result<muster_proto::ApprovalInfo> {
        self.post(
            &format!("/api/v1/approvals/{}/approve", path_segment(id)),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn approve_matching(&self, pattern: &str) -> Result<Vec<muster_proto::ApprovalInfo>> {
        let body = muster_proto::DecideRequest {
            pattern: Some(pattern.to_owned()),
            reason: None,
        };
        Ok(self
            .post::<_, muster_proto::ApprovalList>("/api/v1/approvals/approve", &body)
            .await?
            .requests)
    }

    pub async fn deny(&self, id: &str, reason: Option<&str>) -> Result<muster_proto::ApprovalInfo> {
        let body = muster_proto::DecideRequest {
            pattern: None,
            reason: reason.map(str::to_owned),
        };
        self.post(
            &format!("/api/v1/approvals/{}/deny", path_segment(id)),
            &body,
        )
        .await
    }

    pub async fn whoami(&self) -> Result<muster_proto::WhoAmI> {
        self.get("/api/v1/whoami").await
    }
}

/// The rustls client configuration for a trust choice and optional client identity,
/// with the flag that reports a CA mismatch. Shared by HTTPS calls and sessions.
pub(crate) fn tls_config(
    trust: &Trust,
    identity: Option<&ClientIdentity>,
) -> Result<(rustls::ClientConfig, Arc<trust::MismatchFlag>)> {
    let (verifier, mismatch) = trust::verifier(trust).map_err(ClientError::Tls)?;
    let builder = rustls::ClientConfig::builder_with_provider(trust::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls = match identity {
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| ClientError::Tls(format!("client certificate: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())
                .map_err(|e| ClientError::Tls(format!("client key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Tls(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    // The second entry is never negotiated: it asks a hub that serves another
    // certificate (`--tls-cert`) for the one its CA issued, which the pin checks.
    tls.alpn_protocols = vec![b"http/1.1".to_vec(), muster_proto::HUB_CA_ALPN.to_vec()];
    Ok((tls, mismatch))
}

/// Percent-encode one path segment (ids are UUIDs, but names are free text).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Retry-After` seconds of an answer, when it has them.
fn retry_after(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn api_error(status: StatusCode, body: &[u8], retry_after: Option<u64>) -> ClientError {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => ClientError::Api {
            status: status.as_u16(),
            code: e.error.code,
            message: e.error.message,
            retry_after,
        },
        Err(_) => ClientError::Api {
            retry_after,
            status: status.as_u16(),
            code: format!("http_{}", status.as_u16()),
            message: format!(
                "the hub answered HTTP {status}{}",
                std::str::from_utf8(body)
                    .ok()
                    .map(|t| t.trim())
                    .filter(|t| !t.is_empty() && t.len() < 200)
                    .map(|t| format!(": {t}"))
                    .unwrap_or_default()
            ),
        },
    }
}
