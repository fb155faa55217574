//! `muster hub`: run the hub, and the offline chores on its data dir (`ca-hash`,
//! `rotate-secret`, `backup`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};

use crate::duration::parse_duration;
use crate::output::out;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HubArgs {
    #[command(subcommand)]
    action: Option<HubAction>,
    /// Address to listen on; port 0 picks a free one (see hub.json).
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: std::net::SocketAddr,
    /// Where the hub keeps its CA, secret, hub.json and (by default) its database.
    #[arg(long, default_value = "./muster-data", env = "MUSTER_DATA_DIR")]
    data_dir: PathBuf,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB. Default: SQLite in the data dir.
    #[arg(long, env = "MUSTER_DB")]
    db: Option<String>,
    /// URL agents are told to use: https://HOST[:PORT], e.g. https://hub.example.com:8443.
    #[arg(long, env = "MUSTER_ADVERTISE_URL", value_parser = advertise_url)]
    advertise_url: Option<String>,
    /// Serve this certificate chain (PEM), e.g. a publicly trusted one, to browsers and
    /// other clients; Muster's agent and CLI still get the hub CA's certificate, so
    /// token pins keep working.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert; checked against it at start.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How often agents send a heartbeat; silence for 2.5 intervals means offline.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// Hubs sharing a database: one that has not renewed its lease for this long is
    /// taken for dead and its agents show offline until they reconnect elsewhere.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    hub_lease: Duration,
    /// Lifetime of agent certificates.
    #[arg(long, default_value = "720h", value_parser = parse_duration)]
    cert_validity: Duration,
    /// How long after expiry an offline agent may still renew with proof of its key.
    #[arg(long, default_value = "90d", value_parser = parse_duration)]
    renewal_grace: Duration,
    /// Enrollments with no credential wait for an admin (on) or are refused (off).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    approval_queue: String,
    /// How long a queued request waits for a decision before it expires.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pending_ttl: Duration,
    /// Believe X-Forwarded-For / Forwarded only from proxies in this CIDR; repeatable.
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<String>,
    /// Enrollments handled at once; beyond it, 429 with a jittered Retry-After.
    #[arg(long, default_value_t = muster_hub::defaults::MAX_ENROLLMENTS_IN_FLIGHT)]
    max_enrollments_in_flight: usize,
    /// Open connections one address may hold (IPv6: one /64); beyond it new ones are
    /// closed at once. Agent sessions and --trusted-proxy addresses do not count.
    #[arg(long, default_value_t = muster_hub::defaults::MAX_CONNECTIONS_PER_SOURCE)]
    max_connections_per_source: usize,
    /// Open connections in all; default: the open-files limit less a reserve.
    #[arg(long)]
    max_connections: Option<usize>,
    /// PostgreSQL connections in this hub's pool. The hub holds two more (one
    /// committing enrollments, one listening to the other hubs), so several hubs on
    /// one server need hubs × (N + 2) below its max_connections.
    #[arg(long, default_value_t = muster_store::DEFAULT_PG_POOL)]
    db_pool: u32,
    /// TLS handshakes run at once (a quarter of them from one address); a few more
    /// wait up to 2 s, the rest are closed and their agents retry with jitter.
    /// Default: 128 per core.
    #[arg(long)]
    max_handshakes: Option<usize>,
    /// Agent binary downloads one address (IPv6: one /64) may start per minute;
    /// beyond it, 429 with Retry-After. Raise it for many machines behind one NAT.
    #[arg(long, default_value_t = muster_hub::defaults::DOWNLOADS_PER_SOURCE)]
    downloads_per_source: u32,
    /// Agent binary downloads in flight at once; beyond it, 503 with Retry-After.
    #[arg(long, default_value_t = muster_hub::defaults::DOWNLOADS_IN_FLIGHT)]
    downloads_in_flight: usize,
    /// Time a request body may take to arrive in full; slower ones get 408.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    request_body_timeout: Duration,
    /// Credential-less enrollments one address (IPv6: one /64) may have waiting for
    /// approval; beyond it, 429. Many machines behind one NAT: use a token.
    #[arg(long, default_value_t = muster_hub::defaults::MAX_PENDING_PER_SOURCE)]
    max_pending_per_source: usize,
    /// Credential-less enrollments waiting for approval in all; beyond it, 429.
    #[arg(long = "max-pending", default_value_t = muster_hub::defaults::MAX_PENDING_TOTAL)]
    max_pending_total: usize,
    /// Close a connection with no request in flight for this long (sessions excepted).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Privileges every agent's packs may use without an admin's approval, comma-
    /// separated ("" for none: every pack needing one waits for
    /// `muster agents packs NAME approve PACK`). journal: read service logs.
    #[arg(long, default_value = "journal", value_delimiter = ',')]
    pack_grants: Vec<String>,
    /// Whether the dashboard takes passwords. off needs single sign-on and an admin it
    /// admits (checked at start); API keys keep working (the break-glass).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    password_login: String,
    /// PEM file of CA certificates to trust, besides the system's, for the calls the
    /// hub makes itself (integrations' APIs, the SSO provider) behind a private CA.
    #[arg(long, value_name = "FILE")]
    outbound_ca: Option<std::path::PathBuf>,
    /// How often the audit chain's head, when it moved, is written signed outside the
    /// database (<data-dir>/audit-checkpoint.json, syslog, --audit-webhook), and
    /// always at shutdown: `muster audit verify --checkpoint FILE` then detects
    /// entries cut off behind it.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    audit_checkpoint_every: Duration,
    /// The syslog socket audit checkpoints also go to (skipped when absent), or off.
    #[arg(long, default_value = "/dev/log", value_name = "SOCKET|off")]
    audit_syslog: String,
    /// A URL each audit checkpoint is also POSTed to as JSON (https://, or http:// on
    /// a loopback address), e.g. a log collector outside this machine.
    #[arg(long, value_name = "URL")]
    audit_webhook: Option<String>,
    /// Single sign-on: the OpenID Connect issuer URL (wins over `muster sso set`).
    #[arg(long, env = "MUSTER_OIDC_ISSUER", conflicts_with = "entra_tenant_id")]
    oidc_issuer: Option<String>,
    /// Single sign-on with Microsoft Entra: the directory (tenant) ID, for the issuer.
    #[arg(long, env = "MUSTER_ENTRA_TENANT_ID")]
    entra_tenant_id: Option<String>,
    /// Single sign-on: the client (application) ID registered at the provider.
    #[arg(long, env = "MUSTER_OIDC_CLIENT_ID")]
    oidc_client_id: Option<String>,
    /// Single sign-on: the client secret (prefer the environment variable: a flag
    /// shows in the process list).
    #[arg(long, env = "MUSTER_OIDC_CLIENT_SECRET", hide_env_values = true)]
    oidc_client_secret: Option<String>,
    /// Single sign-on: the provider's name on the sign-in button.
    #[arg(long, env = "MUSTER_OIDC_NAME")]
    oidc_name: Option<String>,
    /// Single sign-on: the claim listing a user's groups (default: groups).
    #[arg(long, env = "MUSTER_OIDC_GROUPS_CLAIM")]
    oidc_groups_claim: Option<String>,
    /// Single sign-on: scopes besides openid, space-separated (default: "profile email").
    #[arg(long, env = "MUSTER_OIDC_SCOPES")]
    oidc_scopes: Option<String>,
}

/// `--advertise-url` checked once, at parse time.
fn advertise_url(s: &str) -> Result<String, String> {
    muster_hub::check_advertise_url(s)
}

#[derive(Subcommand)]
enum HubAction {
    /// Print the CA hash agents pin (sha256:…).
    CaHash {
        /// The hub's data dir, holding ca.pem.
        #[arg(long, default_value = "./muster-data", env = "MUSTER_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Re-encrypt and re-key everything under a new hub secret (stop the hub first).
    /// The new secret: MUSTER_NEW_SECRET, else generated into <data-dir>/secret.
    RotateSecret {
        /// The hub's data dir.
        #[arg(long, default_value = "./muster-data", env = "MUSTER_DATA_DIR")]
        data_dir: PathBuf,
        /// Database URL, when not SQLite in the data dir.
        #[arg(long, env = "MUSTER_DB")]
        db: Option<String>,
    },
    /// A consistent copy of the SQLite database, taken while the hub serves.
    Backup {
        /// The hub's data dir.
        #[arg(long, default_value = "./muster-data", env = "MUSTER_DATA_DIR")]
        data_dir: PathBuf,
        /// Database URL, when not SQLite in the data dir.
        #[arg(long, env = "MUSTER_DB")]
        db: Option<String>,
        /// The new file to write the copy to.
        #[arg(long)]
        out: PathBuf,
    },
}

pub async fn exec(args: HubArgs) -> Result<()> {
    match args.action {
        Some(HubAction::RotateSecret { data_dir, db }) => rotate_secret(data_dir, db).await,
        Some(HubAction::Backup { data_dir, db, out }) => backup(&data_dir, db, &out).await,
        Some(HubAction::CaHash { data_dir }) => ca_hash(&data_dir),
        None => serve(args).await,
    }
}

async fn rotate_secret(data_dir: PathBuf, db: Option<String>) -> Result<()> {
    let mut opts = muster_hub::HubOptions::new(data_dir);
    opts.db_url = db;
    opts.secret = non_empty_env("MUSTER_SECRET");
    let new = non_empty_env("MUSTER_NEW_SECRET");
    let (signed, printed) = muster_hub::rotate_secret(&opts, new).await?;
    out!("Rotated the hub secret; {signed} audit entries re-signed.")?;
    match printed {
        Some(_) => {
            out!("Start the hub with MUSTER_SECRET set to the new value (MUSTER_NEW_SECRET).")
        }
        None => out!(
            "The new secret is in {}/secret: back it up now.",
            opts.data_dir.display()
        ),
    }
}

async fn backup(data_dir: &Path, db: Option<String>, out: &Path) -> Result<()> {
    let url = db.unwrap_or_else(|| format!("sqlite://{}", data_dir.join("muster.db").display()));
    if !url.starts_with("sqlite:") {
        bail!("backups of a PostgreSQL hub are taken with pg_dump (see docs/OPERATIONS.md)");
    }
    let path = url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    if !Path::new(&path).exists() {
        bail!("no database at {path}");
    }
    if out.exists() {
        bail!("{} exists already; choose a new file", out.display());
    }
    muster_store::backup_sqlite(&format!("sqlite://{path}?mode=ro"), out)
        .await
        .context("backup failed")?;
    out!(
        "Backup written to {} (restore: a fresh data dir with this file as muster.db and the same hub secret)",
        out.display()
    )
}

fn ca_hash(data_dir: &Path) -> Result<()> {
    let path = data_dir.join("ca.pem");
    let pem = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (has the hub started once here?)",
            path.display()
        )
    })?;
    let hash = muster_ca::CaHash::of_pem(&pem)?;
    out!("{hash}")
}

async fn serve(args: HubArgs) -> Result<()> {
    let admin_user = match (
        std::env::var("MUSTER_ADMIN_USER"),
        std::env::var("MUSTER_ADMIN_PASSWORD"),
    ) {
        (Ok(u), Ok(p)) if !u.is_empty() => Some((u, p)),
        (Ok(u), _) if !u.is_empty() => bail!("MUSTER_ADMIN_USER needs MUSTER_ADMIN_PASSWORD"),
        _ => None,
    };
    let outbound_ca = match &args.outbound_ca {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --outbound-ca {}", path.display()))?,
        ),
        None => None,
    };
    let opts = muster_hub::HubOptions {
        outbound_ca,
        listen: args.listen,
        data_dir: args.data_dir,
        db_url: args.db,
        advertise_url: args.advertise_url,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        heartbeat_interval: args.heartbeat_interval,
        hub_lease: args.hub_lease,
        cert_validity: args.cert_validity,
        renewal_grace: args.renewal_grace,
        approval_queue: args.approval_queue == "on",
        pending_ttl: args.pending_ttl,
        trusted_proxies: args.trusted_proxies,
        max_enrollments_in_flight: args.max_enrollments_in_flight,
        max_connections_per_source: args.max_connections_per_source,
        max_connections: args.max_connections,
        max_handshakes: args.max_handshakes,
        db_pool: args.db_pool,
        request_body_timeout: args.request_body_timeout,
        idle_timeout: args.idle_timeout,
        max_pending_per_source: args.max_pending_per_source,
        max_pending_total: args.max_pending_total,
        admin_user,
        secret: non_empty_env("MUSTER_SECRET"),
        agent_binary: None,
        downloads_per_source: args.downloads_per_source,
        downloads_in_flight: args.downloads_in_flight,
        password_login: args.password_login == "on",
        audit_checkpoint_every: args.audit_checkpoint_every,
        audit_syslog: (args.audit_syslog != "off" && !args.audit_syslog.is_empty())
            .then(|| std::path::PathBuf::from(&args.audit_syslog)),
        audit_webhook: args.audit_webhook.filter(|u| !u.is_empty()),
        pack_grants: args
            .pack_grants
            .into_iter()
            .map(|g| g.trim().to_owned())
            .filter(|g| !g.is_empty())
            .collect(),
        sso: muster_hub::SsoEnv {
            issuer: args.oidc_issuer.filter(|s| !s.is_empty()),
            entra_tenant: args.entra_tenant_id.filter(|s| !s.is_empty()),
            client_id: args.oidc_client_id.filter(|s| !s.is_empty()),
            client_secret: args.oidc_client_secret.filter(|s| !s.is_empty()),
            display_name: args.oidc_name.filter(|s| !s.is_empty()),
            groups_claim: args.oidc_groups_claim.filter(|s| !s.is_empty()),
            scopes: args
                .oidc_scopes
                .map(|s| s.split_whitespace().map(str::to_owned).collect()),
        },
    };
    let hub = muster_hub::Hub::start(opts).await?;
    Ok(hub.serve(crate::signal::shutdown()).await?)
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}
