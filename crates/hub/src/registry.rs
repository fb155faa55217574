//! The registry of live agent sessions on this hub: who is connected, their health,
//! and a channel to tell each session task to end.
//!
//! Invariants: an agent is `online`/`degraded` exactly while its entry is here; the
//! entry is removed by a guard when the session task ends, however it ends.
//! Heartbeats touch memory only; `last_seen_at` reaches the database in batches from
//! [`Sessions::take_seen`]. Depends on nothing in the crate but the clock, so
//! anything may hold or query it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_proto::{AgentHealth, AgentStatus};
use muster_store::{AgentRecord, AgentState};
use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::remote::Remote;

/// What the rest of the hub can tell a session task.
#[derive(Debug, Clone)]
pub enum Control {
    /// Credentials revoked or replaced: send `revoked`, close.
    Revoke(String),
    /// Hub shutting down: send `shutdown`, close.
    Shutdown { reconnect_within_ms: u64 },
    /// A newer session of the same agent took over: close quietly.
    Superseded,
    /// Send this frame to the agent (an update order) and carry on.
    Send(Box<muster_proto::HubMessage>),
}

/// What the rest of the hub has told one session task and it has not read yet: a few
/// messages at most. (A tokio channel allocates a block of 32 slots up front,
/// about 1 KiB per session whose mailbox is nearly always empty.)
#[derive(Default)]
pub struct Mailbox {
    queue: Mutex<std::collections::VecDeque<Control>>,
    ready: Notify,
}

/// Messages a mailbox holds at most; past it, `try_send` refuses. (Probe orders
/// wait here for the session task to send them; a queue grows only when used.)
const MAILBOX_MAX: usize = 16;

impl Mailbox {
    /// Leave a message; false when the mailbox is full.
    pub fn try_send(&self, control: Control) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= MAILBOX_MAX {
            return false;
        }
        queue.push_back(control);
        drop(queue);
        self.ready.notify_one();
        true
    }

    /// The next message, waiting for one. Cancel-safe: a message is taken only by
    /// the poll that returns it.
    pub async fn recv(&self) -> Control {
        loop {
            if let Some(c) = self
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front()
            {
                return c;
            }
            self.ready.notified().await;
        }
    }
}

struct Live {
    conn: u64,
    /// The agent key the session was accepted with: if the agent's key changes
    /// (another hub re-enrolled it), this session's credentials are dead.
    key_hash: Option<String>,
    control: Arc<Mailbox>,
    health: AgentHealth,
    problems: Vec<String>,
    /// Last heartbeat (unix ms) and whether it is not yet in the database: kept in
    /// the entry so a heartbeat is one lock and no allocation.
    last_seen: i64,
    dirty: bool,
    /// The last `last_seen` handed to the database (0: none yet).
    stored: i64,
}

/// How often a connected agent's `last_seen_at` is written, at most (ms).
pub const SEEN_EVERY_MS: i64 = 60_000;

/// Who is connected right now.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Live>>,
    /// `last_seen` times not yet written to the database.
    seen: Mutex<HashMap<String, i64>>,
    next_conn: AtomicU64,
    /// The sessions other hubs sharing the database hold (`lease.rs` keeps it).
    pub remote: Mutex<Remote>,
    pub heartbeats: AtomicU64,
    pub flushes: AtomicU64,
    pub flushed_rows: AtomicU64,
}

/// Removes the registry entry when the session task ends.
pub struct Registration {
    sessions: Arc<Sessions>,
    agent_id: String,
    pub conn: u64,
    /// Set once the entry is gone (by [`end`](Self::end)), so the drop does nothing.
    ended: bool,
}

impl Registration {
    /// Remove the entry now; true when it was still the agent's live session (not
    /// superseded by a newer one), i.e. when the agent just went offline here.
    pub fn end(mut self) -> bool {
        self.remove()
    }

    fn remove(&mut self) -> bool {
        if std::mem::replace(&mut self.ended, true) {
            return false;
        }
        let s = &self.sessions;
        let mut live = s.live.lock().unwrap_or_else(|p| p.into_inner());
        let current = live
            .get(&self.agent_id)
            .is_some_and(|l| l.conn == self.conn);
        if current {
            live.remove(&self.agent_id);
        }
        drop(live);
        s.mark_seen(&self.agent_id, now_ms());
        current
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.remove();
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark_seen(&self, agent_id: &str, at: i64) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(agent_id.to_owned(), at);
    }

    /// `Some(health)` while the agent has a live session.
    pub fn health(&self, agent_id: &str) -> Option<(AgentHealth, Vec<String>)> {
        self.lock()
            .get(agent_id)
            .map(|l| (l.health, l.problems.clone()))
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, Remote> {
        self.remote.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sessions held here by health: (online, degraded). One pass under the lock.
    pub fn local_health_counts(&self) -> (i64, i64) {
        let live = self.lock();
        let degraded = live
            .values()
            .filter(|l| l.health == AgentHealth::Degraded)
            .count() as i64;
        (live.len() as i64 - degraded, degraded)
    }

    /// Sessions held by every live hub sharing the database, by health.
    pub fn health_counts(&self) -> (i64, i64) {
        let live = self.lock();
        let degraded = live
            .values()
            .filter(|l| l.health == AgentHealth::Degraded)
            .count() as i64;
        let (r_online, r_degraded) = self
            .remote()
            .health_counts(now_ms(), |id| live.contains_key(id));
        (
            live.len() as i64 - degraded + r_online,
            degraded + r_degraded,
        )
    }

    /// Health and problems of the agent's session, on this hub or another live one.
    pub fn fleet_health(&self, agent_id: &str) -> Option<(AgentHealth, Vec<String>)> {
        self.health(agent_id).or_else(|| {
            self.remote()
                .get(agent_id, now_ms())
                .map(|s| (s.health, s.problems.clone()))
        })
    }

    /// An agent's status as the fleet sees it (SPEC §9, §12): the stored state, and
    /// for an active agent whether it holds a live session on this hub or another
    /// live one, and how it feels.
    pub fn status_of(&self, a: &AgentRecord) -> AgentStatus {
        match a.state {
            AgentState::Active if a.cloned_at.is_some() => AgentStatus::Cloned,
            AgentState::Active => match self.live_health(&a.id) {
                Some(AgentHealth::Ok) => AgentStatus::Online,
                Some(AgentHealth::Degraded) => AgentStatus::Degraded,
                None => AgentStatus::Offline,
            },
            AgentState::Revoked => AgentStatus::Revoked,
            AgentState::Removed => AgentStatus::Removed,
        }
    }

    /// The other live hub holding `agent_id`'s session, and its URL, when this hub
    /// holds none.
    pub fn remote_holder(&self, agent_id: &str) -> Option<(Arc<str>, String)> {
        if self.lock().contains_key(agent_id) {
            return None;
        }
        self.remote().holder(agent_id, now_ms())
    }

    /// Health alone (no copy of the problems): the fleet page asks for every row.
    fn live_health(&self, agent_id: &str) -> Option<AgentHealth> {
        if let Some(l) = self.lock().get(agent_id) {
            return Some(l.health);
        }
        self.remote().get(agent_id, now_ms()).map(|s| s.health)
    }

    /// This hub's session of `agent_id`, if it holds one: its connection number and
    /// the agent key hash it was accepted with.
    pub fn session_of(&self, agent_id: &str) -> Option<(u64, Option<String>)> {
        self.lock()
            .get(agent_id)
            .map(|l| (l.conn, l.key_hash.clone()))
    }

    /// Like [`kick`](Self::kick), but only the session `conn`: a newer session of the
    /// same agent, accepted with newer credentials, is left alone.
    pub fn kick_conn(&self, agent_id: &str, conn: u64, reason: &str) -> bool {
        let control = self
            .lock()
            .get(agent_id)
            .filter(|l| l.conn == conn)
            .map(|l| l.control.clone());
        control.is_some_and(|m| m.try_send(Control::Revoke(reason.to_owned())))
    }

    pub fn held(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Tell the agent's live session (if any) to end; returns whether there was one.
    pub fn kick(&self, agent_id: &str, reason: &str) -> bool {
        let control = self.lock().get(agent_id).map(|l| l.control.clone());
        control.is_some_and(|m| m.try_send(Control::Revoke(reason.to_owned())))
    }

    /// Send `msg` over the agent's live session on this hub; false when it has none
    /// here (or its queue is full).
    pub fn send(&self, agent_id: &str, msg: muster_proto::HubMessage) -> bool {
        let control = self.lock().get(agent_id).map(|l| l.control.clone());
        control.is_some_and(|m| m.try_send(Control::Send(Box::new(msg))))
    }

    /// Ask every session to close, telling agents to come back within `spread`.
    pub fn shutdown_all(&self, spread: Duration) {
        let controls: Vec<_> = self.lock().values().map(|l| l.control.clone()).collect();
        for tx in controls {
            let _ = tx.try_send(Control::Shutdown {
                reconnect_within_ms: spread.as_millis() as u64,
            });
        }
    }

    /// The `last_seen` times gathered since the last call: live sessions that
    /// heartbeated, and sessions that ended.
    pub fn take_seen(&self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> =
            std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        // A connected agent's time is written at most once a [`SEEN_EVERY_MS`]:
        // while it is online that is all anyone needs of it, and a database
        // shared by hubs holding 100,000 agents must not take a write per
        // heartbeat. A session's end is always written (from `seen`).
        for (id, live) in self
            .lock()
            .iter_mut()
            .filter(|(_, l)| l.dirty && l.last_seen - l.stored >= SEEN_EVERY_MS)
        {
            live.dirty = false;
            live.stored = live.last_seen;
            out.push((id.clone(), live.last_seen));
        }
        out
    }

    /// Put back times a failed flush could not write, unless newer ones arrived.
    pub fn restore_seen(&self, batch: Vec<(String, i64)>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (id, at) in batch {
            seen.entry(id).or_insert(at);
        }
    }

    /// Note a heartbeat; true when it changed the session's health (a status change
    /// worth telling watchers about).
    pub fn heartbeat(
        &self,
        agent_id: &str,
        conn: u64,
        health: AgentHealth,
        problems: Vec<String>,
    ) -> bool {
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
        match self.lock().get_mut(agent_id).filter(|l| l.conn == conn) {
            Some(l) => {
                let changed = l.health != health;
                l.health = health;
                l.problems = problems;
                l.last_seen = now_ms();
                l.dirty = true;
                changed
            }
            None => false,
        }
    }
}

/// Enter `agent`'s session in the registry (superseding an older one of the same
/// agent); the returned guard removes it again.
pub fn register(
    sessions: &Arc<Sessions>,
    agent: &AgentRecord,
    control: Arc<Mailbox>,
) -> Registration {
    let agent_id = &agent.id;
    let s = sessions;
    let conn = s.next_conn.fetch_add(1, Ordering::Relaxed);
    let previous = s.lock().insert(
        agent_id.to_owned(),
        Live {
            conn,
            key_hash: agent.key_hash.clone(),
            control,
            health: AgentHealth::Ok,
            problems: Vec::new(),
            last_seen: now_ms(),
            dirty: true,
            stored: 0,
        },
    );
    if let Some(old) = previous {
        let _ = old.control.try_send(Control::Superseded);
    }
    Registration {
        sessions: sessions.clone(),
        agent_id: agent_id.to_owned(),
        conn,
        ended: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_mailbox_holds_sixteen_in_order_and_a_dropped_wait_loses_nothing() {
        let m = Mailbox::default();
        // A wait given up (another select! branch won) takes nothing with it.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), m.recv()).await;
        assert!(gave_up.is_err());
        for i in 0..MAILBOX_MAX {
            assert!(m.try_send(Control::Revoke(format!("r{i}"))));
        }
        assert!(!m.try_send(Control::Superseded), "one more is refused");
        for i in 0..MAILBOX_MAX {
            let got = m.recv().await;
            assert!(
                matches!(&got, Control::Revoke(r) if *r == format!("r{i}")),
                "{got:?}"
            );
        }
        assert!(m.try_send(Control::Superseded));
        assert!(matches!(m.recv().await, Control::Superseded));
    }
}
