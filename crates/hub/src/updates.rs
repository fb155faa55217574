//! Agent self-updates as the hub sees them (SPEC §10 "Updates"): which published
//! release an agent should run, whether it is outdated, the order sent over its
//! live session, and the steps it reports back, each stored on the agent and
//! audited as `agent.update.<phase>`.
//!
//! The hub never signs anything: it passes on the manifest that was signed offline,
//! and the agent checks it against the key baked into its own binary. Invariant:
//! only a signed release is ever offered, and every report an agent sends is
//! checked before it is stored (bounded, printable, a known phase).

use std::net::IpAddr;

use muster_proto::{HubMessage, UpdateOrder, UpdatePhase, UpdateRequest, codes};
use muster_release::Manifest;
use muster_store::{AgentRecord, AgentUpdate};

use crate::audit::{AuditExt, entry};
use crate::clock::{now_ms, rfc3339};
use crate::error::{ApiFailure, ApiResult};
use crate::state::AppState;
use crate::validate::check_text;

/// How long a new binary has to reach the hub when the admin does not say.
pub const DEFAULT_DEADLINE_S: u64 = 120;
/// Longest deadline an admin may give (a day).
const MAX_DEADLINE_S: u64 = 86_400;
/// Longest update message an agent may send, in bytes.
const MAX_MESSAGE_LEN: usize = 1024;

/// The release OS family of an agent. Agents report `os_info` as free text (the
/// `PRETTY_NAME` of os-release, "macOS 14.5", "Windows 11 Pro"…); the families
/// other than Linux name themselves in it. Anything else is taken to be the hub's
/// own family (in practice Linux: distributions name themselves, not the kernel).
/// A wrong guess is harmless: the agent refuses a release for another platform.
pub fn os_family(os_info: &str) -> &'static str {
    let s = os_info.to_ascii_lowercase();
    let known = [
        ("macos", "macos"),
        ("mac os", "macos"),
        ("darwin", "macos"),
        ("windows", "windows"),
        ("freebsd", "freebsd"),
        ("netbsd", "netbsd"),
        ("openbsd", "openbsd"),
        ("illumos", "illumos"),
        ("solaris", "illumos"),
        ("omnios", "illumos"),
        ("smartos", "illumos"),
        ("linux", "linux"),
    ];
    known
        .iter()
        .find(|(word, _)| s.contains(word))
        .map(|(_, os)| *os)
        .unwrap_or_else(muster_release::this_os)
}

/// The newest version published per platform, read once per platform: a page of
/// the fleet asks for many agents, mostly of a few platforms.
#[derive(Default)]
pub struct LatestReleases(std::collections::HashMap<(&'static str, String), Option<String>>);

impl LatestReleases {
    /// Whether the agent runs a version older than the newest release published for
    /// its platform, or than the hub itself when none is. Versions that do not parse
    /// are not called outdated (nothing to compare).
    pub fn outdated(&mut self, state: &AppState, a: &AgentRecord) -> bool {
        let os = os_family(&a.facts.os_info);
        let newest = self
            .0
            .entry((os, a.facts.arch.clone()))
            .or_insert_with(|| {
                state
                    .releases
                    .latest(os, &a.facts.arch)
                    .ok()
                    .flatten()
                    .map(|p| p.manifest.version)
            })
            .clone()
            .unwrap_or_else(muster_release::running_version);
        matches!(
            muster_release::compare_versions(&a.facts.agent_version, &newest),
            Ok(std::cmp::Ordering::Less)
        )
    }
}

/// The signed release `agent` should install: `version`, or the newest published
/// for its platform, with where to download it. 404 `no_release` when there is
/// none; 409 when it is unsigned.
fn offer(
    state: &AppState,
    agent: &AgentRecord,
    version: Option<&str>,
) -> ApiResult<(Manifest, String)> {
    let os = os_family(&agent.facts.os_info);
    let arch = agent.facts.arch.as_str();
    let platform = format!("{os}/{arch}");
    let found = match version {
        Some(v) => {
            check_text("version", v, false)?;
            muster_release::parse_version(v).map_err(|e| ApiFailure::bad_request(e.to_string()))?;
            state.releases.find(v, os, arch)
        }
        None => state.releases.latest(os, arch),
    };
    let release = match found {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Err(ApiFailure::not_found_code(
                codes::NO_RELEASE,
                match version {
                    Some(v) => format!("no release {v} is published for {platform}"),
                    None => format!("no release is published for {platform}"),
                },
            ));
        }
        // An unknown platform name (an agent reporting an odd arch) is no release.
        Err(muster_release::ReleaseError::Invalid { reason, .. }) => {
            return Err(ApiFailure::not_found_code(
                codes::NO_RELEASE,
                format!("no release can exist for {platform}: {reason}"),
            ));
        }
        Err(e) => return Err(ApiFailure::internal("reading the release directory", &e)),
    };
    let m = release.manifest;
    if m.signature.is_empty() {
        return Err(ApiFailure::conflict(
            codes::NO_RELEASE,
            format!(
                "release {} for {platform} is not signed: agents would refuse it",
                m.version
            ),
        ));
    }
    let url = format!(
        "{}/api/v1/agent/download/{}/{}/{}",
        state.hub_url.trim_end_matches('/'),
        m.version,
        m.os,
        m.arch
    );
    Ok((m, url))
}

/// Pick the release `req` asks for, send it over the agent's live session, and
/// record and audit the request (`agent.update.requested`).
pub async fn order(
    state: &AppState,
    audit: muster_store::AuditEntry,
    agent: &AgentRecord,
    req: &UpdateRequest,
) -> ApiResult<UpdateOrder> {
    if agent.state != muster_store::AgentState::Active || agent.cloned_at.is_some() {
        return Err(ApiFailure::conflict(
            codes::CONFLICT,
            format!("agent {:?} is not live: it cannot be updated", agent.name),
        ));
    }
    let deadline_s = req.deadline_s.unwrap_or(DEFAULT_DEADLINE_S);
    if deadline_s == 0 || deadline_s > MAX_DEADLINE_S {
        return Err(ApiFailure::bad_request(format!(
            "deadline_s must be between 1 and {MAX_DEADLINE_S}"
        )));
    }
    let (m, url) = offer(state, agent, req.version.as_deref())?;
    let platform = format!("{}/{}", m.os, m.arch);
    let message = HubMessage::Update {
        version: m.version.clone(),
        os: m.os.clone(),
        arch: m.arch.clone(),
        sha256: m.sha256.clone(),
        size: m.size,
        signature: m.signature.clone(),
        url,
        allow_downgrade: req.allow_downgrade,
        deadline_s,
    };
    let now = now_ms();
    let audit = audit.at(now).details(serde_json::json!({
        "name": agent.name,
        "from_version": agent.facts.agent_version,
        "version": m.version,
        "platform": platform,
        "allow_downgrade": req.allow_downgrade,
        "deadline_s": deadline_s,
    }));
    let step = AgentUpdate {
        phase: UpdatePhase::Requested.as_str().to_owned(),
        version: m.version.clone(),
        message: String::new(),
        at: now,
    };
    // Recorded before it is sent, so the agent's first report (which can come back
    // at once) is never overwritten by the request.
    let offline = || {
        ApiFailure::conflict(
            codes::AGENT_OFFLINE,
            format!(
                "agent {:?} is offline (no live session on this hub)",
                agent.name
            ),
        )
    };
    if state.sessions.session_of(&agent.id).is_none() {
        return Err(offline());
    }
    state.store.record_update(&agent.id, &step, &audit).await?;
    if !state.sessions.send(&agent.id, message) {
        return Err(offline());
    }
    Ok(UpdateOrder {
        agent_id: agent.id.clone(),
        name: agent.name.clone(),
        from_version: agent.facts.agent_version.clone(),
        version: m.version,
        os: m.os,
        arch: m.arch,
        requested_at: rfc3339(now),
    })
}

/// The audit action of a phase.
pub fn action(phase: UpdatePhase) -> String {
    format!("agent.update.{phase}")
}

/// Store and audit a step an agent reported (over its session, or `muster update`
/// over REST). A report that does not pass the checks is refused (400).
pub async fn record_report(
    state: &AppState,
    agent: &AgentRecord,
    running_version: &str,
    peer: IpAddr,
    phase: UpdatePhase,
    version: &str,
    message: &str,
) -> ApiResult<()> {
    if phase == UpdatePhase::Requested {
        return Err(ApiFailure::bad_request(
            "an agent cannot report the phase requested",
        ));
    }
    check_text("update version", version, false)?;
    if version.len() > 64 {
        return Err(ApiFailure::bad_request("update version is too long"));
    }
    let message = if message_ok(message) {
        message.to_owned()
    } else {
        "(the agent's message was not printable text of at most 1 KiB; dropped)".to_owned()
    };
    let now = now_ms();
    let actor = format!("agent:{}", agent.id);
    let outcome = match phase {
        UpdatePhase::Refused | UpdatePhase::RolledBack | UpdatePhase::Failed => "failed",
        _ => "ok",
    };
    let audit = entry(actor.clone(), action(phase), actor, peer)
        .at(now)
        .outcome(outcome)
        .details(serde_json::json!({
            "name": agent.name,
            "running_version": running_version,
            "version": version,
            "reason": message,
        }));
    let step = AgentUpdate {
        phase: phase.as_str().to_owned(),
        version: version.to_owned(),
        message,
        at: now,
    };
    state.store.record_update(&agent.id, &step, &audit).await?;
    Ok(())
}

fn message_ok(m: &str) -> bool {
    m.len() <= MAX_MESSAGE_LEN
        && !m.chars().any(char::is_control)
        && !m.chars().any(muster_proto::is_invisible)
}

/// The stored update step, for the wire.
pub fn info(u: &AgentUpdate) -> Option<muster_proto::UpdateInfo> {
    Some(muster_proto::UpdateInfo {
        phase: UpdatePhase::parse(&u.phase)?,
        version: u.version.clone(),
        message: u.message.clone(),
        at: rfc3339(u.at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_families_from_free_text() {
        assert_eq!(os_family("macOS 14.5"), "macos");
        assert_eq!(os_family("Windows 11 Pro"), "windows");
        assert_eq!(os_family("FreeBSD 14.1-RELEASE"), "freebsd");
        assert_eq!(os_family("OmniOS v11 r151050"), "illumos");
        assert_eq!(os_family("Debian GNU/Linux 12 (bookworm)"), "linux");
        assert_eq!(os_family("Ubuntu 24.04 LTS"), muster_release::this_os());
    }

    #[test]
    fn messages_are_bounded_printable_text() {
        assert!(message_ok("the release signature does not verify"));
        assert!(!message_ok("two\nlines"));
        assert!(!message_ok("evil\u{202E}txt"));
        assert!(!message_ok(&"x".repeat(MAX_MESSAGE_LEN + 1)));
    }
}
