//! Bounded concurrency for expensive work an unauthenticated peer can trigger:
//! password hashing (argon2id, ~19 MiB and ~20 ms each). Without a bound, a hundred
//! parallel wrong logins took a hub from 15 MB to 2 GB; with it, memory stays flat
//! however many arrive, and the excess is told to come back.
//!
//! The jobs run on a few threads of their own, each lending its job one scratch
//! buffer for argon2's memory that lives as long as the thread. Allocating 19 MiB
//! per hash instead left the freed blocks spread over the allocator's per-thread
//! arenas: a 100-login burst grew the hub by 550 MiB even with two hashes at a
//! time. With the buffers reused, the hub holds `slots × 19 MiB` however many come.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiFailure, ApiResult};

/// How long a caller waits for a slot before it is told to retry.
const WAIT: Duration = Duration::from_secs(5);

/// Memory a hashing thread lends to each of its jobs (argon2's blocks), kept for
/// the thread's life.
pub type Scratch = Vec<argon2::Block>;

type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

/// At most `slots` jobs run at once, each on one of `slots` threads kept for them,
/// and at most `max_waiting` wait for a turn.
pub struct WorkSlots {
    /// Shared with the jobs: a permit is released when its job ends, not when its
    /// caller stops waiting (a client that hangs up must not free a slot whose
    /// hash is still running).
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Jobs for the threads; dropping it (with the hub's state) ends them.
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl WorkSlots {
    pub fn new(slots: usize, max_waiting: usize) -> Self {
        let slots = slots.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..slots {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("muster-hash-{i}"))
                .spawn(move || {
                    let mut scratch = Scratch::new();
                    loop {
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job(&mut scratch),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        WorkSlots {
            slots: Arc::new(Semaphore::new(slots)),
            waiting: AtomicUsize::new(0),
            max_waiting,
            jobs: Mutex::new(tx),
        }
    }

    /// One slot per core: hashing is CPU-bound, so more at once only adds memory.
    pub fn per_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores, 16 * cores)
    }

    /// Run `job` on one of the slots' threads once a slot is free; 503 with
    /// `Retry-After` when too many wait already or no slot frees up in time.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Scratch) -> T + Send + 'static,
    ) -> ApiResult<T> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let Some(_waiting) = Waiting::enter(&self.waiting, self.max_waiting) else {
                    return Err(busy());
                };
                match tokio::time::timeout(WAIT, self.slots.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => return Err(busy()),
                }
            }
        };
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |scratch| {
            let _ = done.send(job(scratch));
            drop(permit);
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        if sent.is_err() {
            return Err(ApiFailure::internal(
                "password hashing is unavailable",
                &"its threads ended",
            ));
        }
        // A permit per queued or running job and a thread per permit: the job
        // starts at once.
        result
            .await
            .map_err(|e| ApiFailure::internal("a password hash job failed", &e))
    }
}

/// One caller in the waiting room, counted out however its wait ends (a slot, a
/// timeout, or a client that hung up).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize, max: usize) -> Option<Self> {
        if count.fetch_add(1, Ordering::AcqRel) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Waiting(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn busy() -> ApiFailure {
    ApiFailure::unavailable(
        "the hub is busy checking other logins; retry shortly",
        Some(rand::random_range(1..=3)),
    )
}

/// Requests in flight per caller (the MCP endpoint's: `mcp::PER_KEY` each). An
/// entry lives while a request of that caller does, so the map holds at most the
/// callers active right now.
pub struct CallerSlots {
    per: usize,
    by_caller: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// One request's turn; frees its caller's entry when it was the last.
pub struct CallerSlot<'a> {
    slots: &'a CallerSlots,
    caller: String,
    permit: Option<OwnedSemaphorePermit>,
}

impl CallerSlots {
    pub fn new(per: usize) -> Self {
        CallerSlots {
            per,
            by_caller: Mutex::default(),
        }
    }

    /// Callers with a request in flight.
    #[cfg(test)]
    pub fn active(&self) -> usize {
        self.by_caller
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// A turn for `caller`, or `None` when it has `per` in flight already.
    pub fn take(&self, caller: &str) -> Option<CallerSlot<'_>> {
        let sem = {
            let mut map = self.by_caller.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(caller.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per)))
                .clone()
        };
        let permit = sem.try_acquire_owned().ok()?;
        Some(CallerSlot {
            slots: self,
            caller: caller.to_owned(),
            permit: Some(permit),
        })
    }
}

impl Drop for CallerSlot<'_> {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut map = self
            .slots
            .by_caller
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Only the map holds the semaphore and none of its permits is out: idle.
        if map
            .get(&self.caller)
            .is_some_and(|s| Arc::strong_count(s) == 1 && s.available_permits() == self.slots.per)
        {
            map.remove(&self.caller);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn the_excess_is_refused_not_queued_without_bound() {
        let slots = std::sync::Arc::new(WorkSlots::new(1, 2));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let mut running = Vec::new();
        for _ in 0..3 {
            let (slots, rx) = (slots.clone(), rx.clone());
            running.push(tokio::spawn(async move {
                slots
                    .run(move |_| {
                        let _ = rx.lock().map(|r| r.recv());
                    })
                    .await
            }));
        }
        // One runs and two wait: the fourth finds the waiting room full.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = slots.run(|_| ()).await;
        assert_eq!(
            refused.err().map(|f| f.status),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        for _ in 0..3 {
            tx.send(()).unwrap();
        }
        for r in running {
            assert!(r.await.unwrap().is_ok());
        }
    }

    #[tokio::test]
    async fn a_caller_that_hangs_up_keeps_its_slot_until_the_job_ends() {
        let slots = std::sync::Arc::new(WorkSlots::new(1, 2));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let caller = tokio::spawn({
            let slots = slots.clone();
            async move {
                slots
                    .run(move |_| {
                        let _ = rx.recv();
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        caller.abort();
        let _ = caller.await;
        // The hash is still running: its slot is still taken.
        assert_eq!(slots.slots.available_permits(), 0);
        tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(slots.slots.available_permits(), 1);
        assert_eq!(slots.waiting.load(Ordering::Acquire), 0);
    }
}
