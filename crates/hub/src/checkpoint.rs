//! Signed checkpoints of the audit chain's head (SPEC §11), kept outside the
//! database, so that cutting off the newest entries cannot go unnoticed.
//!
//! The chain proves every entry up to the newest one it holds; it cannot prove that
//! nothing came after. So every [`Config::every`] (when the head moved) and at
//! shutdown the hub writes the head's position and hash, signed with a key derived
//! from the hub secret, to `<data-dir>/audit-checkpoint.json`, to syslog, and to an
//! optional webhook. `POST /api/v1/audit/verify` with a checkpoint then tells
//! whether the chain still reaches it unchanged.
//!
//! Invariant: a hub never overwrites a checkpoint its database no longer reaches
//! (the chain was cut or rewritten behind it while the hub was down): it keeps the
//! file, the evidence, and says so in its log at every round.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use muster_proto::AuditCheckpoint;

use crate::clock::{now_ms, rfc3339};
use crate::secrets::Keys;
use crate::state::AppState;

/// The checkpoint file's name in the data dir.
pub const FILE: &str = "audit-checkpoint.json";

/// Where and how often checkpoints go.
#[derive(Debug, Clone)]
pub struct Config {
    /// `<data-dir>/audit-checkpoint.json`.
    pub file: PathBuf,
    /// `--audit-checkpoint-every`: how often the head is looked at.
    pub every: Duration,
    /// `--audit-syslog`: the syslog socket (`/dev/log`); `None`: off. A socket
    /// that is not there is skipped quietly (containers often have none).
    pub syslog: Option<PathBuf>,
    /// `--audit-webhook`: a URL each checkpoint is POSTed to as JSON.
    pub webhook: Option<String>,
}

/// `--audit-webhook` as given: `https://`, or `http://` on a loopback address.
pub fn check_webhook(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("--audit-webhook {url:?} is not a URL: {e}"))?;
    let loopback = parsed
        .host_str()
        .is_some_and(crate::integrations::is_loopback);
    match parsed.scheme() {
        "https" => Ok(url.to_owned()),
        "http" if loopback => Ok(url.to_owned()),
        _ => Err(format!(
            "--audit-webhook {url:?} must be an https:// URL (http:// only on a loopback address)"
        )),
    }
}

fn message(c: &AuditCheckpoint) -> String {
    format!(
        "muster audit checkpoint v{}\n{}\n{}\n{}\n{}",
        c.v, c.seq, c.hash, c.at, c.hub
    )
}

/// A checkpoint of the head `(seq, hash)`, made now by `hub`.
pub fn sign(keys: &Keys, hub: &str, seq: i64, hash: &str) -> AuditCheckpoint {
    let mut c = AuditCheckpoint {
        v: 1,
        seq,
        hash: hash.to_owned(),
        at: rfc3339(now_ms()),
        hub: hub.to_owned(),
        mac: String::new(),
    };
    c.mac = keys.checkpoint_mac(&message(&c));
    c
}

/// Whether `c` was signed under this hub secret, unchanged (constant-time).
pub fn authentic(keys: &Keys, c: &AuditCheckpoint) -> bool {
    use subtle::ConstantTimeEq as _;
    let want = keys.checkpoint_mac(&message(c));
    c.v == 1 && want.len() == c.mac.len() && bool::from(want.as_bytes().ct_eq(c.mac.as_bytes()))
}

/// What the chain says of checkpoint `c`: `None` when it still reaches it
/// unchanged, else why not.
pub async fn gap(state: &AppState, c: &AuditCheckpoint) -> muster_store::Result<Option<String>> {
    Ok(match state.store.audit_hash_at(c.seq).await? {
        Some(h) if h == c.hash => None,
        Some(_) => Some(format!(
            "entry {} differs from the checkpoint of {} (hub {}): the chain was rewritten",
            c.seq, c.at, c.hub
        )),
        None => {
            let head = state.store.audit_head().await?.map_or(0, |(seq, _)| seq);
            Some(format!(
                "entries were cut off: the chain ends at entry {head}, but the checkpoint of {} (hub {}) saw entry {}",
                c.at, c.hub, c.seq
            ))
        }
    })
}

/// Write a checkpoint every [`Config::every`] when the head moved, and a last one
/// when `stop` turns true.
pub async fn checkpoint_loop(
    state: Arc<AppState>,
    config: Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = read_file(&config).map(|c| (c.seq, c.hash));
    loop {
        round(&state, &config, &mut last).await;
        tokio::select! {
            _ = tokio::time::sleep(config.every) => {}
            _ = stop.changed() => {
                round(&state, &config, &mut last).await;
                return;
            }
        }
    }
}

fn read_file(config: &Config) -> Option<AuditCheckpoint> {
    let text = std::fs::read_to_string(&config.file).ok()?;
    serde_json::from_str(&text).ok()
}

/// One look at the head; a checkpoint when it moved since `last`.
async fn round(state: &AppState, config: &Config, last: &mut Option<(i64, String)>) {
    let head = match state.store.audit_head().await {
        Ok(Some(head)) => head,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "audit checkpoint: cannot read the chain's head");
            return;
        }
    };
    if last.as_ref() == Some(&head) {
        return;
    }
    // The file names an entry: the chain must still reach it before it is replaced.
    if let Some(old) = read_file(config) {
        match gap(state, &old).await {
            Ok(None) => {}
            Ok(Some(why)) => {
                tracing::error!(
                    file = %config.file.display(),
                    "audit chain does not reach the last checkpoint: {why}; the checkpoint file is kept as evidence (move it away to start a new one)"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit checkpoint: cannot read the chain");
                return;
            }
        }
    }
    let c = sign(&state.keys, &state.hub_id, head.0, &head.1);
    let json = match serde_json::to_string(&c) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(error = %e, "audit checkpoint: cannot encode");
            return;
        }
    };
    if let Err(e) = muster_files::write_atomic_path(
        &config.file,
        format!("{json}\n").as_bytes(),
        muster_files::PRIVATE,
    ) {
        tracing::warn!(file = %config.file.display(), error = %e, "audit checkpoint: cannot write the file");
        return;
    }
    *last = Some(head);
    if let Some(socket) = &config.syslog {
        to_syslog(socket, &json);
    }
    if let Some(url) = &config.webhook {
        to_webhook(state, url, &json).await;
    }
    tracing::debug!(seq = c.seq, "audit checkpoint written");
}

/// One datagram to the local syslog socket, facility authpriv, level info (RFC 3164
/// framing, as `logger` sends it). A socket that is not there is skipped quietly.
fn to_syslog(socket: &std::path::Path, json: &str) {
    if !socket.exists() {
        return;
    }
    // <86> = authpriv (10) * 8 + info (6).
    let line = format!(
        "<86>muster-hub[{}]: audit-checkpoint {json}",
        std::process::id()
    );
    let sent = std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.send_to(line.as_bytes(), socket));
    if let Err(e) = sent {
        tracing::warn!(socket = %socket.display(), error = %e, "audit checkpoint: syslog did not take it");
    }
}

async fn to_webhook(state: &AppState, url: &str, json: &str) {
    let sent = state
        .http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(json.to_owned())
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(
            status = r.status().as_u16(),
            "audit checkpoint: the webhook refused it"
        ),
        Err(e) => {
            tracing::warn!(error = %crate::outbound::describe(&e), "audit checkpoint: the webhook did not answer")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_unchanged_and_under_its_secret() {
        let keys = Keys::derive(b"0123456789abcdef0123").unwrap();
        let c = sign(&keys, "hub-1", 42, "ab12");
        assert!(authentic(&keys, &c));
        for changed in [
            AuditCheckpoint {
                seq: 41,
                ..c.clone()
            },
            AuditCheckpoint {
                hash: "ab13".into(),
                ..c.clone()
            },
            AuditCheckpoint {
                hub: "hub-2".into(),
                ..c.clone()
            },
            AuditCheckpoint {
                at: "2020-01-01T00:00:00Z".into(),
                ..c.clone()
            },
            AuditCheckpoint { v: 2, ..c.clone() },
        ] {
            assert!(!authentic(&keys, &changed), "{changed:?}");
        }
        let other = Keys::derive(b"another secret, not ours").unwrap();
        assert!(!authentic(&other, &c));
    }
}
