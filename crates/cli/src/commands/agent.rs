//! `muster agent`: the service entry point (keep the live session with the hub),
//! and installing or removing its systemd unit.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use muster_agent::AgentError;
use muster_agent::configdir::ConfigDir;

use crate::failure::Stop;
use crate::output::out;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    action: Option<AgentAction>,
    /// This machine's identity (default: ~/.muster).
    #[arg(long, env = "MUSTER_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Container mode: identity in this env file (MUSTER_HUB_URL, MUSTER_CA_HASH,
    /// MUSTER_ENROLL_TOKEN, MUSTER_AGENT_NAME, MUSTER_AGENT_ID, MUSTER_AGENT_KEY).
    #[arg(long)]
    env_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AgentAction {
    /// Write and enable a systemd unit that runs `muster agent` for an enrolled config dir.
    InstallService {
        /// The enrolled config dir the unit's agent uses (default: ~/.muster).
        #[arg(long, env = "MUSTER_CONFIG_DIR")]
        config_dir: Option<PathBuf>,
        /// The muster binary the unit runs (default: this one), written as an absolute path.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// Install under this directory and do not call systemctl.
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Stop, disable and remove the systemd unit.
    UninstallService {
        /// Remove from under this directory and do not call systemctl.
        #[arg(long)]
        root: Option<PathBuf>,
    },
}

pub async fn exec(args: AgentArgs) -> Result<()> {
    match args.action {
        Some(AgentAction::InstallService {
            config_dir,
            binary,
            root,
        }) => {
            let dir = ConfigDir::resolve(config_dir.as_deref())?;
            let binary = match binary {
                Some(path) => path,
                None => std::env::current_exe().context("cannot find this binary")?,
            };
            let opts = muster_agent::service::ServiceOptions {
                binary,
                config_dir: dir.path().to_path_buf(),
                root,
            };
            let path = muster_agent::service::install(&opts)?;
            out!("Installed and enabled {}", path.display())
        }
        Some(AgentAction::UninstallService { root }) => {
            let path = muster_agent::service::uninstall(root.as_deref())?;
            out!("Removed {}", path.display())
        }
        None => run(args.config_dir, args.env_file).await,
    }
}

async fn run(config_dir: Option<PathBuf>, env_file: Option<PathBuf>) -> Result<()> {
    let sources = muster_agent::facts::FactSources::from_env();
    let result = match env_file {
        Some(path) => {
            let opts = muster_agent::envfile::EnvFileOptions {
                path,
                work_dir: config_dir,
                fact_sources: sources,
            };
            muster_agent::envfile::run(opts, crate::signal::shutdown()).await
        }
        None => {
            let dir = ConfigDir::resolve(config_dir.as_deref())?;
            muster_agent::session::run(&dir, sources, crate::signal::shutdown()).await
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(e @ (AgentError::Revoked(_) | AgentError::Refused(_))) => {
            Err(Stop::Revoked(e.to_string()).into())
        }
        Err(AgentError::Session(e)) if e.is_final() => Err(Stop::Revoked(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}
