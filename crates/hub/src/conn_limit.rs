//! Connections, from accept to close: how many the hub holds (in all, and per
//! client address) and when an idle one is let go.
//!
//! Every connection takes a slot when accepted, before its TLS handshake, and gives
//! it back when it closes. Past `--max-connections-per-source` for its address, or
//! `--max-connections` in all, a new connection is closed unanswered: one client
//! cannot use up the open files everyone else (and the database) needs, and a flood
//! is refused at the door instead of making `accept` fail. The total defaults to the
//! open-files limit less room for the database and files. A connection that became
//! an agent's WebSocket session (which takes a valid agent key and certificate)
//! leaves its address's count, keeping only its place in the total: a fleet behind
//! one NAT address holds one session per machine, far more than the per-source cap.
//!
//! A connection with no request in flight for `--idle-timeout` is closed (HTTP/1
//! keep-alive and HTTP/2 alike, which hyper would otherwise keep forever); one that
//! switched protocols (an agent's WebSocket session) is never idle here, its session
//! keeps its own heartbeat watch. A streamed answer (server-sent events) keeps its
//! request in flight until its body ends, so a quiet stream is not idle either.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::http::{Request, Response, StatusCode};
use axum_server::accept::Accept;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Open files kept for everything that is not a client connection, as a share of
/// the limit: database connections, SQLite's files, the listener, the runtime.
const RESERVE_SHARE: u64 = 8;
const RESERVE_MIN: u64 = 64;
const RESERVE_MAX: u64 = 1024;
/// Assumed when the limit cannot be read: the usual soft limit.
const ASSUMED_OPEN_FILES: u64 = 1024;

/// The total connection cap for an open-files soft limit (`None`: unknown).
pub fn default_max_connections(open_files: Option<u64>) -> usize {
    let limit = open_files.unwrap_or(ASSUMED_OPEN_FILES);
    let reserve = (limit / RESERVE_SHARE)
        .clamp(RESERVE_MIN, RESERVE_MAX)
        .min(limit / 2);
    usize::try_from(limit - reserve)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// This process's soft limit on open files, from `/proc/self/limits` (Linux).
/// `None` when it cannot be read; "unlimited" reads as [`UNLIMITED_AS`].
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files(&limits)
}

/// What an unlimited open-files limit counts as: past a million connections the
/// hub's memory, not its descriptors, is what runs out.
const UNLIMITED_AS: u64 = 1 << 20;

fn parse_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
    {
        "unlimited" => Some(UNLIMITED_AS),
        n => n.parse().ok(),
    }
}

/// The connection counts, shared by the acceptor and every open connection.
pub struct ConnLimits {
    per_source: usize,
    total: usize,
    /// Proxies carry many clients: exempt from the per-source cap (the total still
    /// counts them).
    exempt: Vec<IpNet>,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
    /// When a refusal was last logged, so a flood does not flood the log too.
    last_warned: Option<Instant>,
}

/// A connection's place in the counts; dropping it gives the place back.
struct Slot {
    limits: Arc<ConnLimits>,
    /// The source it counts against; `None` for an exempt source or once it left.
    source: Mutex<Option<IpAddr>>,
}

impl ConnLimits {
    pub fn new(per_source: usize, total: usize, exempt: Vec<IpNet>) -> Arc<ConnLimits> {
        let total = total.max(1);
        Arc::new(ConnLimits {
            per_source: per_source.clamp(1, total),
            total,
            exempt,
            counts: Mutex::default(),
        })
    }

    pub fn total(&self) -> usize {
        self.total
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Counters stay consistent under a panic elsewhere: each update is one step.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a connection from `peer`, or `None` when it must be refused.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        let peer = peer.to_canonical();
        let source = (!self.exempt.iter().any(|n| n.contains(&peer)))
            .then(|| crate::rules::source_bucket(peer));
        let mut counts = self.counts();
        let refusal = if counts.total >= self.total {
            Some("the hub holds --max-connections connections")
        } else if source
            .is_some_and(|s| counts.by_source.get(&s).copied().unwrap_or(0) >= self.per_source)
        {
            Some("this address holds --max-connections-per-source connections")
        } else {
            None
        };
        if let Some(why) = refusal {
            let now = Instant::now();
            if counts
                .last_warned
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
            {
                counts.last_warned = Some(now);
                tracing::warn!(%peer, "connection refused: {why} (logged once a minute)");
            }
            return None;
        }
        counts.total += 1;
        if let Some(s) = source {
            *counts.by_source.entry(s).or_insert(0) += 1;
        }
        Some(Slot {
            limits: self.clone(),
            source: Mutex::new(source),
        })
    }
}

impl Slot {
    /// Stop counting against the source (the connection keeps its place in the total).
    fn leave_source(&self) {
        let left = self
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(s) = left {
            let mut counts = self.limits.counts();
            if let Some(n) = counts.by_source.get_mut(&s) {
                *n -= 1;
                if *n == 0 {
                    counts.by_source.remove(&s);
                }
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.leave_source();
        let mut counts = self.limits.counts();
        counts.total = counts.total.saturating_sub(1);
    }
}

/// What decides whether a connection is idle (requests in flight on it, whether it
/// switched protocols, and since when it has had nothing to do), and its slot, held
/// by both its stream and its service and given back when both are gone.
struct Activity {
    in_flight: AtomicUsize,
    upgraded: AtomicBool,
    quiet_since: Mutex<Instant>,
    slot: Slot,
}

impl Activity {
    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0 || self.upgraded.load(Ordering::Acquire)
    }

    fn quiet_since(&self) -> Instant {
        *self
            .quiet_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts a request in flight from its call until its response is produced (or the
/// request is abandoned).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self
            .0
            .quiet_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The acceptor in front of TLS: takes a slot for each connection or closes it, and
/// wraps the stream and service so the connection's idleness is known.
#[derive(Clone)]
pub struct LimitAcceptor<A> {
    inner: A,
    limits: Arc<ConnLimits>,
    idle_timeout: Duration,
}

impl<A> LimitAcceptor<A> {
    pub fn new(inner: A, limits: Arc<ConnLimits>, idle_timeout: Duration) -> Self {
        LimitAcceptor {
            inner,
            limits,
            idle_timeout,
        }
    }
}

type AcceptFuture<S> = Pin<Box<dyn Future<Output = io::Result<(Tracked, Busy<S>)>> + Send>>;

impl<A, S> Accept<TcpStream, S> for LimitAcceptor<A>
where
    A: Accept<TcpStream, S, Stream = TcpStream>,
    A::Future: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Tracked;
    type Service = Busy<A::Service>;
    type Future = AcceptFuture<A::Service>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let slot = match stream.peer_addr() {
            Ok(peer) => self.limits.admit(peer.ip()),
            Err(_) => None,
        };
        let Some(slot) = slot else {
            // Dropping the stream closes it before any TLS work is spent on it.
            return Box::pin(std::future::ready(Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "connection limit reached",
            ))));
        };
        let inner = self.inner.accept(stream, service);
        let idle_timeout = self.idle_timeout;
        Box::pin(async move {
            let (tcp, service) = inner.await?;
            let now = Instant::now();
            let activity = Arc::new(Activity {
                in_flight: AtomicUsize::new(0),
                upgraded: AtomicBool::new(false),
                quiet_since: Mutex::new(now),
                slot,
            });
            let stream = Tracked {
                tcp,
                activity: activity.clone(),
                idle_timeout,
                idle: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
            };
            Ok((
                stream,
                Busy {
                    inner: service,
                    activity,
                },
            ))
        })
    }
}

/// A client connection holding its slot, closed with an error from its next read
/// once it has been idle for the idle timeout.
pub struct Tracked {
    tcp: TcpStream,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
}

impl Tracked {
    /// Whether the idle timeout has passed; otherwise the timer is armed for the
    /// moment it could.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = Instant::now();
            let due = if self.activity.busy() {
                now + self.idle_timeout
            } else {
                self.activity.quiet_since() + self.idle_timeout
            };
            if due <= now {
                return true;
            }
            self.idle.as_mut().reset(due);
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Pending if this.idle_expired(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle",
            ))),
            other => other,
        }
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// The connection's service, counting its requests in flight and noting a switch
/// of protocols (101: an agent's session, authenticated), after which the
/// connection is never idle and no longer counts against its source.
#[derive(Clone)]
pub struct Busy<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> tower::Service<Request<B>> for Busy<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let in_flight = InFlight::new(self.activity.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            if let Ok(r) = &response
                && r.status() == StatusCode::SWITCHING_PROTOCOLS
            {
                in_flight.0.upgraded.store(true, Ordering::Release);
                in_flight.0.slot.leave_source();
            }
            let streamed = response.as_ref().is_ok_and(|r| {
                r.headers()
                    .get(axum::http::header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
            });
            if streamed {
                // The request stays in flight as long as its body is being sent.
                return response.map(|r| {
                    r.map(|body| {
                        Body::new(HeldBody {
                            inner: body,
                            _in_flight: in_flight,
                        })
                    })
                });
            }
            drop(in_flight);
            response
        })
    }
}

/// A response body that keeps its request counted in flight until it is dropped.
struct HeldBody {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for HeldBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_total_leaves_room_below_the_open_files_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63704                63704                processes \n\
                      Max open files            1024                 20000                files     \n";
        assert_eq!(parse_open_files(limits), Some(1024));
        assert_eq!(
            parse_open_files("Max open files  unlimited  unlimited  files"),
            Some(UNLIMITED_AS)
        );
        assert_eq!(default_max_connections(Some(1024)), 896);
        assert_eq!(default_max_connections(Some(20_000)), 18_976);
        assert_eq!(default_max_connections(Some(100)), 50);
        assert_eq!(default_max_connections(None), 896);
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn sources_are_counted_per_address_and_ipv6_per_64() {
        let limits = ConnLimits::new(2, 3, vec!["10.9.0.0/16".parse().unwrap()]);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = limits.admit(a).unwrap();
        let _s2 = limits.admit("::ffff:127.0.0.2".parse().unwrap()).unwrap();
        assert!(limits.admit(a).is_none(), "third from one address");
        drop(s1);
        let _s3 = limits.admit(a).unwrap();
        let _s4 = limits.admit("10.9.1.1".parse().unwrap()).unwrap();
        assert!(
            limits.admit("10.9.1.2".parse().unwrap()).is_none(),
            "over the total"
        );

        let limits = ConnLimits::new(1, 10, vec!["10.9.0.0/16".parse().unwrap()]);
        let _v6 = limits.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(
            limits.admit("2001:db8::2".parse().unwrap()).is_none(),
            "same /64"
        );
        assert!(limits.admit("2001:db8:0:1::1".parse().unwrap()).is_some());
        // A session leaves its source's count, keeping its place in the total.
        let limits = ConnLimits::new(1, 2, vec![]);
        let session = limits.admit(a).unwrap();
        session.leave_source();
        let _plain = limits.admit(a).unwrap();
        assert!(
            limits.admit("127.0.0.9".parse().unwrap()).is_none(),
            "over the total"
        );
        drop(session);
        assert!(limits.admit(a).is_none(), "the plain one still counts");

        let limits = ConnLimits::new(1, 10, vec!["10.9.0.0/16".parse().unwrap()]);
        let proxy: IpAddr = "10.9.1.1".parse().unwrap();
        let held: Vec<_> = (0..5).map(|_| limits.admit(proxy).unwrap()).collect();
        assert_eq!(held.len(), 5, "a trusted proxy is not capped per source");
    }
}
