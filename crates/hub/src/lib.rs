//! The Muster hub: one HTTPS port serving the REST API and agent sessions (and,
//! with issue 11, the dashboard).
//!
//! [`Hub::start`] prepares everything a hub needs — data dir, hub secret, database,
//! CA, first admin key, TLS — binds the listener and writes `hub.json`;
//! [`Hub::serve`] then runs until the shutdown future completes. Nothing is global,
//! so tests run many hubs in one process.

// The layers these modules form, and the rule that keeps their imports acyclic,
// are in docs/ARCHITECTURE.md ("Inside the hub").
mod accounts;
mod api;
mod audit;
mod auth;
mod body_limit;
mod bootstrap;
mod calls;
mod checkpoint;
mod clock;
mod clones;
mod conn_limit;
mod dashboard;
mod downloads;
mod enroll;
mod error;
mod events;
mod extract;
mod forward;
// Entry points for the fuzz harness (crates/fuzzing) into the parsers below; hidden
// because nothing else should call them.
#[doc(hidden)]
pub mod fuzzing;
mod handlers;
mod handshakes;
mod history;
mod install;
mod integrations;
mod lease;
mod live;
mod mcp;
mod metrics;
mod oidc;
mod openapi;
mod outbound;
mod presence;
mod principal;
mod probes;
mod queue;
mod refusals;
mod registry;
mod remote;
mod rules;
pub mod secrets;
mod sessions;
mod slots;
mod sso;
mod state;
mod throttle;
mod tls;
mod token_cache;
mod updates;
mod validate;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use api::{page_table, route_table};
pub use bootstrap::{HubFiles, INITIAL_ADMIN_KEY_FILE, rotate_secret};
use muster_ca::CaHash;
pub use oidc::SsoEnv;
pub use principal::Role;
use state::AppState;

/// The numeric defaults of [`HubOptions::new`], which `muster hub`'s flags show as
/// theirs: one place, so the two cannot drift apart.
pub mod defaults {
    /// Integration calls (tests and probes) the hub makes at once; more wait up to
    /// 5 s, then get 503.
    pub const INTEGRATION_CALLS: usize = 16;

    /// `--max-enrollments-in-flight`.
    pub const MAX_ENROLLMENTS_IN_FLIGHT: usize = 64;
    /// `--max-connections-per-source`.
    pub const MAX_CONNECTIONS_PER_SOURCE: usize = 256;
    /// `--max-pending-per-source`.
    pub const MAX_PENDING_PER_SOURCE: usize = 16;
    /// `--max-pending`.
    pub const MAX_PENDING_TOTAL: usize = 10_000;
    /// Agent downloads per source per minute, and in flight at once.
    pub use crate::downloads::{DOWNLOADS_IN_FLIGHT, DOWNLOADS_PER_SOURCE};
    /// `--max-handshakes`, per core.
    pub const HANDSHAKES_PER_CORE: usize = 128;
    /// `--hub-lease`.
    pub const HUB_LEASE: std::time::Duration = std::time::Duration::from_secs(10);
}

/// How an operator configured this hub (`muster hub` flags and environment).
#[derive(Clone)]
pub struct HubOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default `sqlite://<data-dir>/muster.db`.
    pub db_url: Option<String>,
    pub advertise_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub heartbeat_interval: Duration,
    pub cert_validity: Duration,
    /// How long after expiry an agent may still renew with its agent key and proof
    /// of its old key (`--renewal-grace`).
    pub renewal_grace: Duration,
    /// `--approval-queue on|off`: whether credential-less enrollments wait for an admin.
    pub approval_queue: bool,
    /// `--pending-ttl`: how long a queued request waits before it expires.
    pub pending_ttl: Duration,
    /// `--max-pending-per-source`: requests one source network (an IPv4 address, an
    /// IPv6 /64) may have waiting in the approval queue; beyond, 429.
    pub max_pending_per_source: usize,
    /// `--max-pending`: requests waiting in the approval queue in all; beyond, 429.
    pub max_pending_total: usize,
    /// `--trusted-proxy`: CIDRs of proxies whose `X-Forwarded-For`/`Forwarded` we believe.
    pub trusted_proxies: Vec<String>,
    /// `--max-enrollments-in-flight`: beyond this many at once, enrollments get 429
    /// with a jittered `Retry-After`, so a fleet-wide burst cannot pile up without bound.
    pub max_enrollments_in_flight: usize,
    /// `--max-connections-per-source`: connections one client address (IPv6: one
    /// /64) may hold at once. Beyond it new ones are closed unanswered, so a single
    /// client cannot use up the open files the hub needs for everyone else.
    /// `--trusted-proxy` addresses are exempt: they carry many clients.
    pub max_connections_per_source: usize,
    /// `--max-connections`: connections held at once, from all sources. `None`
    /// derives it from the open-files limit, keeping room for the database, so a
    /// flood is refused at the door instead of failing `accept` and database opens.
    pub max_connections: Option<usize>,
    /// `--request-body-timeout`: how long a request may take to send its body after
    /// its headers; then 408 and the connection closes. A body sent slowly or never
    /// would otherwise hold its connection forever.
    pub request_body_timeout: Duration,
    /// `--idle-timeout`: a connection with no request in flight this long is closed
    /// (HTTP/1 keep-alive and HTTP/2 alike; a WebSocket session is never idle).
    pub idle_timeout: Duration,
    /// `MUSTER_ADMIN_USER` / `MUSTER_ADMIN_PASSWORD`: an admin user made at first start.
    pub admin_user: Option<(String, String)>,
    /// `MUSTER_SECRET`; when absent the secret lives in `<data-dir>/secret`.
    pub secret: Option<String>,
    /// The executable served as the agent for the hub's own platform when no
    /// release is published for it (SPEC §10). `None`: the running one.
    pub agent_binary: Option<PathBuf>,
    /// Agent downloads one source may start per minute; beyond, 429.
    pub downloads_per_source: u32,
    /// Agent downloads in flight at once; beyond, 503.
    pub downloads_in_flight: usize,
    /// `--db-pool`: PostgreSQL connections in the hub's pool; it holds two more (the
    /// enrollment commits, the change listener), so hubs × (pool + 2) must fit the
    /// server's `max_connections`.
    pub db_pool: u32,
    /// `--max-handshakes`: TLS handshakes run at once (a quarter of them from one
    /// source); more wait briefly in a bounded queue, past it they are closed. `None`:
    /// [`defaults::HANDSHAKES_PER_CORE`] per core.
    pub max_handshakes: Option<usize>,
    /// `--hub-lease`: a hub that has not renewed its lease for this long is dead to
    /// the hubs sharing its database, and its agents show offline (SPEC §12).
    pub hub_lease: Duration,
    /// `MUSTER_OIDC_*` / `MUSTER_ENTRA_TENANT_ID`: single sign-on configured by the
    /// environment (SPEC §14); it wins over `muster sso set`.
    pub sso: SsoEnv,
    /// `--password-login on|off`: whether the dashboard takes passwords. Off needs
    /// single sign-on and an admin it admits (checked at start).
    pub password_login: bool,
    /// `--pack-grants`: the privileges every agent's packs may use without an
    /// admin's approval (SPEC §15), e.g. `journal`.
    pub pack_grants: Vec<String>,
    /// `--outbound-ca`: PEM CA certificates the hub trusts, besides the system's,
    /// for the calls it makes itself (an integration's API behind a private CA).
    pub outbound_ca: Option<String>,
    /// `--audit-checkpoint-every`: how often the audit chain's head is checkpointed
    /// outside the database when it moved (and always at shutdown).
    pub audit_checkpoint_every: Duration,
    /// `--audit-syslog`: the syslog socket checkpoints also go to (`None`: off).
    pub audit_syslog: Option<PathBuf>,
    /// `--audit-webhook`: a URL each checkpoint is also POSTed to.
    pub audit_webhook: Option<String>,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("db_url", &self.db_url.as_deref().map(redact_url))
            .field("advertise_url", &self.advertise_url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// An advertised URL as agents will be told it: `https://HOST[:PORT]`, nothing
/// after (no path, query, user or fragment), without a trailing slash. Agents join
/// paths to it and pin its host, so anything else would break them later, far from
/// the typo.
pub fn check_advertise_url(url: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!("{url:?} {why}: expected https://HOST[:PORT], e.g. https://hub.example.com:8443")
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad("is not an https:// URL"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err(bad("has no host"));
    }
    if authority
        .chars()
        .any(|c| matches!(c, '/' | '?' | '#' | '@' | ' ') || c.is_control())
    {
        return Err(bad("has more than a host and port"));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("has an unclosed ["))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("has an invalid IPv6 address"));
            }
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("has more than a host and port"))?,
                ),
            };
            (h, port)
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let host_ok = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        || authority.starts_with('[');
    if !host_ok {
        return Err(bad("has an invalid host name"));
    }
    if let Some(p) = port
        && !p.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err(bad("has an invalid port"));
    }
    Ok(format!("https://{authority}"))
}

/// A database URL with any password replaced, safe to log.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    format!("{}{user}:<redacted>{}", &url[..scheme_end + 3], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl HubOptions {
    /// The defaults of SPEC §3 for a data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        HubOptions {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            data_dir: data_dir.into(),
            db_url: None,
            advertise_url: None,
            tls_cert: None,
            tls_key: None,
            heartbeat_interval: Duration::from_secs(30),
            cert_validity: Duration::from_secs(720 * 3600),
            renewal_grace: Duration::from_secs(90 * 24 * 3600),
            approval_queue: true,
            pending_ttl: Duration::from_secs(24 * 3600),
            max_pending_per_source: defaults::MAX_PENDING_PER_SOURCE,
            max_pending_total: defaults::MAX_PENDING_TOTAL,
            trusted_proxies: Vec::new(),
            max_enrollments_in_flight: defaults::MAX_ENROLLMENTS_IN_FLIGHT,
            max_connections_per_source: defaults::MAX_CONNECTIONS_PER_SOURCE,
            max_connections: None,
            request_body_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            admin_user: None,
            secret: None,
            agent_binary: None,
            downloads_per_source: defaults::DOWNLOADS_PER_SOURCE,
            downloads_in_flight: defaults::DOWNLOADS_IN_FLIGHT,
            hub_lease: defaults::HUB_LEASE,
            sso: SsoEnv::default(),
            password_login: true,
            pack_grants: vec!["journal".to_owned()],
            outbound_ca: None,
            audit_checkpoint_every: Duration::from_secs(60),
            audit_syslog: Some(PathBuf::from("/dev/log")),
            audit_webhook: None,
            max_handshakes: None,
            db_pool: muster_store::DEFAULT_PG_POOL,
        }
    }
}

/// Why a hub could not start. Each message is one line an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The secret given does not open this database: nothing was changed.
    #[error(
        "the hub secret does not match the one this database was created with; set MUSTER_SECRET (or <data-dir>/secret) to the original secret. Nothing was changed"
    )]
    WrongSecret,
    #[error("hub secret: {0}")]
    Secret(String),
    #[error("database: {0}")]
    Store(#[from] muster_store::StoreError),
    #[error("certificate authority: {0}")]
    Ca(#[from] muster_ca::CaError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("invalid option: {0}")]
    Invalid(String),
    /// Another process holds the data dir (SPEC §12); nothing was changed.
    #[error(
        "another hub{} is using the data dir {}; stop it, or give this one another --data-dir. Nothing was changed",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        data_dir.display()
    )]
    Locked { data_dir: PathBuf, pid: Option<u32> },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Agents told of a shutdown reconnect at a random moment within this window.
const SHUTDOWN_RECONNECT_SPREAD: Duration = Duration::from_secs(10);

/// A hub that is bound and ready to serve.
pub struct Hub {
    /// Released when the hub stops serving, not before.
    _lock: bootstrap::DataDirLock,
    state: Arc<AppState>,
    tls: Arc<rustls::ServerConfig>,
    listener: std::net::TcpListener,
    files: HubFiles,
    connections: Arc<conn_limit::ConnLimits>,
    request_body_timeout: Duration,
    idle_timeout: Duration,
    checkpoints: checkpoint::Config,
}

impl Hub {
    /// Prepare the data dir, secret, database, CA and TLS, bind, and write `hub.json`.
    pub async fn start(opts: HubOptions) -> Result<Hub, HubError> {
        let public_cert = tls::load_public(&opts)?;
        let checkpoints = checkpoint::Config {
            file: opts.data_dir.join(checkpoint::FILE),
            every: opts.audit_checkpoint_every.max(Duration::from_millis(100)),
            syslog: opts.audit_syslog.clone(),
            webhook: match &opts.audit_webhook {
                Some(url) => Some(checkpoint::check_webhook(url).map_err(HubError::Invalid)?),
                None => None,
            },
        };
        let prepared = bootstrap::prepare(&opts).await?;
        let listener =
            std::net::TcpListener::bind(opts.listen).map_err(|source| HubError::Bind {
                addr: opts.listen,
                source,
            })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| HubError::Bind {
                addr: opts.listen,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| HubError::Bind {
            addr: opts.listen,
            source,
        })?;
        let hub_url = match &opts.advertise_url {
            Some(u) => check_advertise_url(u)
                .map_err(|e| HubError::Invalid(format!("--advertise-url {e}")))?,
            None => default_advertise_url(local),
        };
        let names = server_names(&hub_url, local);
        let trusted_proxies = opts
            .trusted_proxies
            .iter()
            .map(|c| rules::parse_cidr(c).map_err(HubError::Invalid))
            .collect::<Result<Vec<_>, _>>()?;
        let public_tls = public_cert.is_some();
        let tls = tls::server_config(&prepared.ca, public_cert, &names)?;
        let releases = muster_release::ReleaseDir::new(opts.data_dir.join("releases"));
        let own_binary = opts
            .agent_binary
            .clone()
            .or_else(|| std::env::current_exe().ok());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let handshakes = handshakes::Handshakes::new(
            opts.max_handshakes
                .unwrap_or(defaults::HANDSHAKES_PER_CORE * cores),
            trusted_proxies.clone(),
        );
        let sso_env = opts
            .sso
            .settings()
            .map_err(|e| HubError::Invalid(format!("single sign-on: {e}")))?;
        let http = outbound::client(opts.outbound_ca.as_deref()).map_err(HubError::Invalid)?;
        let sso = oidc::Sso::new(sso_env, opts.password_login, http.clone());
        let peers =
            outbound::peer_client(prepared.ca.cert_pem(), public_tls).map_err(HubError::Invalid)?;
        let state = Arc::new(AppState {
            peers,
            sso,
            calls: Default::default(),
            pack_grants: opts.pack_grants.clone(),
            http,
            integration_calls: tokio::sync::Semaphore::new(defaults::INTEGRATION_CALLS),
            store: prepared.store,
            keys: prepared.keys,
            ca_hash: prepared.ca.hash(),
            ca: prepared.ca,
            hub_url,
            heartbeat_interval: opts.heartbeat_interval,
            cert_validity: opts.cert_validity,
            renewal_grace: opts.renewal_grace,
            approval_queue: opts.approval_queue,
            pending_ttl: opts.pending_ttl,
            queue_limits: muster_store::QueueLimits {
                per_source: opts.max_pending_per_source.max(1) as i64,
                total: opts.max_pending_total.max(1) as i64,
            },
            refusals: Default::default(),
            trusted_proxies,
            key_use: Default::default(),
            mcp_slots: slots::CallerSlots::new(mcp::PER_KEY),
            login_throttle: Default::default(),
            password_slots: slots::WorkSlots::per_core(),
            decoy_hash: Default::default(),
            enroll_slots: tokio::sync::Semaphore::new(opts.max_enrollments_in_flight.max(1)),
            metrics: Default::default(),
            tokens: Default::default(),
            sessions: Default::default(),
            events: Default::default(),
            history: Default::default(),
            presence: Default::default(),
            handshakes: handshakes.clone(),
            hub_lease: opts.hub_lease.max(Duration::from_secs(1)),
            started_at: clock::now_ms(),
            hub_id: bootstrap::hub_id(&opts.data_dir)?,
            releases: releases.clone(),
            downloads: downloads::Downloads::new(
                releases,
                own_binary.as_deref(),
                opts.downloads_per_source,
                opts.downloads_in_flight,
            ),
            public_tls,
        });
        if let Some((name, password)) = &opts.admin_user {
            bootstrap::ensure_admin_user(&state, name, password).await?;
        }
        if !opts.password_login {
            sso::check_way_in(&state).await?;
        }
        let max_connections = opts
            .max_connections
            .unwrap_or_else(|| conn_limit::default_max_connections(conn_limit::open_files_limit()));
        let connections = conn_limit::ConnLimits::new(
            opts.max_connections_per_source,
            max_connections,
            state.trusted_proxies.clone(),
        );
        let files = bootstrap::write_hub_json(&opts.data_dir, &local_url(local), &state)?;
        tracing::info!(
            url = %state.hub_url,
            listen = %local,
            ca_hash = %state.ca_hash,
            backend = state.store.backend(),
            max_connections = connections.total(),
            "hub listening"
        );
        Ok(Hub {
            _lock: prepared.lock,
            state,
            tls: Arc::new(tls),
            listener,
            files,
            connections,
            request_body_timeout: opts.request_body_timeout,
            idle_timeout: opts.idle_timeout,
            checkpoints,
        })
    }

    /// The URL a client on this machine reaches the hub by (what `hub.json` says).
    pub fn local_url(&self) -> &str {
        &self.files.url
    }

    /// The advertised URL, as printed in enrollment commands.
    pub fn url(&self) -> &str {
        &self.state.hub_url
    }

    pub fn ca_hash(&self) -> CaHash {
        self.state.ca_hash
    }

    pub fn files(&self) -> &HubFiles {
        &self.files
    }

    /// Serve until `shutdown` completes, then stop accepting and let requests in
    /// flight finish (up to ten seconds).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HubError> {
        let handle = axum_server::Handle::new();
        let on_shutdown = handle.clone();
        let (stop_flush, flush_stopped) = tokio::sync::watch::channel(false);
        let flush_every = self
            .state
            .heartbeat_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(10));
        sessions::tidy_history(&self.state).await;
        let historian = self.state.history.take_receiver().map(|queue| {
            tokio::spawn(sessions::history_loop(
                self.state.clone(),
                queue,
                flush_stopped.clone(),
            ))
        });
        lease::tidy(&self.state).await;
        let leaser = tokio::spawn(lease::lease_loop(self.state.clone(), flush_stopped.clone()));
        let renewer = tokio::spawn(lease::renew_loop(self.state.clone(), flush_stopped.clone()));
        let notifier = tokio::spawn(live::notify_loop(self.state.clone(), flush_stopped.clone()));
        let checkpointer = tokio::spawn(checkpoint::checkpoint_loop(
            self.state.clone(),
            self.checkpoints.clone(),
            flush_stopped.clone(),
        ));
        let flusher = tokio::spawn(sessions::flush_loop(
            self.state.clone(),
            flush_every,
            flush_stopped,
        ));
        // Hubs sharing a database: sessions held here close when another hub ends
        // their credentials. Without the listener, revocations still apply on every
        // request; only a live session elsewhere would stay until it reconnects.
        let _follower = match self.state.store.watch_agent_changes().await {
            Ok(Some(changes)) => Some(AbortOnDrop(tokio::spawn(sessions::follow_changes(
                self.state.clone(),
                changes,
            )))),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for agent changes from other hubs");
                None
            }
        };
        let state = self.state.clone();
        tokio::spawn(async move {
            shutdown.await;
            // Stop accepting first (so nobody reconnects to a hub on its way out),
            // then tell agents to come back spread over the next seconds instead
            // of waiting out a full backoff; connections in flight get 10 s.
            on_shutdown.graceful_shutdown(Some(Duration::from_secs(10)));
            state.sessions.shutdown_all(SHUTDOWN_RECONNECT_SPREAD);
            state.events.close_all();
        });
        let app = api::router(self.state.clone(), self.request_body_timeout);
        let rustls_config = axum_server::tls_rustls::RustlsConfig::from_config(self.tls);
        // NODELAY: a TLS handshake is several small writes; without it Nagle and
        // delayed ACKs add ~40 ms to every new connection. Keepalive finds peers
        // that vanished without a FIN.
        let tcp = axum_server::accept::TcpConfigAcceptor::new(
            axum_server::accept::TcpSocketConfig::new()
                .nodelay(true)
                .keepalive(
                    axum_server::accept::TcpKeepaliveConfig::new().time(Duration::from_secs(60)),
                ),
        );
        // Connection caps come first, so a refused connection costs no handshake.
        let limited = conn_limit::LimitAcceptor::new(tcp, self.connections, self.idle_timeout);
        let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls_config)
            // A peer that never finishes its handshake must not hold a slot forever.
            .handshake_timeout(Duration::from_secs(10))
            .acceptor(limited);
        // Outermost: handshakes run a bounded number at a time (see handshakes.rs).
        let acceptor = handshakes::GateAcceptor::new(acceptor, self.state.handshakes.clone());
        let local = self.listener.local_addr().ok();
        let mut server = axum_server::from_tcp(self.listener)
            .map_err(|source| HubError::Bind {
                addr: local.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                source,
            })?
            .acceptor(acceptor)
            .handle(handle)
            // A connection that never sends a request must not hold a slot.
            .first_request_timeout(Duration::from_secs(30));
        server
            .http_builder()
            .http1()
            .header_read_timeout(Duration::from_secs(15));
        // Pings find HTTP/2 peers that vanished mid-request (the idle timeout takes
        // care of connections with nothing in flight). Fewer streams than hyper's
        // 200 per connection bound what one connection may have buffered at once.
        server
            .http_builder()
            .http2()
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20))
            .max_concurrent_streams(32);
        server
            .serve(app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .map_err(|source| HubError::Io {
                action: "serve on",
                path: PathBuf::from(local.map(|l| l.to_string()).unwrap_or_default()),
                source,
            })?;
        // Upgraded WebSocket connections outlive the HTTP server: give the session
        // tasks a moment to deliver their `shutdown` frames before the final flush.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while self.state.sessions.count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop_flush.send(true);
        let _ = flusher.await;
        let _ = notifier.await;
        let _ = leaser.await;
        let _ = renewer.await;
        if let Some(h) = historian {
            let _ = h.await;
        }
        // Last: every entry this run wrote is in the chain by now.
        let _ = checkpointer.await;
        tracing::info!("hub stopped");
        Ok(())
    }
}

/// Stops a background task when the hub stops, however `serve` returns. (Ending the
/// change follower drops its receiver, which closes the store's listening
/// connection.)
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `https://<ip>:<port>` for a specific listen address, else the machine's hostname.
fn default_advertise_url(local: SocketAddr) -> String {
    if local.ip().is_unspecified() {
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("https://{host}:{}", local.port())
    } else {
        format!("https://{}", local)
    }
}

/// What this machine's own tools use: loopback when listening everywhere.
fn local_url(local: SocketAddr) -> String {
    match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => format!("https://127.0.0.1:{}", local.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => format!("https://[::1]:{}", local.port()),
        _ => format!("https://{local}"),
    }
}

/// Names the hub's own server certificate carries (SPEC §3).
fn server_names(hub_url: &str, local: SocketAddr) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(host) = url_host(hub_url) {
        names.push(host);
    }
    if let Some(h) = hostname::get().ok().and_then(|h| h.into_string().ok()) {
        names.push(h);
    }
    names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    if !local.ip().is_unspecified() {
        names.push(local.ip().to_string());
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    names
}

/// The host part of `https://host:port/...`, without IPv6 brackets.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_are_redacted_and_split() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:<redacted>@h:5432/db"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(
            url_host("https://hub.example:8443/x").as_deref(),
            Some("hub.example")
        );
        assert_eq!(url_host("https://[::1]:8443").as_deref(), Some("::1"));
    }

    #[test]
    fn advertised_urls_are_a_host_and_port() {
        for good in [
            "https://hub.example.com:8443",
            "https://hub.example.com/",
            "https://10.0.0.5",
            "https://[2001:db8::1]:8443",
            "https://hub",
        ] {
            assert!(check_advertise_url(good).is_ok(), "{good}");
        }
        assert_eq!(
            check_advertise_url("https://hub.example.com:8443/").as_deref(),
            Ok("https://hub.example.com:8443")
        );
        for bad in [
            "http://hub:8443",
            "hub:8443",
            "https://",
            "https://hub:0",
            "https://hub:99999",
            "https://hub:8443/api",
            "https://user@hub",
            "https://hub?x=1",
            "https://hu b",
            "https://[::1",
            "https://[::1]x",
            "https://[::1]:",
            "https://hub..example",
        ] {
            let e = check_advertise_url(bad).unwrap_err();
            assert!(
                e.contains("https://HOST[:PORT]") && !e.contains('\n'),
                "{bad}: {e}"
            );
        }
    }
}
