//! `muster enroll`: enroll this machine with a hub (SPEC §5). It talks to the hub as
//! the machine, not as an admin, so it has its own `--hub`, `--ca-hash` and
//! `--ca-file` and none of the admin connection's fallbacks.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Args;

use crate::duration::parse_duration;
use crate::failure::Stop;
use crate::output::{out, parse_label, time};

#[derive(Args)]
pub struct EnrollArgs {
    /// Hub URL, e.g. https://hub.example:8443 (default: the hub of the credentials
    /// already in the config dir).
    #[arg(long, env = "MUSTER_HUB_URL")]
    hub: Option<String>,
    /// Enrollment token (met_…); it carries the hub's CA pin.
    #[arg(long, env = "MUSTER_ENROLL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Admin API key (mak_…) instead of a token.
    #[arg(long, visible_alias = "api-key")]
    key: Option<String>,
    /// The hub CA's hash (sha256:…), as `muster hub ca-hash` prints it.
    #[arg(long, env = "MUSTER_CA_HASH")]
    ca_hash: Option<String>,
    /// The hub's CA certificate (PEM).
    #[arg(long, env = "MUSTER_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Agent name (default: the hostname).
    #[arg(long)]
    name: Option<String>,
    /// Where to write this machine's identity (default: ~/.muster).
    #[arg(long, env = "MUSTER_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Label for this agent, k=v; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Skip verifying the hub (labs only): anyone on the path can read the credential.
    #[arg(long)]
    insecure_skip_verify: bool,
    /// With no credential the request waits for an admin: wait this long for it.
    #[arg(long, value_parser = parse_duration)]
    wait: Option<Duration>,
    /// Make this machine a new agent although its config dir holds credentials
    /// (without it, `enroll` re-enrolls as the agent it is): the old identity is
    /// unenrolled at its hub first.
    #[arg(long)]
    force: bool,
}

pub async fn exec(args: EnrollArgs) -> Result<()> {
    let dir = muster_agent::configdir::ConfigDir::resolve(args.config_dir.as_deref())?;
    let hub_url = match args.hub {
        Some(h) => h,
        None => match dir.load() {
            Ok(Some(creds)) => creds.config.hub_url,
            _ => {
                return Err(anyhow!(
                    "--hub URL is required (e.g. --hub https://hub.example:8443)"
                ));
            }
        },
    };
    let opts = muster_agent::EnrollOptions {
        hub_url,
        token: args.token,
        key: args.key,
        name: args.name,
        ca_hash: args.ca_hash,
        ca_file: args.ca_file,
        insecure_skip_verify: args.insecure_skip_verify,
        labels: args.labels.into_iter().collect(),
        wait: args.wait,
        keep_agent_key: false,
        force: args.force,
        fact_sources: None,
    };
    let report = match muster_agent::enroll(&opts, &dir).await {
        Ok(r) => r,
        Err(muster_agent::AgentError::Pending { request_id }) => {
            return Err(Stop::Pending(format!(
                "enrollment request {request_id} is waiting for an admin's approval \
                 (muster approvals approve {request_id}); run `muster enroll --hub {} --wait 10m` \
                 here to wait for it",
                opts.hub_url
            ))
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(old) = &report.unenrolled {
        out!("Unenrolled the previous identity {old}")?;
    }
    out!(
        "{} {} ({}) with {}",
        if report.created {
            "Enrolled"
        } else {
            "Re-enrolled"
        },
        report.name,
        report.agent_id,
        report.hub_url
    )?;
    out!("Credentials written to {}", report.config_dir.display())?;
    out!("Certificate expires {}", time(&report.cert_expires_at))
}
