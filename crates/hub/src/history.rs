//! The queue of session history writes (a session opened, a session closed), which
//! the session tasks fill and one writer task (`sessions::history_loop`) commits in
//! batches: thousands of agents reconnecting after a restart make a few
//! transactions, not one per agent.
//!
//! Invariant: bounded. Past [`MAX_QUEUED`] waiting writes new ones are dropped and
//! counted; history is worth less than the sessions it describes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use muster_store::SessionWrite;
use tokio::sync::mpsc;

/// Writes that may wait at once (about 200 bytes each).
pub const MAX_QUEUED: usize = 20_000;

pub struct HistoryQueue {
    tx: mpsc::Sender<SessionWrite>,
    /// Taken once by the writer task when the hub starts serving.
    rx: Mutex<Option<mpsc::Receiver<SessionWrite>>>,
    /// Writes dropped because the queue was full.
    pub dropped: AtomicU64,
}

impl Default for HistoryQueue {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(MAX_QUEUED);
        HistoryQueue {
            tx,
            rx: Mutex::new(Some(rx)),
            dropped: AtomicU64::new(0),
        }
    }
}

impl HistoryQueue {
    /// Queue a write; never waits.
    pub fn push(&self, write: SessionWrite) {
        if self.tx.try_send(write).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The `/metrics` line about dropped writes.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP muster_session_history_dropped_total Session history writes dropped: the queue was full.\n\
             # TYPE muster_session_history_dropped_total counter\n\
             muster_session_history_dropped_total {}\n",
            self.dropped.load(Ordering::Relaxed)
        )
    }

    /// The receiving end, for the one writer task (`None` once taken).
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<SessionWrite>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}
