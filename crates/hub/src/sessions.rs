//! Live agent sessions (SPEC §9): the task that runs one WebSocket, the follower that
//! closes sessions whose credentials another hub ended, and the batched `last_seen`
//! flush, and each session's row in the agent's session history (one write when it
//! opens, one when it closes). The registry they share is `registry.rs`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use muster_proto::{AgentMessage, HostFacts, HubMessage, PROTOCOL_VERSION, PackInfo};
use muster_store::{AgentFacts, AgentRecord};
use tokio::sync::mpsc;

use crate::auth::flush_key_use;
use crate::clock::{now_ms, rfc3339};
use crate::clones::mark_cloned;
use crate::events::{AgentNote, Change};
use crate::registry::{Control, register};
use crate::state::AppState;
use crate::validate::{check_facts, check_text};

async fn send(socket: &mut WebSocket, msg: &HubMessage) -> bool {
    match serde_json::to_string(msg) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

/// Run one accepted session until it ends.
///
/// A session's future lives as long as the session, in the task of every connected
/// agent: opening and closing (large, rare, with their database calls) run boxed, so
/// what waits in the loop is the loop alone (3.6 KiB inline before, 1.8 KiB after).
pub async fn run(state: Arc<AppState>, agent: Box<AgentRecord>, peer: IpAddr, socket: WebSocket) {
    let Some(mut open) = Box::pin(open(state, agent, peer, socket)).await else {
        return;
    };
    let reason = open.serve().await;
    Box::pin(open.close(reason)).await;
}

/// A session past its `hello` and `welcome`: what its loop needs.
struct Open {
    state: Arc<AppState>,
    agent: Box<AgentRecord>,
    peer: IpAddr,
    socket: WebSocket,
    mailbox: Arc<crate::registry::Mailbox>,
    registration: crate::registry::Registration,
    /// The id of its session history row (and presence session).
    history: String,
    running_version: String,
}

/// Hello, checks, facts, registration, welcome: `None` when the session ends there.
async fn open(
    state: Arc<AppState>,
    agent: Box<AgentRecord>,
    peer: IpAddr,
    mut socket: WebSocket,
) -> Option<Open> {
    let interval = state.heartbeat_interval;
    let hello = match tokio::time::timeout(Duration::from_secs(10), socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<AgentMessage>(t.as_str()).ok(),
        _ => None,
    };
    let Some(AgentMessage::Hello {
        protocol_version,
        generation,
        agent_version,
        packs,
        facts,
        catalog,
        ..
    }) = hello
    else {
        tracing::info!(agent_id = %agent.id, %peer, "session closed: no hello");
        return None;
    };
    if protocol_version != PROTOCOL_VERSION {
        let _ = send(
            &mut socket,
            &HubMessage::Refused {
                code: "protocol_version".to_owned(),
                message: format!(
                    "this hub speaks protocol {PROTOCOL_VERSION}, the agent {protocol_version}: upgrade the agent"
                ),
            },
        )
        .await;
        let _ = socket.send(Message::Close(None)).await;
        return None;
    }

    if generation != agent.generation {
        let refusal = mark_cloned(&state, &agent, peer, generation, "session").await;
        let _ = send(
            &mut socket,
            &HubMessage::Refused {
                code: refusal.code.to_owned(),
                message: refusal.message,
            },
        )
        .await;
        let _ = socket.send(Message::Close(None)).await;
        return None;
    }

    let running_version: String = agent_version.chars().take(64).collect();
    // Facts are refreshed at every session start (SPEC §8), when they changed.
    if let Some(f) = facts {
        match refreshed_facts(&agent.facts, agent_version, packs, f) {
            None => {
                tracing::info!(agent_id = %agent.id, "refreshed facts refused: not printable or malformed");
            }
            Some(fresh) if fresh != agent.facts => {
                if let Err(e) = state.store.update_facts(&agent.id, &fresh, now_ms()).await {
                    tracing::warn!(agent_id = %agent.id, error = %e, "could not store refreshed facts");
                }
            }
            Some(_) => {}
        }
    }

    store_catalog(&state, &agent.id, catalog).await;

    let mailbox = Arc::new(crate::registry::Mailbox::default());
    let registration = register(&state.sessions, &agent, mailbox.clone());
    // The agent was read when the connection was upgraded; a revocation or a
    // replacing enrollment committed since then found no session to close. Now that
    // this one is registered, later ones will find it; this catches the ones before.
    match still_valid(&state, &agent.id, &agent.key_hash).await {
        Ok(true) => {}
        Ok(false) => {
            state
                .sessions
                .kick_conn(&agent.id, registration.conn, CREDENTIALS_ENDED);
        }
        Err(e) => {
            tracing::warn!(agent_id = %agent.id, error = %e, "could not re-check a new session's agent")
        }
    }
    tracing::info!(agent_id = %agent.id, %peer, "session open");
    let mut note = AgentNote::new(&agent, state.sessions.status_of(&agent), Change::Status);
    note.agent_version.clone_from(&running_version);
    note.last_seen_at = Some(rfc3339(now_ms()));
    state.events.publish(note);
    let history = open_history(&state, &agent.id, peer);
    crate::lease::connected(&state, &agent.id, &history);
    let welcome = HubMessage::Welcome {
        agent_id: agent.id.clone(),
        heartbeat_interval_s: interval.as_secs().max(1),
        hub_time_ms: now_ms(),
    };
    if !send(&mut socket, &welcome).await {
        end_session(&state, registration, &agent.id, history, "send failed").await;
        return None;
    }
    Some(Open {
        state,
        agent,
        peer,
        socket,
        mailbox,
        registration,
        history,
        running_version,
    })
}

impl Open {
    /// Heartbeats, update reports and the hub's messages until the session ends;
    /// why it ended.
    async fn serve(&mut self) -> &'static str {
        let Open {
            state,
            agent,
            peer,
            socket,
            mailbox,
            registration,
            history,
            running_version,
        } = self;
        let (state, agent, peer) = (&**state, &**agent, *peer);
        let interval = state.heartbeat_interval;
        // Heartbeats may stop without a close (a frozen or cut-off agent): 2.5 intervals
        // of silence end the session.
        let silence = interval.mul_f64(2.5);
        let deadline = tokio::time::sleep(silence);
        tokio::pin!(deadline);
        let mut beats: u64 = 0;
        // Each report is a write and an audit entry: a session gets a bounded number.
        let mut update_reports: u32 = 0;
        loop {
            tokio::select! {
                _ = &mut deadline => break "heartbeats stopped",
                frame = socket.recv() => match frame {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break "closed by the agent",
                    Some(Ok(Message::Text(t))) => match AgentMessage::from_json(t.as_str()) {
                        Ok(AgentMessage::Heartbeat { status, problems }) => {
                            deadline.as_mut().reset(tokio::time::Instant::now() + silence);
                            let problems = heartbeat_problems(problems);
                            if state.sessions.heartbeat(&agent.id, registration.conn, status, problems.clone()) {
                                crate::lease::health(state, &agent.id, history, status, problems);
                                let mut note = AgentNote::new(agent, state.sessions.status_of(agent), Change::Status);
                                note.agent_version.clone_from(running_version);
                                note.last_seen_at = Some(rfc3339(now_ms()));
                                state.events.publish(note);
                            }
                            if beats.is_multiple_of(muster_proto::ACK_EVERY)
                                && !send(socket, &HubMessage::Ack { hub_time_ms: now_ms() }).await
                            {
                                break "send failed";
                            }
                            beats += 1;
                        }
                        Ok(AgentMessage::Hello { .. }) => {}
                        Ok(AgentMessage::ProbeResult { id, outcome, result, error, truncated }) => {
                            // A late answer, or one to another agent's call, finds nothing.
                            let error = error.map(|e| e.chars().take(500).collect());
                            state.calls.complete(&agent.id, id, crate::calls::Reply { outcome, result, error, truncated });
                        }
                        Ok(AgentMessage::UpdateStatus { .. }) if update_reports >= MAX_UPDATE_REPORTS => {
                            tracing::info!(agent_id = %agent.id, "update report ignored: too many in one session");
                        }
                        Ok(AgentMessage::UpdateStatus { phase, version, message }) => {
                            update_reports += 1;
                            if let Err(e) = Box::pin(crate::updates::record_report(state, agent, running_version, peer, phase, &version, &message)).await {
                                tracing::info!(agent_id = %agent.id, error = %e.message, "update report not recorded");
                            }
                        }
                        Err(_) => break "unreadable frame",
                    },
                    Some(Ok(_)) => {}
                },
                control = mailbox.recv() => match control {
                    Control::Revoke(reason) => {
                        let _ = send(socket, &HubMessage::Revoked { reason }).await;
                        break "revoked";
                    }
                    Control::Shutdown { reconnect_within_ms } => {
                        let _ = send(socket, &HubMessage::Shutdown { reconnect_within_ms }).await;
                        break "hub shutting down";
                    }
                    Control::Send(msg) => {
                        if !send(socket, &msg).await {
                            break "send failed";
                        }
                    }
                    Control::Superseded => break "superseded by a newer session",
                },
            }
        }
    }

    async fn close(self, reason: &'static str) {
        let Open {
            state,
            agent,
            peer,
            mut socket,
            registration,
            history,
            ..
        } = self;
        let _ =
            tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(None))).await;
        end_session(&state, registration, &agent.id, history, reason).await;
        tracing::info!(agent_id = %agent.id, %peer, reason, "session closed");
    }
}

/// Keep the packs an agent announced (SPEC §15), when they changed and pass the
/// checks: at most 16 packs of 64 probes, names and texts bounded and printable.
async fn store_catalog(state: &AppState, agent_id: &str, catalog: Vec<muster_proto::PackInfo>) {
    let valid = catalog_acceptable(&catalog);
    if !valid {
        tracing::info!(%agent_id, "announced packs refused: too many, too long or not printable");
        return;
    }
    match state.store.agent_catalog(agent_id).await {
        Ok(stored) if stored == catalog => {}
        _ => {
            if let Err(e) = state.store.set_agent_catalog(agent_id, &catalog).await {
                tracing::warn!(%agent_id, error = %e, "could not store the announced packs");
            }
        }
    }
}

/// The facts a `hello` brings, as the hub would store them over `stored` (SPEC §8),
/// or `None` when they would not pass enrollment: the stored ones then stay.
/// Labels are the hub's own and kept; lists are cut to enrollment's bounds. Pure,
/// so the fuzz harness runs the very check a session makes.
pub(crate) fn refreshed_facts(
    stored: &AgentFacts,
    agent_version: String,
    packs: Vec<String>,
    f: HostFacts,
) -> Option<AgentFacts> {
    let fresh = AgentFacts {
        hostname: f.hostname,
        ip: f.ip,
        os_info: f.os_info,
        arch: f.arch,
        agent_version,
        labels: stored.labels.clone(),
        packs: packs.into_iter().take(64).collect(),
        interfaces: f.interfaces.into_iter().take(256).collect(),
    };
    // Packs are names like any other.
    let valid = check_text("hostname", &fresh.hostname, false).is_ok()
        && fresh
            .packs
            .iter()
            .all(|p| check_text("pack", p, false).is_ok())
        && check_facts(
            &[
                ("os_info", &fresh.os_info),
                ("arch", &fresh.arch),
                ("agent_version", &fresh.agent_version),
            ],
            &fresh.ip,
            &fresh.interfaces,
        )
        .is_ok();
    valid.then_some(fresh)
}

/// Whether the packs an agent announced may be kept (SPEC §15): at most 16 packs of
/// 64 probes, names and texts bounded and printable.
pub(crate) fn catalog_acceptable(catalog: &[PackInfo]) -> bool {
    let printable = |s: &str, max: usize| s.len() <= max && !s.chars().any(char::is_control);
    catalog.len() <= 16
        && catalog.iter().all(|p| {
            check_text("pack", &p.name, false).is_ok()
                && printable(&p.version, 64)
                && p.needs.len() <= 16
                && p.needs.iter().all(|n| check_text("need", n, false).is_ok())
                && p.reason.as_deref().is_none_or(|r| printable(r, 500))
                && p.probes.len() <= 64
                && p.probes.iter().all(|q| {
                    crate::probes::check_probe_name(&q.name).is_ok()
                        && printable(&q.description, 500)
                        && q.params.len() <= 16
                        && q.params.iter().all(|a| {
                            printable(&a.name, 64)
                                && printable(&a.description, 500)
                                && a.default.as_deref().is_none_or(|d| printable(d, 200))
                        })
                })
        })
}

/// The problems of a heartbeat as the hub keeps them: at most 16, each cut to 200
/// characters, so an agent cannot make the registry or the presence rows grow.
pub(crate) fn heartbeat_problems(problems: Vec<String>) -> Vec<String> {
    problems
        .into_iter()
        .take(16)
        .map(|p| p.chars().take(200).collect())
        .collect()
}

/// Session history rows kept per agent (the oldest beyond are deleted when a new
/// one opens).
pub const HISTORY_PER_AGENT: i64 = 50;
/// Session history older than this is deleted.
pub const HISTORY_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The reason written on rows a hub left open when it stopped without closing them.
const UNKNOWN_END: &str = "unknown end: the hub stopped without closing the session";

fn history_cutoff() -> i64 {
    now_ms() - HISTORY_MAX_AGE.as_millis() as i64
}

/// Queue the row of the session that just opened; its id.
fn open_history(state: &AppState, agent_id: &str, peer: IpAddr) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    state.history.push(muster_store::SessionWrite::Open(
        muster_store::SessionRecord {
            id: id.clone(),
            agent_id: agent_id.to_owned(),
            hub: state.hub_id.clone(),
            address: peer.to_string(),
            connected_at: now_ms(),
            disconnected_at: None,
            reason: None,
        },
    ));
    id
}

/// Commit queued session history writes, in batches of what queued up while the
/// previous batch was written, until `stop` (then what is queued, once more).
pub async fn history_loop(
    state: Arc<AppState>,
    mut queue: mpsc::Receiver<muster_store::SessionWrite>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    const BATCH: usize = 1_000;
    // Once told to stop, it stays stopping: the signal is seen once, and a stop
    // with more than a batch queued (a hub closing thousands of sessions) must
    // drain the rest, not wait for a write that will never come.
    let mut stopping = false;
    loop {
        let mut batch = Vec::new();
        if !stopping {
            tokio::select! {
                w = queue.recv() => match w {
                    Some(w) => batch.push(w),
                    None => return,
                },
                _ = stop.changed() => stopping = true,
            }
        }
        while batch.len() < BATCH
            && let Ok(w) = queue.try_recv()
        {
            batch.push(w);
        }
        if !batch.is_empty() {
            let keep = muster_store::SessionRetention {
                per_agent: HISTORY_PER_AGENT,
                not_before: history_cutoff(),
            };
            if let Err(e) = state.store.record_sessions(&batch, keep).await {
                tracing::warn!(error = %e, writes = batch.len(), "could not write the session history; these entries are lost");
            }
        }
        if stopping && queue.is_empty() {
            return;
        }
    }
}

/// The session is over: out of the registry, watchers told (when it was the
/// agent's live session here), its history row closed.
async fn end_session(
    state: &AppState,
    registration: crate::registry::Registration,
    agent_id: &str,
    history: String,
    reason: &str,
) {
    let went_offline = registration.end();
    if went_offline && state.events.watchers() > 0 {
        // Read again: a revocation or clone lock may be why it ended.
        match state.store.get_agent(agent_id).await {
            Ok(Some(a)) => state.events.publish(AgentNote::new(
                &a,
                state.sessions.status_of(&a),
                Change::Status,
            )),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(agent_id, error = %e, "could not read an agent whose session ended")
            }
        }
    }
    crate::lease::disconnected(state, agent_id, &history);
    state.history.push(muster_store::SessionWrite::Close {
        id: history,
        at: now_ms(),
        reason: reason.to_owned(),
    });
}

/// At start: close the history rows this hub left open (it stopped without closing
/// them), and drop history past its age.
pub async fn tidy_history(state: &AppState) {
    match state
        .store
        .close_open_sessions(&state.hub_id, UNKNOWN_END)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            sessions = n,
            "closed session history rows left open by an earlier run"
        ),
        Err(e) => tracing::warn!(error = %e, "could not close session history rows left open"),
    }
    prune_history(state).await;
}

async fn prune_history(state: &AppState) {
    if let Err(e) = state.store.prune_sessions(history_cutoff()).await {
        tracing::warn!(error = %e, "could not prune the session history");
    }
}

/// Write gathered `last_seen` times every `every` until `stop`; once more at the end.
/// Close the sessions this hub holds whose credentials another hub (or this one)
/// ended or replaced, as the store reports them (PostgreSQL shared by several hubs).
pub async fn follow_changes(
    state: Arc<AppState>,
    mut changes: mpsc::Receiver<muster_store::AgentChange>,
) {
    while let Some(change) = changes.recv().await {
        let ids = match change {
            muster_store::AgentChange::Changed(id) => vec![id],
            muster_store::AgentChange::Missed => state.sessions.held(),
        };
        for id in ids {
            let Some((conn, key_hash)) = state.sessions.session_of(&id) else {
                continue;
            };
            match still_valid(&state, &id, &key_hash).await {
                Ok(true) => {}
                Ok(false) => {
                    if state.sessions.kick_conn(&id, conn, CREDENTIALS_ENDED) {
                        tracing::info!(agent_id = %id, "session closed: credentials ended on another hub");
                    }
                }
                Err(e) => {
                    tracing::warn!(agent_id = %id, error = %e, "could not re-check a session's agent");
                }
            }
        }
    }
}

/// Update reports one session may make (an update makes at most five; a few
/// updates in one long session stay well inside).
const MAX_UPDATE_REPORTS: u32 = 100;

const CREDENTIALS_ENDED: &str = "the agent's credentials were revoked or replaced";

/// Whether the session accepted with `key_hash` still holds live credentials.
async fn still_valid(
    state: &AppState,
    agent_id: &str,
    key_hash: &Option<String>,
) -> muster_store::Result<bool> {
    Ok(match state.store.get_agent(agent_id).await? {
        Some(a) => {
            a.state == muster_store::AgentState::Active
                && a.cloned_at.is_none()
                && &a.key_hash == key_hash
        }
        None => false,
    })
}

pub async fn flush_loop(
    state: Arc<AppState>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {
                flush(&state).await;
                return;
            }
        }
        flush(&state).await;
        if last_prune.elapsed() >= Duration::from_secs(3600) {
            last_prune = tokio::time::Instant::now();
            prune_history(&state).await;
        }
    }
}

pub async fn flush(state: &AppState) {
    flush_key_use(state).await;
    let batch = state.sessions.take_seen();
    if batch.is_empty() {
        return;
    }
    match state.store.record_last_seen(&batch).await {
        Ok(()) => {
            state.sessions.flushes.fetch_add(1, Ordering::Relaxed);
            state
                .sessions
                .flushed_rows
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(error = %e, rows = batch.len(), "could not write last_seen; will retry");
            state.sessions.restore_seen(batch);
        }
    }
}
