//! Self-update (SPEC §10 "Updates"): check an update order against this binary,
//! download the release over mutual TLS, verify it against the baked-in release key,
//! swap it in atomically keeping `<exe>.previous`, and judge it by a trial run.
//!
//! Invariants:
//! - Nothing on disk changes unless the manifest's signature verifies under this
//!   binary's own key and the downloaded file is exactly the one it describes; a
//!   build without a key refuses every update (fail closed).
//! - `<exe>` always exists: the new binary is renamed over it, and a rollback renames
//!   `<exe>.previous` back, each one atomic rename.
//! - The running agent is replaced (exec, same PID) only after the hub reported the
//!   trial child online with the new version. Otherwise the previous binary is put
//!   back and the old process carries on.
//! - A crash mid-trial is recovered on the next start from `update-trial.json` in
//!   the config dir: an unconfirmed trial is rolled back before the agent runs.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use muster_client::HubClient;
use muster_proto::{AgentMessage, AgentStatus, HubMessage, UpdatePhase};
use muster_release::Manifest;
use serde::{Deserialize, Serialize};

use crate::configdir::{ConfigDir, Credentials};

/// Set on the trial child, so it does not take the trial file for a crashed one.
pub const TRIAL_ENV: &str = "MUSTER_UPDATE_TRIAL";
/// How often the trial asks the hub whether the new binary arrived.
const TRIAL_POLL: Duration = Duration::from_millis(500);
/// The longest a download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// An update order, from the hub's `update` frame or `muster update`.
#[derive(Debug, Clone)]
pub struct Order {
    pub manifest: Manifest,
    /// Path (on this agent's own hub) to download the binary from.
    pub path: String,
    pub allow_downgrade: bool,
    pub deadline: Duration,
}

impl Order {
    /// The order an `update` frame carries, if `msg` is one.
    pub fn from_message(msg: &HubMessage) -> Option<Order> {
        let HubMessage::Update {
            version,
            os,
            arch,
            sha256,
            size,
            signature,
            url,
            allow_downgrade,
            deadline_s,
        } = msg
        else {
            return None;
        };
        Some(Order {
            manifest: Manifest {
                version: version.clone(),
                os: os.clone(),
                arch: arch.clone(),
                sha256: sha256.clone(),
                size: *size,
                signature: signature.clone(),
            },
            path: download_path(url),
            allow_downgrade: *allow_downgrade,
            deadline: Duration::from_secs((*deadline_s).clamp(1, 86_400)),
        })
    }
}

/// The path part of a download URL: the agent fetches it from its own hub (the one
/// it pinned), whatever host the hub advertised.
pub fn download_path(url: &str) -> String {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    match rest.find('/') {
        Some(i) if !url.starts_with('/') => rest[i..].to_owned(),
        _ if url.starts_with('/') => url.to_owned(),
        _ => String::new(),
    }
}

/// One report to the hub.
pub fn report(phase: UpdatePhase, version: &str, message: impl Into<String>) -> AgentMessage {
    AgentMessage::UpdateStatus {
        phase,
        version: version.to_owned(),
        message: message.into(),
    }
}

/// What the trial needs, and what `update-trial.json` holds while it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trial {
    pub version: String,
    pub previous_version: String,
    /// The binary that was replaced (and is restored on rollback).
    pub exe: PathBuf,
    /// Unix ms after which an unconfirmed trial has failed.
    pub deadline_ms: i64,
    pub state: TrialState,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    /// The new binary is in place; the hub has not yet seen it.
    Trial,
    /// The hub saw the new binary: it runs as the agent from now on.
    Confirmed,
    /// The previous binary was put back (`reason` says why).
    RolledBack,
}

pub(crate) fn previous_of(exe: &Path) -> PathBuf {
    let mut name = exe.file_name().unwrap_or_default().to_os_string();
    name.push(".previous");
    exe.with_file_name(name)
}

/// The binary to replace: this process's executable as it was started.
pub fn current_exe() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    // Linux names a replaced executable "<path> (deleted)".
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(p) => PathBuf::from(p),
        None => exe,
    })
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Check the order against this binary and its key, download, verify and swap the
/// binary in, sending each step through `reports`. `Ok(trial)` when the new binary
/// is installed and must now be tried; `Err(final report)` when the update ended
/// here (skipped, refused, failed) with nothing changed.
pub async fn prepare(
    order: &Order,
    creds: &Credentials,
    exe: &Path,
    reports: &tokio::sync::mpsc::UnboundedSender<AgentMessage>,
) -> Result<Trial, AgentMessage> {
    let m = &order.manifest;
    let v = m.version.as_str();
    let running = muster_release::running_version();
    let refuse = |why: String| report(UpdatePhase::Refused, v, why);
    if m.os != muster_release::this_os() || m.arch != muster_release::this_arch() {
        return Err(refuse(format!(
            "the release is for {}/{}, this agent runs on {}/{}",
            m.os,
            m.arch,
            muster_release::this_os(),
            muster_release::this_arch()
        )));
    }
    match muster_release::compare_versions(v, &running) {
        Ok(std::cmp::Ordering::Equal) => {
            return Err(report(
                UpdatePhase::Skipped,
                v,
                format!("already running {running}"),
            ));
        }
        Ok(std::cmp::Ordering::Less) if !order.allow_downgrade => {
            return Err(refuse(format!(
                "{v} is older than the running {running}: a downgrade needs --allow-downgrade"
            )));
        }
        Ok(_) => {}
        Err(e) => return Err(refuse(e.to_string())),
    }
    let key = muster_release::baked_key().map_err(|e| refuse(e.to_string()))?;
    key.verify(m).map_err(|e| refuse(e.to_string()))?;
    if !order.path.starts_with("/api/v1/agent/download/") {
        return Err(refuse(format!(
            "the download location {:?} is not this hub's release download",
            order.path
        )));
    }
    let _ = reports.send(report(UpdatePhase::Started, v, format!("from {running}")));

    let fail = |why: String| report(UpdatePhase::Failed, v, why);
    let dir = exe
        .parent()
        .ok_or_else(|| fail(format!("{} has no directory", exe.display())))?;
    let mut staged = tempfile_in(dir).map_err(|e| {
        fail(format!(
            "cannot write into {} (the binary's directory): {e}",
            dir.display()
        ))
    })?;
    let client = download_client(creds).map_err(|e| fail(e.to_string()))?;
    client
        .download(&order.path, &mut staged.file, m.size)
        .await
        .map_err(|e| fail(format!("download failed: {e}")))?;
    // The file must be exactly what was signed.
    key.verify_file(m, &staged.path)
        .map_err(|e| refuse(e.to_string()))?;
    let _ = reports.send(report(UpdatePhase::Verified, v, String::new()));

    std::fs::set_permissions(&staged.path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| fail(format!("cannot make the new binary executable: {e}")))?;
    install(exe, &staged.path).map_err(|e| fail(e.to_string()))?;
    staged.keep();
    let _ = reports.send(report(
        UpdatePhase::Installed,
        v,
        format!("replacing {running}"),
    ));
    Ok(Trial {
        version: m.version.clone(),
        previous_version: running,
        exe: exe.to_path_buf(),
        deadline_ms: now_ms() + order.deadline.as_millis() as i64,
        state: TrialState::Trial,
        reason: String::new(),
    })
}

/// A temporary file beside the binary (same filesystem, so the swap is a rename),
/// removed when dropped unless kept.
struct Staged {
    path: PathBuf,
    file: std::fs::File,
    kept: bool,
}

impl Staged {
    fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<Staged> {
    let path = dir.join(format!(
        ".muster-update{}{}",
        muster_files::TEMP_INFIX,
        rand::random::<u64>()
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok(Staged {
        path,
        file,
        kept: false,
    })
}

fn download_client(creds: &Credentials) -> Result<HubClient, muster_client::ClientError> {
    agent_client(creds, DOWNLOAD_TIMEOUT)
}

/// A client calling the hub as this agent (client certificate and agent key): its
/// preferred hub, the one its session runs on (an update order names a path there).
pub fn agent_client(
    creds: &Credentials,
    timeout: Duration,
) -> Result<HubClient, muster_client::ClientError> {
    creds.client(None, &creds.config.hub_url, timeout, true)
}

/// Keep the running binary as `<exe>.previous` and rename `new` over `<exe>`.
fn install(exe: &Path, new: &Path) -> Result<(), String> {
    let previous = previous_of(exe);
    let _ = std::fs::remove_file(&previous);
    if std::fs::hard_link(exe, &previous).is_err() {
        std::fs::copy(exe, &previous).map_err(|e| {
            format!(
                "cannot keep the previous binary as {}: {e}",
                previous.display()
            )
        })?;
    }
    std::fs::rename(new, exe)
        .map_err(|e| format!("cannot put the new binary at {}: {e}", exe.display()))?;
    if let Some(dir) = exe.parent() {
        let _ = muster_files::sync_dir(dir);
    }
    Ok(())
}

/// Put `<exe>.previous` back at `<exe>` (one rename); nothing to do without one.
pub(crate) fn restore(exe: &Path) -> Result<(), String> {
    let previous = previous_of(exe);
    if !previous.exists() {
        return Ok(());
    }
    std::fs::rename(&previous, exe)
        .map_err(|e| format!("cannot restore {}: {e}", previous.display()))?;
    if let Some(dir) = exe.parent() {
        let _ = muster_files::sync_dir(dir);
    }
    Ok(())
}

/// This process's arguments, for the trial child and the final exec.
fn own_args() -> Vec<std::ffi::OsString> {
    std::env::args_os().skip(1).collect()
}

/// How a trial that did not become the new binary ended.
pub enum TrialEnd {
    /// The previous binary is back; send this report once reconnected.
    RolledBack(Box<AgentMessage>),
    /// Our shutdown signal came first: the previous binary is back, and the next
    /// start reports the rollback (the trial file says so).
    Stopped,
}

/// Run the new binary as a child until the hub reports this agent online with the
/// new version, then become it (exec, same PID: a service manager keeps tracking
/// it). Returns only when the trial failed or the agent is stopping; either way the
/// previous binary is back.
pub async fn run_trial(
    dir: &ConfigDir,
    creds: &Credentials,
    trial: Trial,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> TrialEnd {
    let judged = tokio::select! {
        end = judge(dir, creds, trial.clone()) => return TrialEnd::RolledBack(Box::new(end)),
        _ = shutdown => trial,
    };
    // `judge` was dropped mid-way: its child was killed with it (`TrialChild`).
    let report = roll_back(
        dir,
        &judged,
        None,
        "the agent was stopped during the trial".to_owned(),
    );
    if let AgentMessage::UpdateStatus { message, .. } = report {
        let _ = dir.store_update_trial(&Trial {
            state: TrialState::RolledBack,
            reason: message,
            ..judged
        });
    }
    TrialEnd::Stopped
}

/// Kills the trial child when dropped, however the trial ends.
struct TrialChild(Option<Child>);

impl TrialChild {
    fn take(&mut self) -> Option<Child> {
        self.0.take()
    }
}

impl Drop for TrialChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn judge(dir: &ConfigDir, creds: &Credentials, mut trial: Trial) -> AgentMessage {
    let v = trial.version.clone();
    if let Err(e) = dir.store_update_trial(&trial) {
        return roll_back(dir, &trial, None, format!("cannot record the trial: {e}"));
    }
    let child = Command::new(&trial.exe)
        .args(own_args())
        .env(TRIAL_ENV, "1")
        .stdin(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => TrialChild(Some(c)),
        Err(e) => {
            return roll_back(
                dir,
                &trial,
                None,
                format!("the new binary does not start: {e}"),
            );
        }
    };
    let client = match agent_client(creds, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => return roll_back(dir, &trial, child.take(), e.to_string()),
    };
    tracing::info!(version = %v, "trying the new binary");
    loop {
        if now_ms() > trial.deadline_ms {
            let why = format!(
                "the new binary did not reach the hub within the deadline; restored {}",
                trial.previous_version
            );
            return roll_back(dir, &trial, child.take(), why);
        }
        let exited = child.0.as_mut().and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            let why = format!(
                "the new binary exited ({status}) before reaching the hub; restored {}",
                trial.previous_version
            );
            return roll_back(dir, &trial, None, why);
        }
        if let Ok(me) = client.agent_me().await
            && matches!(me.status, AgentStatus::Online | AgentStatus::Degraded)
            && me.agent_version == v
        {
            break;
        }
        tokio::time::sleep(TRIAL_POLL).await;
    }
    trial.state = TrialState::Confirmed;
    if let Err(e) = dir.store_update_trial(&trial) {
        return roll_back(
            dir,
            &trial,
            child.take(),
            format!("cannot record the trial: {e}"),
        );
    }
    drop(child);
    tracing::info!(version = %v, "the new binary reached the hub; running it");
    let err = exec_self(&trial.exe);
    // Still here: the exec failed, and the binary on disk is the new one.
    trial.state = TrialState::Trial;
    roll_back(
        dir,
        &trial,
        None,
        format!("cannot run the new binary: {err}"),
    )
}

fn exec_self(exe: &Path) -> std::io::Error {
    use std::os::unix::process::CommandExt as _;
    Command::new(exe)
        .args(own_args())
        .env_remove(TRIAL_ENV)
        .exec()
}

/// Stop the trial child, put the previous binary back and forget the trial.
fn roll_back(dir: &ConfigDir, trial: &Trial, child: Option<Child>, why: String) -> AgentMessage {
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
    let why = match restore(&trial.exe) {
        Ok(()) => why,
        Err(e) => format!("{why}; {e}"),
    };
    tracing::warn!(version = %trial.version, reason = %why, "update rolled back");
    let _ = dir.clear_update_trial();
    report(UpdatePhase::RolledBack, &trial.version, why)
}

/// At start: finish what a trial left in the config dir. A confirmed trial whose
/// binary now runs reports `completed`; an unconfirmed one (the agent stopped
/// mid-trial, say the machine rebooted) is rolled back before anything runs, and
/// when this process is the new binary it execs the restored one. Returns the
/// reports to send once connected.
pub fn recover(dir: &ConfigDir) -> Vec<AgentMessage> {
    if std::env::var_os(TRIAL_ENV).is_some() {
        return Vec::new();
    }
    let trial: Trial = match dir.load_update_trial() {
        Ok(Some(t)) => t,
        Ok(None) => return Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable update trial record; discarding it");
            let _ = dir.clear_update_trial();
            return Vec::new();
        }
    };
    let running = muster_release::running_version();
    let v = trial.version.clone();
    match trial.state {
        TrialState::Confirmed => {
            let _ = dir.clear_update_trial();
            if running == v {
                vec![report(
                    UpdatePhase::Completed,
                    &v,
                    format!("now running {v}"),
                )]
            } else {
                vec![report(
                    UpdatePhase::Failed,
                    &v,
                    format!("after the trial this agent runs {running}, not {v}"),
                )]
            }
        }
        TrialState::RolledBack => {
            let _ = dir.clear_update_trial();
            vec![report(UpdatePhase::RolledBack, &v, trial.reason)]
        }
        TrialState::Trial => {
            let why = format!(
                "the agent stopped during the trial of {v} before the hub saw it; restored {}",
                trial.previous_version
            );
            let restored = restore(&trial.exe);
            if running == v {
                // We are the unconfirmed binary: hand over to the restored one,
                // which reports the rollback.
                let done = Trial {
                    state: TrialState::RolledBack,
                    reason: why.clone(),
                    ..trial.clone()
                };
                if restored.is_ok() && dir.store_update_trial(&done).is_ok() {
                    let err = exec_self(&trial.exe);
                    tracing::warn!(error = %err, "cannot run the restored binary");
                }
            }
            let _ = dir.clear_update_trial();
            let why = match restored {
                Ok(()) => why,
                Err(e) => format!("{why}; {e}"),
            };
            vec![report(UpdatePhase::RolledBack, &v, why)]
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn the_download_path_is_taken_from_the_url() {
        assert_eq!(
            download_path("https://hub.example:8443/api/v1/agent/download/1.0.0/linux/x86_64"),
            "/api/v1/agent/download/1.0.0/linux/x86_64"
        );
        assert_eq!(download_path("/api/v1/x"), "/api/v1/x");
        assert_eq!(download_path("https://hub.example"), "");
    }

    #[test]
    fn install_keeps_the_previous_binary_and_restore_puts_it_back() {
        let tmp = tempfile::tempdir().unwrap();
        let exe = tmp.path().join("muster");
        let new = tmp.path().join("new");
        std::fs::write(&exe, b"old").unwrap();
        std::fs::write(&new, b"new").unwrap();
        install(&exe, &new).unwrap();
        assert_eq!(std::fs::read(&exe).unwrap(), b"new");
        assert_eq!(std::fs::read(previous_of(&exe)).unwrap(), b"old");
        restore(&exe).unwrap();
        assert_eq!(std::fs::read(&exe).unwrap(), b"old");
        assert!(!previous_of(&exe).exists());
    }

    fn trial(exe: &Path, version: &str, state: TrialState) -> Trial {
        Trial {
            version: version.to_owned(),
            previous_version: "0.0.1".to_owned(),
            exe: exe.to_path_buf(),
            deadline_ms: 0,
            state,
            reason: String::new(),
        }
    }

    fn phase(m: &AgentMessage) -> UpdatePhase {
        match m {
            AgentMessage::UpdateStatus { phase, .. } => *phase,
            other => panic!("not a report: {other:?}"),
        }
    }

    #[test]
    fn an_interrupted_trial_is_rolled_back_at_start() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ConfigDir::new(tmp.path().join("config"));
        let exe = tmp.path().join("muster");
        std::fs::write(&exe, b"new").unwrap();
        std::fs::write(previous_of(&exe), b"old").unwrap();
        // Not the running version: this process is not the binary on trial.
        dir.store_update_trial(&trial(&exe, "99.0.0", TrialState::Trial))
            .unwrap();
        let reports = recover(&dir);
        assert_eq!(reports.len(), 1);
        assert_eq!(phase(&reports[0]), UpdatePhase::RolledBack);
        assert_eq!(std::fs::read(&exe).unwrap(), b"old");
        assert!(dir.load_update_trial::<Trial>().unwrap().is_none());
        assert!(recover(&dir).is_empty(), "reported once");
    }

    #[test]
    fn a_confirmed_trial_reports_completed_once_the_new_version_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ConfigDir::new(tmp.path().join("config"));
        let exe = tmp.path().join("muster");
        std::fs::write(&exe, b"new").unwrap();
        let running = muster_release::running_version();
        dir.store_update_trial(&trial(&exe, &running, TrialState::Confirmed))
            .unwrap();
        let reports = recover(&dir);
        assert_eq!(phase(&reports[0]), UpdatePhase::Completed);
        assert_eq!(std::fs::read(&exe).unwrap(), b"new");
        // Confirmed, yet another version runs: the update failed.
        dir.store_update_trial(&trial(&exe, "99.0.0", TrialState::Confirmed))
            .unwrap();
        assert_eq!(phase(&recover(&dir)[0]), UpdatePhase::Failed);
    }
}
