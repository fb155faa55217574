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
//! `--trusted-proxy` addresses exempt) may hold a quarter of the slots' number in
//! the queue and the slots together, so a few peers that connect and stall cannot
//! hold every place. Past the queue, its source's share or its waits, a connection
//! is closed at once, unanswered. That costs nothing, and the agent's
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
/// Connections waiting per handshake slot.
const QUEUE_PER_SLOT: usize = 8;

pub struct Handshakes {
    slots: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Connections one source may have waiting or handshaking.
    per_source: usize,
    exempt: Vec<IpNet>,
    by_source: Mutex<HashMap<IpAddr, usize>>,
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
            per_source: (in_flight / 4).max(1),
            exempt,
            by_source: Mutex::default(),
            refused: AtomicU64::new(0),
        })
    }

    /// Count a handshake against its source, or `None` past the source's share.
    fn hold_source(self: &Arc<Self>, peer: IpAddr) -> Option<SourceHold> {
        let peer = peer.to_canonical();
        if self.exempt.iter().any(|n| n.contains(&peer)) {
            return Some(SourceHold(self.clone(), None));
        }
        let source = crate::rules::source_bucket(peer);
        let mut by_source = self
            .by_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = by_source.entry(source).or_insert(0);
        if *n >= self.per_source {
            return None;
        }
        *n += 1;
        Some(SourceHold(self.clone(), Some(source)))
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

/// A handshake counted against its source until it ends.
struct SourceHold(Arc<Handshakes>, Option<IpAddr>);

impl Drop for SourceHold {
    fn drop(&mut self) {
        if let Some(source) = self.1 {
            let mut by_source = self
                .0
                .by_source
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = by_source.get_mut(&source) {
                *n -= 1;
                if *n == 0 {
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
        let Some(held) = held else {
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
            let acquired = tokio::time::timeout(MAX_WAIT, handshakes.slots.acquire())
                .await
                .map(|r| r.map(|p| p.forget()));
            drop(place);
            if !matches!(acquired, Ok(Ok(()))) {
                return Err(handshakes.refuse());
            }
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
    fn one_source_gets_a_quarter_of_the_slots_and_proxies_are_exempt() {
        let proxy: IpNet = "10.0.0.1/32".parse().unwrap();
        let h = Handshakes::new(8, vec![proxy]);
        let one: IpAddr = [192, 0, 2, 1].into();
        let holds: Vec<_> = (0..2).map(|_| h.hold_source(one).unwrap()).collect();
        assert!(
            h.hold_source(one).is_none(),
            "a third from one address waits nowhere"
        );
        assert!(
            h.hold_source([192, 0, 2, 2].into()).is_some(),
            "others are not held back"
        );
        let proxied: Vec<_> = (0..20)
            .map(|_| h.hold_source([10, 0, 0, 1].into()))
            .collect();
        assert!(proxied.iter().all(Option::is_some));
        drop(holds);
        assert!(h.hold_source(one).is_some());
    }
}
