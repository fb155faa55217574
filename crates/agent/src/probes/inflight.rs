//! Probes in flight in one session: the hub may ask for several at once, each runs
//! in its own task, and the answers come back through a bounded channel into the
//! session loop, which alone owns the socket.
//!
//! Invariants: at most [`MAX_IN_FLIGHT`] run at once (beyond that the hub hears
//! "busy" at once); every `probe` gets exactly one `probe_result` with its `id`
//! while the session lasts; dropping [`InFlight`] (the session ended) aborts the
//! probes still running. Results are never logged: they can hold secrets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use muster_proto::AgentMessage;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::{ProbeAnswer, ProbeSources, run};

/// Probes running at once in one session.
pub const MAX_IN_FLIGHT: usize = 4;
/// The longest a probe may run, whatever the hub asks (its own limit is 120 s).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

pub struct InFlight {
    sources: ProbeSources,
    limit: Arc<Semaphore>,
    tx: mpsc::Sender<AgentMessage>,
    rx: mpsc::Receiver<AgentMessage>,
    /// Owns the tasks, so they end with the session.
    tasks: JoinSet<()>,
}

impl InFlight {
    pub fn new(sources: ProbeSources) -> InFlight {
        InFlight::with_limit(sources, MAX_IN_FLIGHT)
    }

    fn with_limit(sources: ProbeSources, limit: usize) -> InFlight {
        // Each running probe holds a permit until its answer is queued, so the
        // channel never holds more answers than probes may run.
        let (tx, rx) = mpsc::channel(limit.max(1));
        InFlight {
            sources,
            limit: Arc::new(Semaphore::new(limit)),
            tx,
            rx,
            tasks: JoinSet::new(),
        }
    }

    /// Start the probe the hub asked for; `Some` is an answer to send now (refused:
    /// too many already running), `None` means it will arrive through [`Self::next`].
    pub fn start(
        &mut self,
        id: u64,
        probe: String,
        params: BTreeMap<String, String>,
        timeout_ms: u64,
    ) -> Option<AgentMessage> {
        let Ok(permit) = Arc::clone(&self.limit).try_acquire_owned() else {
            tracing::debug!(id, %probe, "probe refused: too many at once");
            return Some(answer(
                id,
                ProbeAnswer::error("busy: too many probes at once"),
            ));
        };
        let sources = self.sources.clone();
        let tx = self.tx.clone();
        let timeout = Duration::from_millis(timeout_ms).min(MAX_TIMEOUT);
        self.tasks.spawn(async move {
            let result = run(&sources, &probe, &params, timeout).await;
            tracing::debug!(id, %probe, outcome = ?result.outcome, "probe answered");
            // Gone only when the session ended: nobody is waiting any more.
            let _ = tx.send(answer(id, result)).await;
            drop(permit);
        });
        None
    }

    /// The next answer ready to send; pending while none is.
    pub async fn next(&mut self) -> AgentMessage {
        loop {
            tokio::select! {
                // Reap finished tasks so the set does not grow over a long session.
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                Some(msg) = self.rx.recv() => return msg,
            }
        }
    }
}

fn answer(id: u64, a: ProbeAnswer) -> AgentMessage {
    AgentMessage::ProbeResult {
        id,
        outcome: a.outcome,
        result: a.result,
        error: a.error,
        truncated: a.truncated,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use muster_proto::ProbeOutcome;

    fn outcome(msg: &AgentMessage) -> (u64, ProbeOutcome, Option<String>) {
        match msg {
            AgentMessage::ProbeResult {
                id, outcome, error, ..
            } => (*id, *outcome, error.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn answers_carry_their_id_and_a_fifth_is_busy() {
        let mut probes = InFlight::new(ProbeSources::default());
        // system.load takes its CPU sample: four are still running when the fifth comes.
        for id in 1..=4 {
            assert!(
                probes
                    .start(id, "system.load".into(), BTreeMap::new(), 10_000)
                    .is_none()
            );
        }
        let busy = probes
            .start(5, "system.info".into(), BTreeMap::new(), 10_000)
            .unwrap();
        assert_eq!(
            outcome(&busy),
            (
                5,
                ProbeOutcome::Error,
                Some("busy: too many probes at once".into())
            )
        );
        let mut ids = Vec::new();
        for _ in 0..4 {
            let (id, outcome, _) = outcome(&probes.next().await);
            assert_eq!(outcome, ProbeOutcome::Ok);
            ids.push(id);
        }
        ids.sort();
        assert_eq!(ids, [1, 2, 3, 4]);
        // Permits are back.
        assert!(
            probes
                .start(6, "system.nope".into(), BTreeMap::new(), 1000)
                .is_none()
        );
        let (id, outcome, error) = outcome(&probes.next().await);
        assert_eq!((id, outcome), (6, ProbeOutcome::Error));
        assert_eq!(error.as_deref(), Some("unknown probe \"system.nope\""));
    }
}
