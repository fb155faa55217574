//! One fleet across the hubs sharing a database (SPEC §12): this hub's lease, its
//! sessions' presence rows, and the view of the sessions every other hub holds.
//!
//! Every [`TICK`] the loop writes the presence changes queued since the last
//! (batched: a reconnect storm is a few transactions of [`WRITE_CHUNK`]), reads the
//! other hubs' leases, and reads the presence rows changed since it last looked (and
//! every row now and then, to repair any it missed); the lease is renewed by a loop
//! of its own. So every hub shows an agent that connected anywhere within about two
//! ticks, and an agent whose hub died offline once that hub's lease runs out. What
//! changed is told to the live watchers like a change on this hub.
//!
//! Costs: a handful of rows per tick in quiet times; per connect, one row written
//! once and read once by each other hub. Nothing here reads the whole fleet, but the
//! first read at start.

use std::sync::Arc;
use std::time::Duration;

use muster_store::{HubLease, PresenceWrite};

use crate::clock::now_ms;
use crate::events::{AgentNote, Change};
use crate::state::AppState;

/// How often presence is written and read, and leases are read.
pub const TICK: Duration = Duration::from_millis(500);
/// Presence writes per transaction: each commits quickly, so a row is visible soon
/// after it is stamped, even in a reconnect storm on a busy database.
const WRITE_CHUNK: usize = 500;
/// Every so often a hub reads every presence row again: whatever a follower missed
/// (a commit later than [`OVERLAP_MS`] after its stamp, a clock far off) is repaired.
const FULL_READ_EVERY: Duration = Duration::from_secs(60);
/// Presence rows read per query.
const PAGE: i64 = 5_000;
/// Rows written late by another hub's flush (it stamps them before it commits)
/// are caught by reading again from this far behind the start of the last read.
const OVERLAP_MS: i64 = 5_000;
/// A dead hub's rows are closed by whichever live hub notices first, once its lease
/// ran out this many lease periods ago (a hub that merely restarts does it itself).
const REAP_AFTER_LEASES: u32 = 1;
/// Hubs whose lease ran out this long ago leave the hubs list.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Agents told to watchers per tick at most; beyond, watchers are told to reload
/// instead (a hub dying with 19,000 agents would otherwise mean 19,000 reads).
const NOTES_MAX: usize = 2_000;

/// Record a session opening on this hub.
pub fn connected(state: &AppState, agent_id: &str, session: &str) {
    state.presence.push(PresenceWrite::Connected {
        agent_id: agent_id.to_owned(),
        hub: state.hub_id.clone(),
        session: session.to_owned(),
        health: muster_proto::AgentHealth::Ok,
        problems: Vec::new(),
        at: now_ms(),
    });
}

/// Record a session's health changing.
pub fn health(
    state: &AppState,
    agent_id: &str,
    session: &str,
    health: muster_proto::AgentHealth,
    problems: Vec<String>,
) {
    state.presence.push(PresenceWrite::Health {
        agent_id: agent_id.to_owned(),
        session: session.to_owned(),
        health,
        problems,
        at: now_ms(),
    });
}

/// Record a session ending.
pub fn disconnected(state: &AppState, agent_id: &str, session: &str) {
    state.presence.push(PresenceWrite::Disconnected {
        agent_id: agent_id.to_owned(),
        session: session.to_owned(),
        at: now_ms(),
    });
}

/// Where this hub is in following the other hubs' presence rows: every row changed
/// before `safe` (unix ms) has been read.
struct Follower {
    safe: i64,
}

/// At start: a crashed earlier run of this hub left its sessions marked connected.
pub async fn tidy(state: &AppState) {
    match state.store.end_hub_presence(&state.hub_id, now_ms()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            sessions = n,
            "marked sessions left connected by an earlier run disconnected"
        ),
        Err(e) => tracing::warn!(error = %e, "could not close presence left by an earlier run"),
    }
}

pub async fn lease_loop(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut follower = Follower { safe: i64::MIN };
    let mut full_read = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        flush(&state).await;
        if let Err(e) = read_leases(&state).await {
            tracing::warn!(error = %e, "could not read the other hubs' leases");
        }
        if full_read.elapsed() >= FULL_READ_EVERY {
            full_read = tokio::time::Instant::now();
            follower.safe = i64::MIN;
        }
        if let Err(e) = follow(&state, &mut follower).await {
            tracing::warn!(error = %e, "could not read the other hubs' sessions");
        }
    }
    // Stopping: the sessions ended already (their closes are queued): write them.
    flush(&state).await;
}

/// Renew this hub's lease every quarter lease, and sooner when its session counts
/// changed, on its own: however long presence writes take on a busy database, the
/// lease that says this hub is alive is not late. At stop it is given back, so the
/// other hubs count nothing here from then on.
pub async fn renew_loop(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let renew_every = state.hub_lease / 4;
    let mut renewed: Option<(tokio::time::Instant, (i64, i64))> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let counts = state.sessions.local_health_counts();
        let due = renewed.is_none_or(|(at, last)| at.elapsed() >= renew_every || last != counts);
        if due {
            match renew(&state, counts).await {
                Ok(()) => renewed = Some((tokio::time::Instant::now(), counts)),
                Err(e) => tracing::warn!(error = %e, "could not renew the hub lease"),
            }
        }
    }
    if let Err(e) = state.store.release_hub_lease(&state.hub_id, now_ms()).await {
        tracing::warn!(error = %e, "could not give the hub lease back; it runs out by itself");
    }
}

/// Write the queued presence changes, a chunk per transaction, each stamped when it
/// is written; on failure what is left waits for the next tick.
async fn flush(state: &AppState) {
    let mut batch = state.presence.take();
    // Every hub writes in agent order, so two hubs' transactions touching the same
    // agents lock them in the same order and do not deadlock.
    batch.sort_by(|a, b| a.agent_id().cmp(b.agent_id()));
    while !batch.is_empty() {
        let rest = batch.split_off(batch.len().min(WRITE_CHUNK));
        if let Err(e) = state.store.record_presence(&batch, now_ms()).await {
            tracing::warn!(error = %e, writes = batch.len() + rest.len(), "could not write session presence; retrying");
            batch.extend(rest);
            state.presence.restore(batch);
            return;
        }
        batch = rest;
    }
}

async fn renew(state: &AppState, (online, degraded): (i64, i64)) -> muster_store::Result<()> {
    let now = now_ms();
    state
        .store
        .renew_hub_lease(&HubLease {
            id: state.hub_id.clone(),
            address: state.hub_url.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: state.started_at,
            renewed_at: now,
            expires_at: now + state.hub_lease.as_millis() as i64,
            online,
            degraded,
        })
        .await
}

/// Read every hub's lease; a hub whose lease just ran out takes its agents offline
/// here, and one dead for a while has its rows closed.
async fn read_leases(state: &AppState) -> muster_store::Result<()> {
    let hubs = state.store.list_hubs().await?;
    let now = now_ms();
    let (gone, agents) = {
        let mut remote = state
            .sessions
            .remote
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let gone = remote.set_leases(&state.hub_id, &hubs, now);
        let agents: Vec<String> = gone.iter().flat_map(|h| remote.agents_on(h)).collect();
        (gone, agents)
    };
    for hub in &gone {
        tracing::warn!(hub = %hub, "a hub sharing the database stopped renewing its lease; its agents count as offline");
    }
    tell_watchers(state, agents).await;
    // One live hub reaps (the first by id): several doing it at once, while the
    // dead hub's agents are being written back as connected elsewhere, only
    // deadlock each other.
    let reaper = hubs
        .iter()
        .filter(|h| h.is_live(now) || h.lease.id == state.hub_id)
        .map(|h| h.lease.id.as_str())
        .min();
    if reaper != Some(state.hub_id.as_str()) {
        return Ok(());
    }
    let reap_before = now - (state.hub_lease * REAP_AFTER_LEASES).as_millis() as i64;
    for h in hubs.iter().filter(|h| {
        h.lease.id != state.hub_id && h.stopped_at.is_none() && h.lease.expires_at < reap_before
    }) {
        // Rows of a hub that is not coming back: closed here, so they stop being
        // read as connected by anyone (and its history says when it went).
        let ended = state.store.end_hub_presence(&h.lease.id, now).await?;
        if ended > 0 {
            state
                .store
                .close_open_sessions(&h.lease.id, "hub stopped renewing its lease")
                .await?;
            tracing::info!(hub = %h.lease.id, sessions = ended, "closed the sessions of a dead hub");
        }
    }
    // A write only when there is something to forget.
    let forget_before = now - FORGET_AFTER.as_millis() as i64;
    if hubs.iter().any(|h| h.lease.expires_at < forget_before) {
        state.store.forget_hubs(forget_before).await?;
    }
    Ok(())
}

/// Read the presence rows changed since the last look and apply them.
async fn follow(state: &AppState, follower: &mut Follower) -> muster_store::Result<()> {
    // A writer stamps its rows just before it commits them, so a row stamped a
    // moment ago may not be visible yet: read again from a little before now each
    // time. Rows quiet for longer than that are read once and never again.
    let started = now_ms();
    let mut changed = Vec::new();
    let (mut at, mut id) = (follower.safe, String::new());
    loop {
        let rows = state.store.presence_after((at, &id), PAGE).await?;
        let full = rows.len() as i64 == PAGE;
        if let Some(last) = rows.last() {
            (at, id) = (last.changed_at, last.agent_id.clone());
        }
        changed.extend(
            state
                .sessions
                .remote
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .apply(&state.hub_id, &rows),
        );
        if !full {
            break;
        }
    }
    follower.safe = follower.safe.max(started - OVERLAP_MS);
    tell_watchers(state, changed).await;
    Ok(())
}

/// Tell live watchers the new status of agents whose session moved elsewhere.
async fn tell_watchers(state: &AppState, agents: Vec<String>) {
    if agents.is_empty() || state.events.watchers() == 0 {
        return;
    }
    if agents.len() > NOTES_MAX {
        state.events.resync_all();
        return;
    }
    match state.store.get_agents(&agents).await {
        Ok(records) => {
            for a in &records {
                let mut note = AgentNote::new(a, state.sessions.status_of(a), Change::Status);
                if let Some(seen) = a.last_seen_at {
                    note.last_seen_at = Some(crate::clock::rfc3339(seen));
                }
                state.events.publish(note);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read agents to tell watchers"),
    }
}
