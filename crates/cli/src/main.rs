//! `muster`: the hub, the agent and the admin CLI in one binary. Thin: each command
//! parses its flags, calls a library, prints. Errors are rendered here, once, as one
//! line on stderr with a non-zero exit.

mod admin;
mod bench;
mod bench_sessions;
mod duration;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::duration::parse_duration;

#[derive(Parser)]
#[command(
    name = "muster",
    version,
    about = "Fleet enrollment and identity: hub, agent and admin CLI in one binary"
)]
struct Cli {
    #[command(flatten)]
    conn: admin::ConnectionArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (default: SQLite under ./muster-data, HTTPS on 0.0.0.0:8443).
    Hub(HubArgs),
    /// Manage enrollment tokens.
    Tokens {
        #[command(subcommand)]
        action: admin::TokensCommand,
    },
    /// Inspect and manage enrolled agents.
    Agents {
        #[command(subcommand)]
        action: admin::AgentsCommand,
    },
    /// Enroll this machine with a hub.
    Enroll(EnrollArgs),
    /// Revoke this machine's credentials at the hub and delete its config dir.
    Unenroll {
        #[arg(long, env = "MUSTER_CONFIG_DIR")]
        config_dir: Option<PathBuf>,
        /// Delete the local credentials even when the hub cannot be reached.
        #[arg(long)]
        force: bool,
    },
    /// Show this machine's identity and the hub's view of it.
    Status {
        #[arg(long, env = "MUSTER_CONFIG_DIR")]
        config_dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Run the agent: keep the live session with the hub (the service entry point).
    Agent(AgentArgs),
    /// Trust rules: hostname globs and source networks that may enroll without a credential.
    Trust {
        #[command(subcommand)]
        action: admin::TrustCommand,
    },
    /// Dashboard users (admin or member).
    Users {
        #[command(subcommand)]
        action: admin::UsersCommand,
    },
    /// API keys for people and tools (admin or member).
    Keys {
        #[command(subcommand)]
        action: admin::KeysCommand,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        action: admin::AuditCommand,
    },
    /// The approval queue: enrollments without a credential, renewals past the grace.
    Approvals {
        #[command(subcommand)]
        action: admin::ApprovalsCommand,
    },
    /// Save a hub URL, API key and CA hash for later admin commands.
    Login(admin::LoginArgs),
    /// Benchmarks against a running hub.
    Bench {
        #[command(subcommand)]
        action: bench::BenchCommand,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct HubArgs {
    #[command(subcommand)]
    action: Option<HubAction>,
    /// Address to listen on; port 0 picks a free one (see hub.json).
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: std::net::SocketAddr,
    #[arg(long, default_value = "./muster-data", env = "MUSTER_DATA_DIR")]
    data_dir: PathBuf,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB. Default: SQLite in the data dir.
    #[arg(long, env = "MUSTER_DB")]
    db: Option<String>,
    /// URL agents are told to use, e.g. https://hub.example.com:8443.
    #[arg(long, env = "MUSTER_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Serve this certificate chain (PEM), e.g. a publicly trusted one, to browsers and
    /// other clients; Muster's agent and CLI still get the hub CA's certificate, so
    /// token pins keep working.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert; checked against it at start.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
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
    #[arg(long, default_value_t = 64)]
    max_enrollments_in_flight: usize,
}

#[derive(Subcommand)]
enum HubAction {
    /// Print the CA hash agents pin (sha256:…).
    CaHash {
        #[arg(long, default_value = "./muster-data", env = "MUSTER_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Re-encrypt and re-key everything under a new hub secret (stop the hub first).
    /// The new secret: MUSTER_NEW_SECRET, else generated into <data-dir>/secret.
    RotateSecret {
        #[arg(long, default_value = "./muster-data", env = "MUSTER_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long, env = "MUSTER_DB")]
        db: Option<String>,
    },
    /// A consistent copy of the SQLite database, taken while the hub serves.
    Backup {
        #[arg(long, default_value = "./muster-data", env = "MUSTER_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long, env = "MUSTER_DB")]
        db: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct AgentArgs {
    #[command(subcommand)]
    action: Option<AgentAction>,
    #[arg(long, env = "MUSTER_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Container mode: identity in this env file (MUSTER_HUB_URL, MUSTER_CA_HASH,
    /// MUSTER_ENROLL_TOKEN, MUSTER_AGENT_NAME, MUSTER_AGENT_ID, MUSTER_AGENT_KEY).
    #[arg(long)]
    env_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AgentAction {
    /// Write and enable a systemd unit that runs `muster agent`.
    InstallService {
        #[arg(long, env = "MUSTER_CONFIG_DIR")]
        config_dir: Option<PathBuf>,
        /// Install under this directory and do not call systemctl.
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Stop, disable and remove the systemd unit.
    UninstallService {
        #[arg(long)]
        root: Option<PathBuf>,
    },
}

#[derive(Args)]
struct EnrollArgs {
    /// Enrollment token (met_…); it carries the hub's CA pin.
    #[arg(long, env = "MUSTER_ENROLL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Admin API key (mak_…) instead of a token.
    #[arg(long, hide_env_values = true)]
    key: Option<String>,
    /// Agent name (default: the hostname).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, env = "MUSTER_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Label for this agent, k=v; repeatable.
    #[arg(long = "label", value_parser = output::parse_label)]
    labels: Vec<(String, String)>,
    /// Skip verifying the hub (labs only): anyone on the path can read the credential.
    #[arg(long)]
    insecure_skip_verify: bool,
    /// With no credential the request waits for an admin: wait this long for it.
    #[arg(long, value_parser = parse_duration)]
    wait: Option<Duration>,
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MUSTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_logging(if matches!(cli.command, Command::Hub(_)) {
        "info"
    } else {
        "warn"
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Message(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Revoked(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(muster_agent::service::EXIT_REVOKED as u8)
        }
        Err(Failure::Pending(message)) => {
            eprintln!("{message}");
            ExitCode::from(EXIT_PENDING)
        }
    }
}

/// Exit status of `muster enroll` when the request waits for approval.
const EXIT_PENDING: u8 = 4;

/// How a command failed: the line to print, and whether it is the final
/// "revoked" exit that service managers must not restart.
enum Failure {
    Message(String),
    Revoked(String),
    /// The request is queued for approval: not an error, not done either.
    Pending(String),
}

impl From<String> for Failure {
    fn from(m: String) -> Self {
        Failure::Message(m)
    }
}

/// Every command; errors come back as the one line to print.
async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Agent(args) => run_agent(args).await,
        Command::Enroll(args) => run_enroll(&cli.conn, args).await,
        other => Ok(run_other(cli.conn, other).await?),
    }
}

async fn run_agent(args: AgentArgs) -> Result<(), Failure> {
    use muster_agent::AgentError;
    use muster_agent::configdir::ConfigDir;
    match args.action {
        Some(AgentAction::InstallService { config_dir, root }) => {
            let dir = ConfigDir::resolve(config_dir.as_deref()).map_err(|e| e.to_string())?;
            let binary =
                std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
            let opts = muster_agent::service::ServiceOptions {
                binary,
                config_dir: std::path::absolute(dir.path())
                    .unwrap_or_else(|_| dir.path().to_path_buf()),
                root,
            };
            let path = muster_agent::service::install(&opts).map_err(|e| e.to_string())?;
            println!("Installed and enabled {}", path.display());
            Ok(())
        }
        Some(AgentAction::UninstallService { root }) => {
            let path =
                muster_agent::service::uninstall(root.as_deref()).map_err(|e| e.to_string())?;
            println!("Removed {}", path.display());
            Ok(())
        }
        None => {
            let sources = muster_agent::facts::FactSources::from_env();
            let result = match args.env_file {
                Some(path) => {
                    let opts = muster_agent::envfile::EnvFileOptions {
                        path,
                        work_dir: args.config_dir,
                        fact_sources: sources,
                    };
                    muster_agent::envfile::run(opts, shutdown_signal()).await
                }
                None => {
                    let dir = ConfigDir::resolve(args.config_dir.as_deref())
                        .map_err(|e| e.to_string())?;
                    muster_agent::session::run(&dir, sources, shutdown_signal()).await
                }
            };
            match result {
                Ok(()) => Ok(()),
                Err(e @ (AgentError::Revoked(_) | AgentError::Refused(_))) => {
                    Err(Failure::Revoked(e.to_string()))
                }
                Err(AgentError::Session(e)) if e.is_final() => Err(Failure::Revoked(e.to_string())),
                Err(e) => Err(Failure::Message(e.to_string())),
            }
        }
    }
}

async fn run_other(conn: admin::ConnectionArgs, command: Command) -> Result<(), String> {
    let cli = Cli { conn, command };
    match cli.command {
        Command::Agent(_) => Ok(()),
        Command::Hub(args) => run_hub(args).await,
        Command::Tokens { action } => admin::tokens(&cli.conn, action).await,
        Command::Agents { action } => admin::agents(&cli.conn, action).await,
        Command::Login(args) => admin::login(&cli.conn, args).await,
        Command::Approvals { action } => admin::approvals(&cli.conn, action).await,
        Command::Trust { action } => admin::trust(&cli.conn, action).await,
        Command::Audit { action } => admin::audit(&cli.conn, action).await,
        Command::Keys { action } => admin::keys(&cli.conn, action).await,
        Command::Users { action } => admin::users(&cli.conn, action).await,
        Command::Enroll(_) => Ok(()),
        Command::Status { config_dir, json } => run_status(config_dir, json).await,
        Command::Unenroll { config_dir, force } => {
            let dir = muster_agent::configdir::ConfigDir::resolve(config_dir.as_deref())
                .map_err(|e| e.to_string())?;
            let id = muster_agent::unenroll(&dir, force)
                .await
                .map_err(|e| e.to_string())?;
            println!("Unenrolled agent {id}; removed {}", dir.path().display());
            Ok(())
        }
        Command::Bench { action } => bench::run(&cli.conn, action).await,
    }
}

async fn run_hub(args: HubArgs) -> Result<(), String> {
    if let Some(HubAction::RotateSecret { data_dir, db }) = args.action {
        let mut opts = muster_hub::HubOptions::new(data_dir);
        opts.db_url = db;
        opts.secret = std::env::var("MUSTER_SECRET")
            .ok()
            .filter(|s| !s.is_empty());
        let new = std::env::var("MUSTER_NEW_SECRET")
            .ok()
            .filter(|s| !s.is_empty());
        let (signed, printed) = muster_hub::rotate_secret(&opts, new)
            .await
            .map_err(|e| e.to_string())?;
        println!("Rotated the hub secret; {signed} audit entries re-signed.");
        match printed {
            Some(_) => println!(
                "Start the hub with MUSTER_SECRET set to the new value (MUSTER_NEW_SECRET)."
            ),
            None => println!(
                "The new secret is in {}/secret: back it up now.",
                opts.data_dir.display()
            ),
        }
        return Ok(());
    }
    if let Some(HubAction::Backup { data_dir, db, out }) = args.action {
        let url =
            db.unwrap_or_else(|| format!("sqlite://{}", data_dir.join("muster.db").display()));
        if !url.starts_with("sqlite:") {
            return Err(
                "backups of a PostgreSQL hub are taken with pg_dump (see docs/OPERATIONS.md)"
                    .to_owned(),
            );
        }
        let path = url
            .trim_start_matches("sqlite://")
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned();
        if !std::path::Path::new(&path).exists() {
            return Err(format!("no database at {path}"));
        }
        if out.exists() {
            return Err(format!(
                "{} exists already; choose a new file",
                out.display()
            ));
        }
        muster_store::backup_sqlite(&format!("sqlite://{path}?mode=ro"), &out)
            .await
            .map_err(|e| format!("backup failed: {e}"))?;
        println!(
            "Backup written to {} (restore: a fresh data dir with this file as muster.db and the same hub secret)",
            out.display()
        );
        return Ok(());
    }
    if let Some(HubAction::CaHash { data_dir }) = args.action {
        let path = data_dir.join("ca.pem");
        let pem = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read {}: {e} (has the hub started once here?)",
                path.display()
            )
        })?;
        let hash = muster_ca::CaHash::of_pem(&pem).map_err(|e| e.to_string())?;
        println!("{hash}");
        return Ok(());
    }
    let opts = muster_hub::HubOptions {
        listen: args.listen,
        data_dir: args.data_dir,
        db_url: args.db,
        advertise_url: args.advertise_url,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        heartbeat_interval: args.heartbeat_interval,
        cert_validity: args.cert_validity,
        renewal_grace: args.renewal_grace,
        approval_queue: args.approval_queue == "on",
        pending_ttl: args.pending_ttl,
        trusted_proxies: args.trusted_proxies,
        max_enrollments_in_flight: args.max_enrollments_in_flight,
        admin_user: match (
            std::env::var("MUSTER_ADMIN_USER"),
            std::env::var("MUSTER_ADMIN_PASSWORD"),
        ) {
            (Ok(u), Ok(p)) if !u.is_empty() => Some((u, p)),
            (Ok(u), _) if !u.is_empty() => {
                return Err("MUSTER_ADMIN_USER needs MUSTER_ADMIN_PASSWORD".to_owned());
            }
            _ => None,
        },
        secret: std::env::var("MUSTER_SECRET")
            .ok()
            .filter(|s| !s.is_empty()),
        // Options without a flag yet keep the hub's defaults.
        ..muster_hub::HubOptions::new("")
    };
    let hub = muster_hub::Hub::start(opts)
        .await
        .map_err(|e| e.to_string())?;
    hub.serve(shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

async fn run_enroll(conn: &admin::ConnectionArgs, args: EnrollArgs) -> Result<(), Failure> {
    let dir = muster_agent::configdir::ConfigDir::resolve(args.config_dir.as_deref())
        .map_err(|e| e.to_string())?;
    let hub_url = match &conn.hub {
        Some(h) => h.clone(),
        None => match dir.load() {
            Ok(Some(creds)) => creds.config.hub_url,
            _ => {
                return Err(Failure::Message(
                    "--hub URL is required (e.g. --hub https://hub.example:8443)".to_owned(),
                ));
            }
        },
    };
    let opts = muster_agent::EnrollOptions {
        hub_url,
        token: args.token,
        key: args.key,
        name: args.name,
        ca_hash: conn.ca_hash.clone(),
        ca_file: conn.ca_file.clone(),
        insecure_skip_verify: args.insecure_skip_verify,
        labels: args.labels.into_iter().collect(),
        wait: args.wait,
        keep_agent_key: false,
        fact_sources: None,
    };
    let report = match muster_agent::enroll(&opts, &dir).await {
        Ok(r) => r,
        Err(muster_agent::AgentError::Pending { request_id }) => {
            return Err(Failure::Pending(format!(
                "enrollment request {request_id} is waiting for an admin's approval \
                 (muster approvals approve {request_id}); run `muster enroll --hub {} --wait 10m` \
                 here to wait for it",
                opts.hub_url
            )));
        }
        Err(e) => return Err(Failure::Message(e.to_string())),
    };
    println!(
        "{} {} ({}) with {}",
        if report.created {
            "Enrolled"
        } else {
            "Re-enrolled"
        },
        report.name,
        report.agent_id,
        report.hub_url
    );
    println!("Credentials written to {}", report.config_dir.display());
    println!("Certificate expires {}", report.cert_expires_at);
    Ok(())
}

async fn run_status(config_dir: Option<PathBuf>, json: bool) -> Result<(), String> {
    let dir = muster_agent::configdir::ConfigDir::resolve(config_dir.as_deref())
        .map_err(|e| e.to_string())?;
    let status = muster_agent::status(&dir)
        .await
        .map_err(|e| e.to_string())?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!("Name:         {}", status.name);
    println!("Agent ID:     {}", status.agent_id);
    println!("Hub:          {}", status.hub_url);
    println!("Config:       {}", status.config_dir);
    println!("Cert expires: {}", status.cert_expires_at);
    match (&status.hub.agent, &status.hub.error) {
        (Some(agent), _) => println!(
            "Hub view:     {} (last seen {})",
            agent.status,
            agent.last_seen_at.as_deref().unwrap_or("never")
        ),
        (None, Some(e)) if status.hub.reachable => println!("Hub view:     refused: {e}"),
        (None, Some(e)) => println!("Hub view:     unreachable: {e}"),
        (None, None) => println!("Hub view:     unknown"),
    }
    Ok(())
}
