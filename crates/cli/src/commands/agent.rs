//! `muster agent`: the service entry point (keep the live session with the hub),
//! and installing or removing it as a service of this OS's init system.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use muster_agent::AgentError;
use muster_agent::configdir::ConfigDir;
use muster_agent::service::{self, Init};

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
    /// Write and enable a service (systemd, launchd, rc.d, rcctl, SMF or Windows)
    /// that runs `muster agent` for an enrolled config dir.
    InstallService {
        #[command(flatten)]
        init: InitArg,
        /// The enrolled config dir the service's agent uses (default: ~/.muster); with
        /// --root, a path on the target system.
        #[arg(long, env = "MUSTER_CONFIG_DIR")]
        config_dir: Option<PathBuf>,
        /// The muster binary the service runs (default: this one), written as an
        /// absolute path; with --root, a path on the target system.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// Write under this directory (an image or a mounted system) and call no
        /// service manager; --config-dir and --binary name paths on that system.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Print the service file to stdout instead; nothing is checked or written.
        #[arg(long)]
        print: bool,
        /// Write and enable the service, but do not start it now.
        #[arg(long)]
        no_start: bool,
    },
    /// Stop, disable and remove the service.
    UninstallService {
        #[command(flatten)]
        init: InitArg,
        /// Remove from under this directory and call no service manager.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
}

#[derive(Args)]
struct InitArg {
    /// The service manager: auto detects it from this OS (systemd where it runs).
    #[arg(
        long,
        default_value = "auto",
        value_parser = ["auto", "systemd", "launchd", "freebsd", "netbsd", "openbsd", "smf", "windows"]
    )]
    init: String,
}

impl InitArg {
    fn parse(&self) -> Result<Option<Init>> {
        Ok(Init::parse(&self.init).map_err(AgentError::from)?)
    }
}

pub async fn exec(args: AgentArgs) -> Result<()> {
    match args.action {
        Some(AgentAction::InstallService {
            init,
            config_dir,
            binary,
            root,
            print,
            no_start,
        }) => {
            let dir = ConfigDir::resolve(config_dir.as_deref())?;
            let binary = match binary {
                Some(path) => path,
                None => std::env::current_exe().context("cannot find this binary")?,
            };
            let opts = service::InstallOptions {
                init: init.parse()?,
                binary,
                config_dir: dir.path().to_path_buf(),
                root,
                no_start,
            };
            if print {
                let text = service::print(&opts)?;
                return out!("{}", text.trim_end());
            }
            let installed = service::install(&opts)?;
            let what = if installed.started {
                "installed, enabled and started"
            } else if opts.root.is_some() {
                "installed and enabled"
            } else {
                "installed and enabled (not started)"
            };
            out!(
                "{} service {what}: {}",
                installed.init.name(),
                installed.path.display()
            )
        }
        Some(AgentAction::UninstallService { init, root }) => {
            let (init, path) = service::uninstall(init.parse()?, root.as_deref())?;
            out!("{} service removed: {}", init.name(), path.display())
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
