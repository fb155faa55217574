//! Probe calls in flight (SPEC §15): each has an id, the agent it went to and where
//! its answer goes. The session task hands an agent's `probe_result` here; the
//! caller waits for it with its own deadline, and a result that comes after the
//! caller gave up finds no entry and is dropped. Bounded per agent and in all, so
//! a fan-out or a slow agent cannot grow the hub's memory without limit. Knows
//! nothing of the hub's state.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use muster_proto::ProbeOutcome;
use tokio::sync::oneshot;

/// Calls in flight to one agent at most (the agent runs 4 at once and queues none).
pub const PER_AGENT: u32 = 16;
/// Calls in flight in all.
pub const TOTAL: usize = 200_000;

/// What an agent answered.
#[derive(Debug, Clone)]
pub struct Reply {
    pub outcome: ProbeOutcome,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub truncated: bool,
}

struct Pending {
    agent_id: String,
    tx: oneshot::Sender<Reply>,
}

#[derive(Default)]
pub struct Calls {
    next: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    per_agent: HashMap<String, u32>,
}

/// One call in flight; dropping it forgets the call (its answer, if it comes, is
/// dropped).
pub struct Call<'a> {
    calls: &'a Calls,
    pub id: u64,
    pub answer: oneshot::Receiver<Reply>,
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        let mut st = self.calls.lock();
        if let Some(p) = st.pending.remove(&self.id) {
            forget_one(&mut st.per_agent, &p.agent_id);
        }
    }
}

fn forget_one(per_agent: &mut HashMap<String, u32>, agent_id: &str) {
    if let Some(n) = per_agent.get_mut(agent_id) {
        *n -= 1;
        if *n == 0 {
            per_agent.remove(agent_id);
        }
    }
}

impl Calls {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new call to `agent_id`; `None` when it or the hub has too many in flight.
    pub fn open(&self, agent_id: &str) -> Option<Call<'_>> {
        let mut st = self.lock();
        if st.pending.len() >= TOTAL
            || st.per_agent.get(agent_id).copied().unwrap_or(0) >= PER_AGENT
        {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, answer) = oneshot::channel();
        st.pending.insert(
            id,
            Pending {
                agent_id: agent_id.to_owned(),
                tx,
            },
        );
        *st.per_agent.entry(agent_id.to_owned()).or_default() += 1;
        Some(Call {
            calls: self,
            id,
            answer,
        })
    }

    /// An agent's answer: delivered when the call is still waiting and was made to
    /// this agent (an agent cannot answer another's call); false otherwise.
    pub fn complete(&self, agent_id: &str, id: u64, reply: Reply) -> bool {
        let mut st = self.lock();
        match st.pending.get(&id) {
            Some(p) if p.agent_id == agent_id => {}
            _ => return false,
        }
        let Some(p) = st.pending.remove(&id) else {
            return false;
        };
        forget_one(&mut st.per_agent, agent_id);
        drop(st);
        p.tx.send(reply).is_ok()
    }

    pub fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Reply {
        Reply {
            outcome: ProbeOutcome::Ok,
            result: Some(serde_json::json!({"x": 1})),
            error: None,
            truncated: false,
        }
    }

    #[tokio::test]
    async fn answers_reach_their_call_only_from_their_agent() {
        let calls = Calls::default();
        let mut call = calls.open("a").unwrap_or_else(|| unreachable!());
        assert!(
            !calls.complete("b", call.id, ok()),
            "another agent's answer"
        );
        assert!(calls.complete("a", call.id, ok()));
        assert!(!calls.complete("a", call.id, ok()), "answered once");
        assert_eq!(
            (&mut call.answer).await.map(|r| r.outcome).ok(),
            Some(ProbeOutcome::Ok)
        );
        assert_eq!(calls.in_flight(), 0);
    }

    #[test]
    fn a_late_answer_is_dropped_and_the_bounds_hold() {
        let calls = Calls::default();
        let id = calls.open("a").map(|c| c.id).unwrap_or_default();
        assert!(!calls.complete("a", id, ok()), "the caller gave up");
        let held: Vec<_> = (0..PER_AGENT).filter_map(|_| calls.open("a")).collect();
        assert_eq!(held.len(), PER_AGENT as usize);
        assert!(calls.open("a").is_none(), "per agent");
        assert!(calls.open("b").is_some(), "others are not held up");
        drop(held);
        assert!(calls.open("a").is_some());
        assert_eq!(calls.in_flight(), 0);
    }
}
