//! `muster update` on an agent machine (SPEC §10 "Updates"): install the signed
//! release the hub offers this agent, restart the service and roll back when the
//! new binary does not reach the hub in time. `--check` only compares versions and
//! exits 0 when up to date, 10 when a newer release is available (1 on errors), so
//! a script can run `muster update --check || muster update`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use muster_agent::update_cmd::{UpdateOptions, UpdateOutcome, update};
use serde::Serialize;

use crate::failure::Stop;
use crate::output::{Format, emit, out};

#[derive(Args)]
pub struct UpdateArgs {
    /// This machine's identity (default: ~/.muster).
    #[arg(long, env = "MUSTER_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Only say whether a newer release is available (exit 10 when one is).
    #[arg(long)]
    check: bool,
    /// Install this version instead of the newest published for this platform.
    #[arg(long)]
    version: Option<String>,
    /// Allow installing a version older than the running one.
    #[arg(long)]
    allow_downgrade: bool,
    /// How long the restarted agent has to reach the hub before the previous binary
    /// is put back.
    #[arg(long, default_value = "2m", value_parser = crate::duration::parse_duration)]
    deadline: Duration,
    #[command(flatten)]
    format: Format,
}

#[derive(Serialize)]
struct Check {
    running: String,
    available: String,
    signed: bool,
    update_available: bool,
}

pub async fn exec(args: UpdateArgs) -> Result<()> {
    let dir = muster_agent::configdir::ConfigDir::resolve(args.config_dir.as_deref())?;
    let opts = UpdateOptions {
        check: args.check,
        version: args.version,
        allow_downgrade: args.allow_downgrade,
        deadline: args.deadline,
        root: PathBuf::from("/"),
    };
    match update(&dir, &opts).await? {
        UpdateOutcome::Checked {
            running,
            available,
            signed,
            newer,
        } => {
            let check = Check {
                running,
                available,
                signed,
                update_available: newer,
            };
            emit(args.format, &check, |c| {
                format!(
                    "Running:   {}\nAvailable: {}{}",
                    c.running,
                    c.available,
                    if !c.signed {
                        " (unsigned: no release is published, agents refuse it)"
                    } else if c.update_available {
                        " (newer: run `muster update`)"
                    } else {
                        ""
                    }
                )
            })?;
            if check.update_available {
                return Err(Stop::UpdateAvailable.into());
            }
            Ok(())
        }
        UpdateOutcome::Current(v) => out!("Already running {v}; nothing to do"),
        UpdateOutcome::Completed { from, to } => {
            out!("Updated {from} -> {to}; the hub sees the agent running {to}")
        }
        UpdateOutcome::Installed { from, to, previous } => out!(
            "Installed {to} (was {from}); no muster-agent service here: restart the agent to run it (previous binary kept at {})",
            previous.display()
        ),
    }
}
