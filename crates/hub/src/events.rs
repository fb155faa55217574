//! Live change notes for watchers of the fleet (SPEC §13: the dashboard's pages
//! change within a second without a reload), served as `GET /api/v1/events`.
//!
//! Whoever changes an agent (a session opening, closing or changing health, an
//! enrollment, a revocation or removal, a label edit, a clone lock) or the approval
//! queue [`publish`](Events::publish)es a small note here. Notes are coalesced: until
//! the next flush (every [`FLUSH_EVERY`]) only the latest note per agent is kept, so
//! 10,000 agents flapping make one message per flush, not 10,000.
//!
//! Invariants: memory is bounded. At most [`MAX_SUBSCRIBERS`] watch at once (the
//! rest are refused); each holds at most [`MAX_QUEUED`] frames or
//! [`MAX_QUEUED_BYTES`], and one that falls behind loses its backlog for a single
//! `resync` frame (it should reload what it shows). Pending notes are at most one per
//! agent. Knows nothing of `AppState`: the flush (which counts the fleet) is in
//! `live.rs`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_proto::{AgentStatus, StatusCounts};
use muster_store::AgentRecord;
use serde::Serialize;
use tokio::sync::Notify;

use crate::clock::rfc3339;

/// How often coalesced notes go out.
pub const FLUSH_EVERY: Duration = Duration::from_millis(300);
/// Watchers served at once; past it `GET /api/v1/events` answers 503.
pub const MAX_SUBSCRIBERS: usize = 1_000;
/// Frames one watcher may have waiting; one more and it gets `resync` instead.
pub const MAX_QUEUED: usize = 16;
/// Bytes one watcher may have waiting.
pub const MAX_QUEUED_BYTES: usize = 1 << 20;

/// What changed about an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Online, offline, degraded, revoked, cloned.
    Status,
    /// A new agent, or new credentials for one.
    Enrolled,
    /// Gone from the fleet view.
    Removed,
    /// Name, labels or version.
    Details,
}

/// One agent as a watcher sees it after a change.
#[derive(Debug, Clone, Serialize)]
pub struct AgentNote {
    pub id: String,
    pub name: String,
    pub status: AgentStatus,
    pub last_seen_at: Option<String>,
    pub agent_version: String,
    pub labels: BTreeMap<String, String>,
    pub change: Change,
}

impl AgentNote {
    pub fn new(a: &AgentRecord, status: AgentStatus, change: Change) -> AgentNote {
        AgentNote {
            id: a.id.clone(),
            name: a.name.clone(),
            status,
            last_seen_at: a.last_seen_at.map(rfc3339),
            agent_version: a.facts.agent_version.clone(),
            labels: a.facts.labels.clone(),
            change,
        }
    }
}

/// One server-sent event, serialized once for every watcher it goes to.
#[derive(Debug, Clone)]
pub struct Frame {
    pub event: &'static str,
    pub data: Arc<str>,
}

impl Frame {
    fn new(event: &'static str, data: &impl Serialize) -> Frame {
        let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
        Frame {
            event,
            data: data.into(),
        }
    }

    fn resync() -> Frame {
        Frame {
            event: "resync",
            data: "{}".into(),
        }
    }
}

/// Which agents a watcher may see, by name (a member key's `--agents` glob). A
/// scoped watcher gets only its agents' notes, and no fleet-wide counts.
pub type Scope = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Default)]
struct Pending {
    agents: HashMap<String, AgentNote>,
    approvals: bool,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Frame>,
    bytes: usize,
}

struct Slot {
    queue: Mutex<Queue>,
    ready: Notify,
    scope: Option<Scope>,
    /// Admins also hear of the approval queue (its route is theirs alone).
    admin: bool,
}

/// The notes waiting for the next flush, and who watches.
#[derive(Default)]
pub struct Events {
    pending: Mutex<Pending>,
    watchers: Mutex<HashMap<u64, Arc<Slot>>>,
    next_id: AtomicU64,
    /// Notes published (before coalescing).
    pub notes: AtomicU64,
    /// Frames queued to watchers.
    pub frames: AtomicU64,
    /// Times a watcher fell behind and had its backlog replaced by `resync`.
    pub resyncs: AtomicU64,
    /// Watchers refused because [`MAX_SUBSCRIBERS`] were watching.
    pub refused: AtomicU64,
    /// The hub is stopping: streams end (a graceful shutdown waits for them).
    closed: std::sync::atomic::AtomicBool,
}

/// One watcher's stream; leaving (dropping it) frees its place.
pub struct Subscription {
    events: Arc<Events>,
    id: u64,
    slot: Arc<Slot>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.events.lock_watchers().remove(&self.id);
    }
}

impl Subscription {
    /// The next frame, waiting for one; `None` once the hub is stopping.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if self.events.closed.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(f) = self.slot.pop() {
                return Some(f);
            }
            self.slot.ready.notified().await;
        }
    }

    /// Queue a frame for this watcher alone (the first counts it is sent).
    pub fn send(&self, event: &'static str, data: &impl Serialize) {
        self.events.queue(&self.slot, Frame::new(event, data));
    }
}

impl Slot {
    fn pop(&self) -> Option<Frame> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let f = q.frames.pop_front()?;
        q.bytes -= f.data.len();
        Some(f)
    }
}

impl Events {
    fn lock_watchers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Note that an agent changed; it replaces any note of it not yet sent. Cheap
    /// (one map insert) and does nothing while nobody watches.
    pub fn publish(&self, note: AgentNote) {
        if self.watchers() == 0 {
            return;
        }
        self.notes.fetch_add(1, Ordering::Relaxed);
        let mut note = note;
        let mut pending = self.lock_pending();
        // The latest state wins, but not over the news that the agent arrived or left:
        // a page adds or drops rows on those (an agent that enrolls and connects within
        // one flush must still arrive as `enrolled`).
        if let Some(prev) = pending.agents.get(&note.id)
            && matches!(prev.change, Change::Enrolled | Change::Removed)
            && matches!(note.change, Change::Status | Change::Details)
        {
            note.change = prev.change;
        }
        pending.agents.insert(note.id.clone(), note);
    }

    /// Note that the approval queue changed (the flush reads the count).
    pub fn approvals_changed(&self) {
        if self.watchers() == 0 {
            return;
        }
        self.notes.fetch_add(1, Ordering::Relaxed);
        self.lock_pending().approvals = true;
    }

    /// Tell every watcher to reload what it shows: more changed at once than notes
    /// would carry (a hub sharing the database died with thousands of agents).
    pub fn resync_all(&self) {
        let slots: Vec<Arc<Slot>> = self.lock_watchers().values().cloned().collect();
        for slot in slots {
            self.queue(&slot, Frame::resync());
        }
    }

    pub fn watchers(&self) -> usize {
        self.lock_watchers().len()
    }

    /// End every stream (the hub is stopping) and refuse new ones.
    pub fn close_all(&self) {
        self.closed.store(true, Ordering::Relaxed);
        for slot in self.lock_watchers().values() {
            slot.ready.notify_one();
        }
    }

    /// Start watching, or `None` when [`MAX_SUBSCRIBERS`] already do (or the hub
    /// is stopping).
    pub fn subscribe(self: &Arc<Self>, scope: Option<Scope>, admin: bool) -> Option<Subscription> {
        let mut watchers = self.lock_watchers();
        if watchers.len() >= MAX_SUBSCRIBERS || self.closed.load(Ordering::Relaxed) {
            drop(watchers);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            queue: Mutex::default(),
            ready: Notify::new(),
            scope,
            admin,
        });
        watchers.insert(id, slot.clone());
        Some(Subscription {
            events: self.clone(),
            id,
            slot,
        })
    }

    /// The notes gathered since the last call, and whether the approval queue
    /// changed.
    pub fn take(&self) -> (Vec<AgentNote>, bool) {
        let pending = std::mem::take(&mut *self.lock_pending());
        (pending.agents.into_values().collect(), pending.approvals)
    }

    /// Send one flush's frames: `agents` (with the fleet's counts when known) and
    /// `approvals` (when the waiting count is given). Scoped watchers get only the
    /// notes of their agents and no counts.
    pub fn deliver(&self, notes: &[AgentNote], counts: Option<StatusCounts>, pending: Option<i64>) {
        #[derive(Serialize)]
        struct Agents<'a> {
            agents: Vec<&'a AgentNote>,
            #[serde(skip_serializing_if = "Option::is_none")]
            counts: Option<StatusCounts>,
        }
        let all = (!notes.is_empty()).then(|| {
            Frame::new(
                "agents",
                &Agents {
                    agents: notes.iter().collect(),
                    counts,
                },
            )
        });
        // Members see the counts without the approval queue's.
        let all_for_members = (!notes.is_empty()).then(|| {
            Frame::new(
                "agents",
                &Agents {
                    agents: notes.iter().collect(),
                    counts: counts.map(|c| StatusCounts { pending: 0, ..c }),
                },
            )
        });
        let approvals =
            pending.map(|n| Frame::new("approvals", &serde_json::json!({"pending": n})));
        let watchers: Vec<Arc<Slot>> = self.lock_watchers().values().cloned().collect();
        for slot in watchers {
            match &slot.scope {
                None if slot.admin => {
                    if let Some(f) = &all {
                        self.queue(&slot, f.clone());
                    }
                    if let Some(f) = &approvals {
                        self.queue(&slot, f.clone());
                    }
                }
                None => {
                    if let Some(f) = &all_for_members {
                        self.queue(&slot, f.clone());
                    }
                }
                Some(visible) => {
                    let mine: Vec<&AgentNote> = notes.iter().filter(|n| visible(&n.name)).collect();
                    if !mine.is_empty() {
                        let frame = Frame::new(
                            "agents",
                            &Agents {
                                agents: mine,
                                counts: None,
                            },
                        );
                        self.queue(&slot, frame);
                    }
                }
            }
        }
    }

    /// The `/metrics` lines about watchers.
    pub fn render_metrics(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# HELP muster_event_watchers Live event streams open now.\n\
             # TYPE muster_event_watchers gauge\n\
             muster_event_watchers {}\n\
             # HELP muster_event_notes_total Change notes published while someone watched (before coalescing).\n\
             # TYPE muster_event_notes_total counter\n\
             muster_event_notes_total {}\n\
             # HELP muster_event_frames_total Event frames queued to watchers.\n\
             # TYPE muster_event_frames_total counter\n\
             muster_event_frames_total {}\n\
             # HELP muster_event_resyncs_total Watchers that fell behind and had their backlog replaced by resync.\n\
             # TYPE muster_event_resyncs_total counter\n\
             muster_event_resyncs_total {}\n\
             # HELP muster_event_watchers_refused_total Event streams refused: too many open.\n\
             # TYPE muster_event_watchers_refused_total counter\n\
             muster_event_watchers_refused_total {}\n",
            self.watchers(),
            get(&self.notes),
            get(&self.frames),
            get(&self.resyncs),
            get(&self.refused),
        )
    }

    /// Add `frame` to a watcher's queue, or, past its budget, replace the backlog
    /// with one `resync`.
    fn queue(&self, slot: &Slot, frame: Frame) {
        let mut q = slot.queue.lock().unwrap_or_else(|p| p.into_inner());
        // Told to resync and not there yet: it reloads everything after reading it,
        // so nothing queued before then is worth keeping.
        if q.frames.front().is_some_and(|f| f.event == "resync") {
            return;
        }
        if q.frames.len() >= MAX_QUEUED || q.bytes + frame.data.len() > MAX_QUEUED_BYTES {
            q.frames.clear();
            q.bytes = 0;
            let resync = Frame::resync();
            q.bytes += resync.data.len();
            q.frames.push_back(resync);
            self.resyncs.fetch_add(1, Ordering::Relaxed);
        } else {
            q.bytes += frame.data.len();
            q.frames.push_back(frame);
            self.frames.fetch_add(1, Ordering::Relaxed);
        }
        drop(q);
        slot.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn note(id: &str, status: AgentStatus) -> AgentNote {
        AgentNote {
            id: id.into(),
            name: id.into(),
            status,
            last_seen_at: None,
            agent_version: "1".into(),
            labels: BTreeMap::new(),
            change: Change::Status,
        }
    }

    #[tokio::test]
    async fn notes_coalesce_per_agent_and_a_slow_watcher_gets_one_resync() {
        let events = Arc::new(Events::default());
        // Nobody watching: nothing is kept.
        events.publish(note("a", AgentStatus::Online));
        assert!(events.take().0.is_empty());

        let mut sub = events.subscribe(None, true).unwrap();
        for i in 0..1000 {
            let s = if i % 2 == 0 {
                AgentStatus::Online
            } else {
                AgentStatus::Offline
            };
            events.publish(note("a", s));
            events.publish(note(&format!("b{}", i % 10), s));
        }
        let (notes, approvals) = events.take();
        assert_eq!(notes.len(), 11);
        assert!(!approvals);
        let a = notes.iter().find(|n| n.id == "a").unwrap();
        assert_eq!(a.status, AgentStatus::Offline, "the latest note wins");

        // ...but an arrival is not coalesced away by the status that follows it.
        events.publish(AgentNote {
            change: Change::Enrolled,
            ..note("c", AgentStatus::Offline)
        });
        events.publish(note("c", AgentStatus::Online));
        let (notes_c, _) = events.take();
        let c = notes_c.iter().find(|n| n.id == "c").unwrap();
        assert_eq!(
            (c.change, c.status),
            (Change::Enrolled, AgentStatus::Online)
        );
        events.deliver(&notes, None, Some(3));
        assert_eq!(sub.next().await.unwrap().event, "agents");
        assert_eq!(&*sub.next().await.unwrap().data, r#"{"pending":3}"#);

        // Not reading: the queue stays within its budget, as one resync.
        for _ in 0..(MAX_QUEUED * 10) {
            events.deliver(&notes, None, None);
        }
        assert_eq!(events.resyncs.load(Ordering::Relaxed), 1);
        assert_eq!(sub.next().await.unwrap().event, "resync");
        events.deliver(&notes, None, None);
        assert_eq!(sub.next().await.unwrap().event, "agents");

        // Scoped watchers see their agents only.
        let only_a: Scope = Arc::new(|n: &str| n == "a");
        let mut scoped = events.subscribe(Some(only_a), false).unwrap();
        events.deliver(&notes, None, Some(1));
        let f = scoped.next().await.unwrap();
        assert!(
            f.data.contains("\"a\"") && !f.data.contains("b1"),
            "{}",
            f.data
        );
        events.close_all();
        assert!(sub.next().await.is_none(), "streams end when the hub stops");
        drop(sub);
        drop(scoped);
        assert_eq!(events.watchers(), 0);
    }

    #[test]
    fn watchers_are_capped() {
        let events = Arc::new(Events::default());
        let held: Vec<_> = (0..MAX_SUBSCRIBERS)
            .map(|_| events.subscribe(None, true).unwrap())
            .collect();
        assert!(events.subscribe(None, true).is_none());
        assert_eq!(events.refused.load(Ordering::Relaxed), 1);
        drop(held);
        assert!(events.subscribe(None, true).is_some());
    }
}
