//! `system.service` and `system.journal`: ask `systemctl show` and `journalctl`,
//! read-only commands run directly (no shell) with a timeout, their output bounded.
//! The child is killed when the probe's own timeout drops it.

use std::io::ErrorKind;
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::probes::{Params, ProbeSources};

/// A command that takes longer is stopped (the probe's timeout may be shorter).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes of a command's output read at most; the rest is not waited for.
const OUTPUT_LIMIT: u64 = 1024 * 1024;

const NO_SYSTEMD: &str = "systemd is not available";

#[derive(Debug, Serialize)]
pub struct Service {
    pub unit: String,
    pub description: String,
    /// `loaded`, `not-found`, `masked`…
    pub load_state: String,
    /// `active`, `inactive`, `failed`…
    pub active_state: String,
    /// `running`, `dead`, `exited`…
    pub sub_state: String,
    /// Absent when the unit has no running main process.
    pub main_pid: Option<u32>,
}

pub async fn service(sources: ProbeSources, params: Params) -> Result<Service, String> {
    let unit = params.text("unit")?.to_owned();
    if !sources.systemd_booted.is_dir() {
        return Err(NO_SYSTEMD.to_owned());
    }
    let out = command(
        "systemctl",
        &[
            "show",
            "--property=ActiveState,SubState,LoadState,Description,MainPID",
            "--no-pager",
            "--",
            &unit,
        ],
    )
    .await
    .map_err(|e| match e {
        Failure::Missing => NO_SYSTEMD.to_owned(),
        other => other.to_string("systemctl"),
    })?;
    let get = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_default()
            .to_owned()
    };
    Ok(Service {
        description: get("Description"),
        load_state: get("LoadState"),
        active_state: get("ActiveState"),
        sub_state: get("SubState"),
        main_pid: get("MainPID").parse().ok().filter(|pid| *pid != 0),
        unit,
    })
}

#[derive(Debug, Serialize)]
pub struct Journal {
    pub unit: String,
    /// Oldest first, as `journalctl -o short-iso` prints them.
    pub lines: Vec<String>,
}

pub async fn journal(_sources: ProbeSources, params: Params) -> Result<Journal, String> {
    let unit = params.text("unit")?.to_owned();
    let lines = params.number("lines")?.to_string();
    let out = command(
        "journalctl",
        &["-u", &unit, "-n", &lines, "--no-pager", "-o", "short-iso"],
    )
    .await
    .map_err(|e| match e {
        Failure::Missing => "journalctl is not available".to_owned(),
        other => other.to_string("journalctl"),
    })?;
    Ok(Journal {
        unit,
        lines: out
            .lines()
            .filter(|l| *l != "-- No entries --")
            .map(str::to_owned)
            .collect(),
    })
}

enum Failure {
    /// The program is not installed.
    Missing,
    Other(String),
}

impl Failure {
    fn to_string(&self, program: &str) -> String {
        match self {
            Failure::Missing => format!("{program} is not available"),
            Failure::Other(why) => format!("{program}: {why}"),
        }
    }
}

/// Run `program args` (no shell, no stdin) and return its standard output, at most
/// [`OUTPUT_LIMIT`] bytes of it; a non-zero exit is a failure carrying the first
/// line of its standard error.
async fn command(program: &str, args: &[&str]) -> Result<String, Failure> {
    let mut child = Command::new(program)
        .args(args)
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_COLORS", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => Failure::Missing,
            _ => Failure::Other(e.to_string()),
        })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Failure::Other("no output pipe".to_owned()));
    };
    let run = async {
        // Each reader is dropped as soon as it is done: a child still writing past
        // the limit then gets a broken pipe instead of blocking forever.
        let read = |pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>, limit: u64| async move {
            let mut buf = Vec::new();
            pipe.take(limit).read_to_end(&mut buf).await.map(|_| buf)
        };
        let (out, err) = tokio::join!(
            read(Box::new(stdout), OUTPUT_LIMIT),
            read(Box::new(stderr), 16 * 1024)
        );
        let (out, err) = (
            out.map_err(|e| Failure::Other(e.to_string()))?,
            err.map_err(|e| Failure::Other(e.to_string()))?,
        );
        if out.len() as u64 >= OUTPUT_LIMIT {
            // The rest is not wanted: stop it rather than wait for it.
            let _ = child.start_kill();
        }
        let status = child
            .wait()
            .await
            .map_err(|e| Failure::Other(e.to_string()))?;
        if !status.success() && (out.len() as u64) < OUTPUT_LIMIT {
            let why = String::from_utf8_lossy(&err)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map_or_else(|| status.to_string(), str::to_owned);
            return Err(Failure::Other(why));
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Other(format!(
            "no answer within {} s",
            COMMAND_TIMEOUT.as_secs()
        ))),
    }
}
