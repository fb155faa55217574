//! This hub's session changes on their way to the database's presence rows (SPEC
//! §12), which the other hubs sharing it read to show the same fleet.
//!
//! Invariant: bounded by the agents this hub saw, never dropped. Each agent has at
//! most one pending write, the latest (a session opening, its health changing, it
//! closing), so a reconnect storm is one row per agent however often each flaps,
//! and a write a failed flush gives back never overrides a newer one.

use std::collections::HashMap;
use std::sync::Mutex;

use muster_store::PresenceWrite;

#[derive(Default)]
pub struct PresenceQueue {
    pending: Mutex<HashMap<String, PresenceWrite>>,
}

/// `new` arriving while `old` waits. A health change of a session whose opening is
/// not written yet is folded into the opening (there is no row to update yet); the
/// end of an older session (superseded on this hub) leaves a newer opening alone.
fn merge(old: PresenceWrite, new: PresenceWrite) -> PresenceWrite {
    match (old, new) {
        (
            old @ PresenceWrite::Connected { .. },
            new @ (PresenceWrite::Health { .. } | PresenceWrite::Disconnected { .. }),
        ) if session_of(&old) != session_of(&new) => old,
        (
            PresenceWrite::Connected {
                agent_id,
                hub,
                session,
                ..
            },
            PresenceWrite::Health {
                session: s,
                health,
                problems,
                at,
                ..
            },
        ) if s == session => PresenceWrite::Connected {
            agent_id,
            hub,
            session,
            health,
            problems,
            at,
        },
        (_, new) => new,
    }
}

fn session_of(w: &PresenceWrite) -> &str {
    match w {
        PresenceWrite::Connected { session, .. }
        | PresenceWrite::Health { session, .. }
        | PresenceWrite::Disconnected { session, .. } => session,
    }
}

impl PresenceQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PresenceWrite>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, write: PresenceWrite) {
        let mut pending = self.lock();
        let id = write.agent_id().to_owned();
        let next = match pending.remove(&id) {
            Some(old) => merge(old, write),
            None => write,
        };
        pending.insert(id, next);
    }

    /// Everything waiting, to write now.
    pub fn take(&self) -> Vec<PresenceWrite> {
        std::mem::take(&mut *self.lock()).into_values().collect()
    }

    /// Give back writes a failed flush could not make: each goes before whatever
    /// arrived for its agent since.
    pub fn restore(&self, batch: Vec<PresenceWrite>) {
        let mut pending = self.lock();
        for old in batch {
            let id = old.agent_id().to_owned();
            let next = match pending.remove(&id) {
                Some(newer) => merge(old, newer),
                None => old,
            };
            pending.insert(id, next);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_proto::AgentHealth;

    fn connected(session: &str, at: i64) -> PresenceWrite {
        PresenceWrite::Connected {
            agent_id: "a".into(),
            hub: "h".into(),
            session: session.into(),
            health: AgentHealth::Ok,
            problems: vec![],
            at,
        }
    }

    fn health(session: &str, at: i64) -> PresenceWrite {
        PresenceWrite::Health {
            agent_id: "a".into(),
            session: session.into(),
            health: AgentHealth::Degraded,
            problems: vec!["disk".into()],
            at,
        }
    }

    #[test]
    fn a_health_change_before_the_opening_is_written_goes_into_the_opening() {
        let q = PresenceQueue::default();
        q.push(connected("s1", 1));
        q.push(health("s1", 2));
        let out = q.take();
        assert_eq!(out.len(), 1);
        assert!(matches!(
            &out[0],
            PresenceWrite::Connected {
                health: AgentHealth::Degraded,
                at: 2,
                ..
            }
        ));
    }

    #[test]
    fn a_newer_session_wins_and_a_failed_flush_does_not_bring_back_the_older() {
        let q = PresenceQueue::default();
        q.push(connected("s1", 1));
        let failed = q.take();
        q.push(PresenceWrite::Disconnected {
            agent_id: "a".into(),
            session: "s1".into(),
            at: 3,
        });
        q.push(connected("s2", 4));
        q.restore(failed);
        let out = q.take();
        assert_eq!(out, vec![connected("s2", 4)]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn the_end_of_a_superseded_session_leaves_the_newer_opening() {
        let q = PresenceQueue::default();
        q.push(connected("s2", 2));
        q.push(health("s1", 3));
        q.push(PresenceWrite::Disconnected {
            agent_id: "a".into(),
            session: "s1".into(),
            at: 4,
        });
        assert_eq!(q.take(), vec![connected("s2", 2)]);
    }
}
