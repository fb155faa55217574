//! The bounded handshake queue (SPEC §12 "a hub restart is not a storm").
//!
//! A TLS handshake is the most expensive thing an unauthenticated peer can make the
//! hub do (an ECDSA signature, a certificate check, key agreement: about a
//! millisecond of CPU and tens of KiB while it runs). When a crashed hub comes back
//! its whole fleet retries within seconds; run all at once, those handshakes share
//! the CPU until each takes longer than its client waits, every one is wasted, and
//! the memory of all of them is held at the same time. So at most
//! `--max-handshakes` run at once. A connection takes a slot only once its peer has
//! spoken (its ClientHello arrived; silent ones are closed after [`HELLO_WAIT`]);
//! until then, and while no slot is free (at most [`MAX_WAIT`]), it waits in a
//! queue of eight places per slot. One source address (IPv6: one /64;
//! `--trusted-proxy` addresses exempt) may hold as many places as there are slots,
//! and a quarter of the slots, so a few peers that connect and stall cannot hold
//! every place or every slot, while a fleet behind one NAT address still gets
//! handshakes at the CPU's pace. Past the queue, its source's places or its waits, a
//! connection is closed at once, unanswered. That costs nothing, and the agent's
//! jittered backoff (1–2 s, then doubling) brings it back when there is room: the
//! TCP equivalent of a `Retry-After`. Handshakes in flight and waiting are bounded,
//! so the hub's memory is, however many come.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum_server::accept::Accept;
use ipnet::IpNet;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// How long a connection may wait for a handshake slot before it is closed.
pub const MAX_WAIT: Duration = Duration::from_secs(2);
/// How long a new connection may stay silent before it is closed: a TLS client
/// sends its ClientHello as soon as it is connected.
pub const HELLO_WAIT: Duration = Duration::from_secs(5);
/// How often a connection whose source holds its share of the slots looks again.
const SHARE_RETRY: Duration = Duration::from_millis(10);
/// Connections waiting per handshake slot.
const QUEUE_PER_SLOT: usize = 8;

pub struct Handshakes {
    slots: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Connections one source may have waiting or handshaking (as many as there
    /// are slots), and slots it may hold (a quarter of them).
    places_per_source: usize,
    slots_per_source: usize,
    exempt: Vec<IpNet>,
    /// Per source: (places, slots) held.
    by_source: Mutex<HashMap<IpAddr, (usize, usize)>>,
    /// Connections closed because the queue was full or the wait too long.
    pub refused: AtomicU64,
}

impl Handshakes {
    pub fn new(in_flight: usize, exempt: Vec<IpNet>) -> Arc<Handshakes> {
        let in_flight = in_flight.max(1);
        Arc::new(Handshakes {
            slots: Semaphore::new(in_flight),
            waiting: AtomicUsize::new(0),
            max_waiting: in_flight * QUEUE_PER_SLOT,
            places_per_source: in_flight,
            slots_per_source: (in_flight / 4).max(1),
            exempt,
            by_source: Mutex::default(),
            refused: AtomicU64::new(0),
        })
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (usize, usize)>> {
        self.by_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Count a connection against its source, or `None` past the source's places.
    fn hold_source(self: &Arc<Self>, peer: IpAddr) -> Option<SourceHold> {
        let peer = peer.to_canonical();
        if self.exempt.iter().any(|n| n.contains(&peer)) {
            return Some(SourceHold(self.clone(), None, false));
        }
        let source = crate::rules::source_bucket(peer);
        let mut by_source = self.sources();
        let held = by_source.entry(source).or_insert((0, 0));
        if held.0 >= self.places_per_source {
            return None;
        }
        held.0 += 1;
        Some(SourceHold(self.clone(), Some(source), false))
    }

    /// Whether `hold`'s source may take one more slot; counts it when so.
    fn take_source_slot(&self, hold: &mut SourceHold) -> bool {
        let Some(source) = hold.1 else {
            return true;
        };
        let mut by_source = self.sources();
        let Some(held) = by_source.get_mut(&source) else {
            return false;
        };
        if held.1 >= self.slots_per_source {
            return false;
        }
        held.1 += 1;
        hold.2 = true;
        true
    }

    /// Take a place in the queue, or `None` when it is full.
    fn enqueue(self: &Arc<Self>) -> Option<Waiting> {
        let mut now = self.waiting.load(Ordering::Relaxed);
        loop {
            if now >= self.max_waiting {
                return None;
            }
            match self.waiting.compare_exchange_weak(
                now,
                now + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Waiting(self.clone())),
                Err(seen) => now = seen,
            }
        }
    }

    fn refuse(&self) -> io::Error {
        self.refused.fetch_add(1, Ordering::Relaxed);
        io::Error::new(io::ErrorKind::ConnectionRefused, "handshake queue full")
    }

    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP muster_handshakes_waiting Connections waiting for a TLS handshake slot.\n\
             # TYPE muster_handshakes_waiting gauge\n\
             muster_handshakes_waiting {}\n\
             # HELP muster_handshakes_refused_total Connections closed unanswered: the handshake queue was full.\n\
             # TYPE muster_handshakes_refused_total counter\n\
             muster_handshakes_refused_total {}\n",
            self.waiting.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed)
        )
    }
}

/// A connection counted against its source until its handshake ends: its place,
/// and its slot once it has one (`.2`).
struct SourceHold(Arc<Handshakes>, Option<IpAddr>, bool);

impl Drop for SourceHold {
    fn drop(&mut self) {
        if let Some(source) = self.1 {
            let mut by_source = self.0.sources();
            if let Some(held) = by_source.get_mut(&source) {
                held.0 -= 1;
                if self.2 {
                    held.1 -= 1;
                }
                if held.0 == 0 {
                    by_source.remove(&source);
                }
            }
        }
    }
}

/// A place in the queue, given back however the wait ends.
struct Waiting(Arc<Handshakes>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The outermost acceptor: a handshake slot first, then the inner acceptors (the
/// connection limits, then TLS), the slot held until the handshake is done.
#[derive(Clone)]
pub struct GateAcceptor<A> {
    inner: A,
    handshakes: Arc<Handshakes>,
}

impl<A> GateAcceptor<A> {
    pub fn new(inner: A, handshakes: Arc<Handshakes>) -> Self {
        GateAcceptor { inner, handshakes }
    }
}

type GateFuture<T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send>>;

impl<A, S> Accept<TcpStream, S> for GateAcceptor<A>
where
    A: Accept<TcpStream, S> + Clone + Send + Sync + 'static,
    A::Future: Send + 'static,
    A::Stream: Send,
    A::Service: Send,
    S: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = GateFuture<(A::Stream, A::Service)>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let handshakes = self.handshakes.clone();
        // Refusing drops the stream, which closes it before any TLS work is spent.
        let held = match stream.peer_addr() {
            Ok(peer) => handshakes.hold_source(peer.ip()),
            Err(_) => None,
        };
        let Some(mut held) = held else {
            let err = handshakes.refuse();
            return Box::pin(std::future::ready(Err(err)));
        };
        let Some(place) = handshakes.enqueue() else {
            let err = handshakes.refuse();
            return Box::pin(std::future::ready(Err(err)));
        };
        let inner = self.inner.clone();
        Box::pin(async move {
            // A slot only once the peer has spoken (its ClientHello is here): one
            // that connects and says nothing holds a place in the queue, not a slot.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(HELLO_WAIT, stream.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                return Err(handshakes.refuse());
            }
            // A free slot, and room in its source's share of the slots: a source
            // at its share waits in the queue like anyone else.
            let deadline = tokio::time::Instant::now() + MAX_WAIT;
            loop {
                let acquired = tokio::time::timeout_at(deadline, handshakes.slots.acquire())
                    .await
                    .map(|r| r.map(|p| p.forget()));
                if !matches!(acquired, Ok(Ok(()))) {
                    return Err(handshakes.refuse());
                }
                if handshakes.take_source_slot(&mut held) {
                    break;
                }
                handshakes.slots.add_permits(1);
                if tokio::time::Instant::now() >= deadline {
                    return Err(handshakes.refuse());
                }
                tokio::time::sleep(SHARE_RETRY).await;
            }
            drop(place);
            let _held = (held, Slot(handshakes));
            inner.accept(stream, service).await
        })
    }
}

/// A handshake slot, given back when the handshake ends (done, failed or timed out).
struct Slot(Arc<Handshakes>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.slots.add_permits(1);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_queue_holds_eight_per_slot_and_gives_places_back() {
        let h = Handshakes::new(2, Vec::new());
        let places: Vec<_> = (0..16).map(|_| h.enqueue().unwrap()).collect();
        assert!(h.enqueue().is_none(), "a seventeenth waits nowhere");
        drop(places);
        assert_eq!(h.waiting.load(Ordering::Relaxed), 0);
        assert!(h.enqueue().is_some());
    }

    #[test]
    fn one_source_gets_as_many_places_as_slots_and_a_quarter_of_the_slots() {
        let proxy: IpNet = "10.0.0.1/32".parse().unwrap();
        let h = Handshakes::new(8, vec![proxy]);
        let one: IpAddr = [192, 0, 2, 1].into();
        let mut holds: Vec<_> = (0..8).map(|_| h.hold_source(one).unwrap()).collect();
        assert!(
            h.hold_source(one).is_none(),
            "a ninth from one address waits nowhere"
        );
        assert!(
            h.hold_source([192, 0, 2, 2].into()).is_some(),
            "others are not held back"
        );
        assert!(h.take_source_slot(&mut holds[0]));
        assert!(h.take_source_slot(&mut holds[1]));
        assert!(
            !h.take_source_slot(&mut holds[2]),
            "a third slot for one address"
        );
        drop(holds.remove(0));
        assert!(
            h.take_source_slot(&mut holds[1]),
            "a slot given back is taken again"
        );
        let mut proxied: Vec<_> = (0..20)
            .map(|_| h.hold_source([10, 0, 0, 1].into()).unwrap())
            .collect();
        assert!(proxied.iter_mut().all(|p| h.take_source_slot(p)));
        drop(holds);
        assert!(h.hold_source(one).is_some());
    }
}
