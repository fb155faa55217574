//! `muster status`: this machine's identity and the hub's view of it. An unreachable
//! hub is reported, not an error; a hub that revoked this agent is both reported and
//! the exit status `muster agent` would stop with, so scripts can tell.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use muster_agent::Status;

use crate::failure::Stop;
use crate::output::{Format, emit, time, time_or};

#[derive(Args)]
pub struct StatusArgs {
    /// This machine's identity (default: ~/.muster).
    #[arg(long, env = "MUSTER_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    #[command(flatten)]
    format: Format,
}

pub async fn exec(args: StatusArgs) -> Result<()> {
    let dir = muster_agent::configdir::ConfigDir::resolve(args.config_dir.as_deref())?;
    let status = muster_agent::status(&dir).await?;
    emit(args.format, &status, text)?;
    if status.hub.refused_for_good() {
        return Err(Stop::Revoked(format!(
            "the hub refused this agent: {}",
            status.hub.error.as_deref().unwrap_or("refused")
        ))
        .into());
    }
    Ok(())
}

fn text(status: &Status) -> String {
    let hub_view = match (&status.hub.agent, &status.hub.error) {
        (Some(agent), _) => format!(
            "{} (last seen {})",
            agent.status,
            time_or(agent.last_seen_at.as_deref(), "never")
        ),
        (None, Some(e)) if status.hub.reachable => format!("refused: {e}"),
        (None, Some(e)) => format!("unreachable: {e}"),
        (None, None) => "unknown".to_owned(),
    };
    [
        format!("Name:         {}", status.name),
        format!("Agent ID:     {}", status.agent_id),
        format!("Hub:          {}", status.hub_url),
        format!("Config:       {}", status.config_dir),
        format!("Cert expires: {}", time(&status.cert_expires_at)),
        format!("Hub view:     {hub_view}"),
    ]
    .join("\n")
}
