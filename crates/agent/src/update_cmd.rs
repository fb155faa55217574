//! `muster update` on an agent machine (SPEC §10 "Updates"): ask the hub for the
//! release of this binary's platform (`GET /api/v1/agent/latest`), and install it with the same checks as an
//! update ordered over the session (`update.rs`). The running service is then
//! restarted and judged the same way: the hub must report this agent online with
//! the new version within the deadline, else the previous binary is put back and
//! the service restarted again. Every step is reported to the hub, which audits it.
//!
//! Only a systemd unit installed by `muster agent install-service` is restarted;
//! without one the new binary is left in place (the previous kept beside it) and
//! the operator is told to restart the agent.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use muster_proto::{AgentMessage, AgentStatus, UpdatePhase, UpdateReport};

use crate::AgentError;
use crate::configdir::ConfigDir;
use crate::service::systemd;
use crate::update::{self, Order};

/// What `muster update` was asked.
#[derive(Debug, Clone)]
pub struct UpdateOptions {
    /// Only say whether an update is available.
    pub check: bool,
    pub version: Option<String>,
    pub allow_downgrade: bool,
    /// How long the restarted agent has to reach the hub.
    pub deadline: Duration,
    /// Where a systemd unit would be (`/` on a real machine).
    pub root: std::path::PathBuf,
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// `--check`: the running version and the one the hub offers.
    Checked {
        running: String,
        available: String,
        /// Whether it is signed (the hub's own binary, served when nothing is
        /// published, is not: no agent would install it).
        signed: bool,
        newer: bool,
    },
    /// Already running the offered version.
    Current(String),
    /// Installed and confirmed by the hub after a service restart.
    Completed { from: String, to: String },
    /// Installed; no service to restart here.
    Installed {
        from: String,
        to: String,
        previous: std::path::PathBuf,
    },
}

pub async fn update(dir: &ConfigDir, opts: &UpdateOptions) -> Result<UpdateOutcome, AgentError> {
    let creds = dir
        .load()?
        .ok_or_else(|| AgentError::NotEnrolled(dir.path().to_path_buf()))?;
    let client = update::agent_client(&creds, Duration::from_secs(30))?;
    let (os, arch) = (muster_release::this_os(), muster_release::this_arch());
    let offer = client
        .release_for(os, arch, opts.version.as_deref())
        .await?;
    let running = muster_release::running_version();
    if opts.check {
        // An unsigned binary (the hub's own, when nothing is published) would be
        // refused: it is no update.
        let newer = !offer.signature.is_empty()
            && matches!(
                muster_release::compare_versions(&offer.version, &running),
                Ok(std::cmp::Ordering::Greater)
            );
        return Ok(UpdateOutcome::Checked {
            running,
            signed: !offer.signature.is_empty(),
            available: offer.version,
            newer,
        });
    }
    let order = Order {
        manifest: muster_release::Manifest {
            version: offer.version.clone(),
            os: os.to_owned(),
            arch: arch.to_owned(),
            sha256: offer.sha256.clone(),
            size: offer.size,
            signature: offer.signature.clone(),
        },
        path: update::download_path(&offer.url),
        allow_downgrade: opts.allow_downgrade,
        deadline: opts.deadline,
    };
    let exe = update::current_exe().map_err(AgentError::Usage)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let prepared = update::prepare(&order, &creds, &exe, &tx).await;
    // Steps so far, then the last one when it ended there.
    let mut steps = Vec::new();
    while let Ok(r) = rx.try_recv() {
        steps.push(r);
    }
    let ended = prepared.as_ref().err().cloned();
    steps.extend(ended.clone());
    for r in &steps {
        send(&client, r).await;
    }
    let trial = match prepared {
        Ok(trial) => trial,
        Err(AgentMessage::UpdateStatus {
            phase: UpdatePhase::Skipped,
            version,
            ..
        }) => return Ok(UpdateOutcome::Current(version)),
        Err(AgentMessage::UpdateStatus { phase, message, .. }) => {
            return Err(AgentError::Usage(format!("update {phase}: {message}")));
        }
        Err(other) => return Err(AgentError::Internal(format!("{other:?}"))),
    };
    if !unit_installed(&opts.root) {
        return Ok(UpdateOutcome::Installed {
            from: running,
            to: trial.version,
            previous: update::previous_of(&exe),
        });
    }
    // The service runs the new binary now; the hub must see it in time.
    let judged = match restart() {
        Ok(()) => confirm(&client, &trial.version, opts.deadline).await,
        Err(e) => Err(e),
    };
    match judged {
        Ok(()) => {
            let done = update::report(
                UpdatePhase::Completed,
                &trial.version,
                format!("now running {}", trial.version),
            );
            send(&client, &done).await;
            Ok(UpdateOutcome::Completed {
                from: running,
                to: trial.version,
            })
        }
        Err(why) => {
            let restored = update::restore(&exe).err();
            let restarted = restart().err();
            let why = [Some(why), restored, restarted]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ");
            let back = update::report(UpdatePhase::RolledBack, &trial.version, why.clone());
            send(&client, &back).await;
            Err(AgentError::Usage(format!(
                "update rolled back to {running}: {why}"
            )))
        }
    }
}

/// Report one step; a hub that cannot be told is logged, not fatal (the update
/// itself already happened or did not).
async fn send(client: &muster_client::HubClient, r: &AgentMessage) {
    if let AgentMessage::UpdateStatus {
        phase,
        version,
        message,
    } = r
    {
        let report = UpdateReport {
            phase: *phase,
            version: version.clone(),
            message: message.clone(),
        };
        if let Err(e) = client.report_update(&report).await {
            tracing::warn!(error = %e, %phase, "could not report an update step to the hub");
        }
    }
}

fn restart() -> Result<(), String> {
    let status = Command::new("systemctl")
        .args(["restart", systemd::UNIT])
        .status()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "systemctl restart {} failed ({status})",
            systemd::UNIT
        ))
    }
}

/// Wait until the hub reports this agent online running `version`.
async fn confirm(
    client: &muster_client::HubClient,
    version: &str,
    deadline: Duration,
) -> Result<(), String> {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if let Ok(me) = client.agent_me().await
            && matches!(me.status, AgentStatus::Online | AgentStatus::Degraded)
            && me.agent_version == version
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!(
        "the restarted agent did not reach the hub as {version} within {} s",
        deadline.as_secs()
    ))
}

/// Whether `install-service` put a unit under `root`.
fn unit_installed(root: &Path) -> bool {
    root.join(systemd::PATH).exists()
}
