//! `muster unenroll`: revoke this machine's credentials at the hub and delete its
//! config dir, so an uninstalled machine does not linger as a ghost.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::output::out;

#[derive(Args)]
pub struct UnenrollArgs {
    /// This machine's identity (default: ~/.muster).
    #[arg(long, env = "MUSTER_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Delete the local credentials even when the hub cannot be reached.
    #[arg(long)]
    force: bool,
}

pub async fn exec(args: UnenrollArgs) -> Result<()> {
    let dir = muster_agent::configdir::ConfigDir::resolve(args.config_dir.as_deref())?;
    let id = muster_agent::unenroll(&dir, args.force).await?;
    out!("Unenrolled agent {id}; removed {}", dir.path().display())
}
