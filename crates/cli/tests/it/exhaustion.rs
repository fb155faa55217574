//! A hub under slow, stalled, idle, oversized or piled-up connections keeps its
//! files and keeps answering everyone else; and whatever goes wrong with a request,
//! the answer is our JSON error. Spoken byte by byte over real TLS (HTTP/1.1 and
//! HTTP/2), since the clients Muster ships never misbehave like this.
//!
//! These exercise the hub's HTTP layer, not its database: they run on SQLite only.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use muster_client::{ClientIdentity, EnrollOutcome, connect_session};
use muster_hub::HubOptions;
use muster_proto::{AgentHealth, AgentMessage, ApiError, CreateTokenRequest, HubMessage};
use muster_testkit::{Backend, TestHub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use crate::request;

type Tls = muster_testkit::RawTls;

const H1: &[u8] = b"http/1.1";
const H2: &[u8] = b"h2";

const BIG: usize = 2_600_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn hub_with(tune: impl FnOnce(&mut HubOptions)) -> TestHub {
    TestHub::start_with(&Backend::Sqlite, tune).await
}

/// A raw connection and what has been read from it but not consumed yet.
struct Conn {
    tls: Tls,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The error code of a JSON error body, or a panic saying what came instead.
    fn code(&self) -> String {
        let e: ApiError = serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "HTTP {} with a body that is not a JSON error: {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        });
        e.error.code
    }
}

impl Conn {
    async fn open(hub: &TestHub, from: &str, alpn: &[u8]) -> std::io::Result<Conn> {
        let tls = timeout(Duration::from_secs(10), hub.raw_tls(ip(from), &[alpn]))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        Ok(Conn {
            tls,
            buf: Vec::new(),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes).await?;
        self.tls.flush().await
    }

    /// Read more bytes into the buffer; false at the end of the stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.tls.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    async fn take(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// The next HTTP/1.1 response (interim ones included), within ten seconds.
    async fn response(&mut self) -> std::io::Result<Response> {
        timeout(Duration::from_secs(10), self.read_response())
            .await
            .map_err(|_| std::io::Error::other("no response within 10 s"))?
    }

    async fn read_response(&mut self) -> std::io::Result<Response> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        };
        let head = String::from_utf8_lossy(&self.take(end + 4).await?).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let body = self.take(len).await?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

// ---- every error is JSON ----

#[tokio::test]
async fn query_method_and_header_errors_are_json() {
    let hub = hub_with(|_| {}).await;
    let admin = format!("Authorization: Bearer {}\r\n", hub.admin_key);
    let ask = |head: String| {
        let hub = &hub;
        async move {
            let mut c = Conn::open(hub, "127.0.0.1", H1).await.unwrap();
            c.send(head.as_bytes()).await.unwrap();
            c.response().await.unwrap()
        }
    };

    let r = ask(format!(
        "GET /api/v1/agents?limit=abc HTTP/1.1\r\nHost: hub\r\n{admin}\r\n"
    ))
    .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request".to_owned()));
    let r = ask(format!(
        "GET /api/v1/audit?limit=many HTTP/1.1\r\nHost: hub\r\n{admin}\r\n"
    ))
    .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request".to_owned()));

    let r = ask("DELETE /healthz HTTP/1.1\r\nHost: hub\r\n\r\n".to_owned()).await;
    assert_eq!((r.status, r.code()), (405, "method_not_allowed".to_owned()));
    assert!(
        r.header("allow").is_some_and(|a| a.contains("GET")),
        "{r:?}"
    );

    // Session requests that are not proper WebSocket upgrades (axum's own refusals).
    let (agent, _) = crate::enrolled(&hub, "plain").await;
    let key = agent.dir.load().unwrap().unwrap().config.agent_key;
    let session = format!(
        "GET /api/v1/agent/session HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {key}\r\n"
    );
    let r = ask(format!("{session}\r\n")).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request".to_owned()));
    assert!(
        String::from_utf8_lossy(&r.body).contains("upgrade"),
        "{r:?}"
    );
    let r = ask(format!(
        "{session}Connection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ))
    .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request".to_owned()));

    // A body with a content type that is not JSON.
    let r = ask("POST /api/v1/login HTTP/1.1\r\nHost: hub\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}".to_owned()).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request".to_owned()));
    hub.stop().await;
}

impl Conn {
    /// Whether the hub closed the connection within `within` (anything it sends
    /// meanwhile is skipped).
    async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Err(_) => return false,
                Ok(Ok(true)) => self.buf.clear(),
                Ok(Ok(false)) | Ok(Err(_)) => return true,
            }
        }
    }
}

// ---- a minimal HTTP/2 client: enough frames to make one request and wait ----

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK header block of literals without indexing (no Huffman), for a request
/// `method path` with extra `(static table index, value)` headers.
fn h2_request_headers(method: &str, path: &str, extra: &[(u8, &str)]) -> Vec<u8> {
    fn literal(block: &mut Vec<u8>, index: u8, value: &str) {
        if index < 15 {
            block.push(index);
        } else {
            block.extend_from_slice(&[0x0f, index - 15]);
        }
        assert!(value.len() < 127);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    let mut block = vec![if method == "POST" { 0x83 } else { 0x82 }, 0x87];
    literal(&mut block, 4, path);
    literal(&mut block, 1, "127.0.0.1");
    for (index, value) in extra {
        literal(&mut block, *index, value);
    }
    block
}

impl Conn {
    async fn h2_start(&mut self) -> std::io::Result<()> {
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        self.send(&hello).await
    }

    async fn h2_frame(&mut self) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
        let head = self.take(9).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let payload = self.take(len).await?;
        // Acknowledge what HTTP/2 requires acknowledging, as any client would.
        if head[3] == SETTINGS && head[4] & 1 == 0 {
            self.send(&frame(SETTINGS, 1, 0, &[])).await?;
        }
        if head[3] == PING && head[4] & 1 == 0 {
            self.send(&frame(PING, 1, 0, &payload)).await?;
        }
        Ok((head[3], head[4], stream, payload))
    }

    /// The body of the answer on `stream` (its DATA frames up to END_STREAM).
    async fn h2_body(&mut self, stream: u32) -> std::io::Result<Vec<u8>> {
        let read = async {
            let mut body = Vec::new();
            loop {
                let (kind, flags, on, payload) = self.h2_frame().await?;
                if on != stream {
                    continue;
                }
                if kind == DATA {
                    body.extend_from_slice(&payload);
                }
                if (kind == DATA || kind == HEADERS) && flags & END_STREAM != 0 {
                    return Ok(body);
                }
            }
        };
        timeout(Duration::from_secs(10), read)
            .await
            .map_err(|_| std::io::Error::other("no HTTP/2 answer within 10 s"))?
    }
}

fn json_code(body: &[u8]) -> String {
    serde_json::from_slice::<ApiError>(body)
        .unwrap_or_else(|_| panic!("not a JSON error: {:?}", String::from_utf8_lossy(body)))
        .error
        .code
}

// ---- stalled bodies and idle connections ----

#[tokio::test]
async fn a_body_that_stalls_gets_408_and_its_connection_is_closed() {
    let hub = hub_with(|o| o.request_body_timeout = Duration::from_secs(1)).await;
    let started = Instant::now();
    // HTTP/1.1: headers and `{`, then nothing, as the 2,000 that held a hub open did.
    let mut c = Conn::open(&hub, "127.0.0.1", H1).await.unwrap();
    c.send(b"POST /api/v1/enroll HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let r = c.response().await.unwrap();
    assert_eq!((r.status, r.code()), (408, "request_timeout".to_owned()));
    assert!(
        c.closed_within(Duration::from_secs(3)).await,
        "still open after the 408"
    );

    // HTTP/2: the same stall on one stream.
    let mut c = Conn::open(&hub, "127.0.0.1", H2).await.unwrap();
    c.h2_start().await.unwrap();
    let head = h2_request_headers(
        "POST",
        "/api/v1/enroll",
        &[(28, "100"), (31, "application/json")],
    );
    c.send(&frame(HEADERS, END_HEADERS, 1, &head))
        .await
        .unwrap();
    c.send(&frame(DATA, 0, 1, b"{")).await.unwrap();
    assert_eq!(json_code(&c.h2_body(1).await.unwrap()), "request_timeout");
    assert!(started.elapsed() < Duration::from_secs(8));
    // (HTTP/2 keeps the connection for its other streams; a graceful stop would
    // wait for this client to hang up.)
    drop(c);

    // The hub still answers.
    hub.anonymous().healthz().await.unwrap();
    hub.stop().await;
}

// ---- oversized bodies ----

fn oversized_head(extra: &str) -> Vec<u8> {
    format!(
        "POST /api/v1/enroll HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n{extra}\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn an_oversized_body_announced_with_expect_gets_413_before_100_continue() {
    let hub = hub_with(|_| {}).await;
    let body = vec![b' '; BIG];
    for i in 0..20 {
        let mut c = Conn::open(&hub, "127.0.0.1", H1).await.unwrap();
        c.send(&oversized_head(&format!(
            "Content-Length: {BIG}\r\nExpect: 100-continue\r\n"
        )))
        .await
        .unwrap();
        let mut r = c.response().await.unwrap();
        let first = r.status;
        if r.status == 100 {
            // What curl does on a 100: send the body, then read the answer.
            let _ = c.send(&body).await;
            r = c
                .response()
                .await
                .unwrap_or_else(|e| panic!("round {i}: the 413 was lost: {e}"));
        }
        assert_eq!(
            (first, r.status, r.code()),
            (413, 413, "payload_too_large".to_owned()),
            "round {i}"
        );
    }
    hub.stop().await;
}

#[tokio::test]
async fn an_oversized_body_sent_without_waiting_still_gets_its_413() {
    let hub = hub_with(|_| {}).await;
    let mut chunked = Vec::new();
    for piece in vec![b' '; BIG].chunks(16 * 1024) {
        chunked.extend(format!("{:x}\r\n", piece.len()).into_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let cases = [
        (format!("Content-Length: {BIG}\r\n"), vec![b' '; BIG]),
        ("Transfer-Encoding: chunked\r\n".to_owned(), chunked),
    ];
    for (extra, body) in &cases {
        for i in 0..10 {
            // A simple client: the whole request first, then the answer.
            let mut c = Conn::open(&hub, "127.0.0.1", H1).await.unwrap();
            let mut all = oversized_head(extra);
            all.extend_from_slice(body);
            let sent = c.send(&all).await;
            let r = c
                .response()
                .await
                .unwrap_or_else(|e| panic!("{extra:?} round {i}: no 413 ({e}; sending: {sent:?})"));
            assert_eq!(
                (r.status, r.code()),
                (413, "payload_too_large".to_owned()),
                "{extra:?} round {i}"
            );
        }
    }
    hub.stop().await;
}

impl Conn {
    /// Whether this connection is still served: a `/healthz` on it is answered.
    async fn healthy(&mut self) -> bool {
        let sent = self
            .send(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
            .await;
        sent.is_ok() && self.response().await.is_ok_and(|r| r.status == 200)
    }
}

#[tokio::test]
async fn idle_connections_are_closed_over_http1_and_http2() {
    let hub = hub_with(|o| o.idle_timeout = Duration::from_secs(1)).await;

    let mut c = Conn::open(&hub, "127.0.0.1", H1).await.unwrap();
    assert!(c.healthy().await);
    assert!(
        c.closed_within(Duration::from_secs(4)).await,
        "an idle HTTP/1.1 connection stayed open"
    );

    let mut c = Conn::open(&hub, "127.0.0.1", H2).await.unwrap();
    c.h2_start().await.unwrap();
    let head = h2_request_headers("GET", "/healthz", &[]);
    c.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &head))
        .await
        .unwrap();
    let body = c.h2_body(1).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("ok"), "{body:?}");
    assert!(
        c.closed_within(Duration::from_secs(4)).await,
        "an idle HTTP/2 connection stayed open"
    );

    // A connection kept busy is not idle: requests spaced well below the timeout.
    let mut c = Conn::open(&hub, "127.0.0.1", H1).await.unwrap();
    for _ in 0..4 {
        assert!(c.healthy().await, "a busy connection was closed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    hub.stop().await;
}

fn hello(generation: i64) -> AgentMessage {
    AgentMessage::Hello {
        protocol_version: muster_proto::PROTOCOL_VERSION,
        agent_version: "test".into(),
        packs: vec![],
        facts: None,
        generation,
        catalog: vec![],
    }
}

#[tokio::test]
async fn an_agent_session_is_not_an_idle_connection() {
    let hub = hub_with(|o| o.idle_timeout = Duration::from_secs(1)).await;
    let (agent, _) = crate::enrolled(&hub, "quiet").await;
    let creds = agent.dir.load().unwrap().unwrap();
    let id = ClientIdentity {
        cert_pem: creds.cert_pem.clone(),
        key_pem: creds.key_pem.clone(),
    };
    let mut s = connect_session(&hub.url, &creds.ca_pem, &id, &creds.config.agent_key)
        .await
        .unwrap();
    s.send(&hello(creds.config.generation)).await.unwrap();
    assert!(matches!(
        s.recv().await.unwrap(),
        Some(HubMessage::Welcome { .. })
    ));
    // Silent for three idle timeouts (heartbeats are 30 s apart): still open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.send(&AgentMessage::Heartbeat {
        status: AgentHealth::Ok,
        problems: vec![],
    })
    .await
    .unwrap();
    assert!(matches!(
        s.recv().await.unwrap(),
        Some(HubMessage::Ack { .. })
    ));
    hub.stop().await;
}

// ---- connection caps ----

/// Open `n` connections from `from` that the hub has taken (each answered a request).
async fn hold(hub: &TestHub, from: &str, n: usize) -> Vec<Conn> {
    let mut held = Vec::new();
    for i in 0..n {
        let mut c = Conn::open(hub, from, H1).await.unwrap();
        assert!(
            c.healthy().await,
            "connection {i} from {from} was not served"
        );
        held.push(c);
    }
    held
}

/// Whether a new connection from `from` is refused (closed before it is served).
async fn refused(hub: &TestHub, from: &str) -> bool {
    match Conn::open(hub, from, H1).await {
        Err(_) => true,
        Ok(mut c) => !c.healthy().await,
    }
}

/// Wait until a new connection from `from` is served again (the hub frees a slot
/// when it notices the close).
async fn admitted_again(hub: &TestHub, from: &str) -> Conn {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(mut c) = Conn::open(hub, from, H1).await
            && c.healthy().await
        {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{from} not admitted after a slot was freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn one_source_at_its_cap_cannot_lock_out_the_others() {
    let hub = hub_with(|o| o.max_connections_per_source = 4).await;
    let mut greedy = hold(&hub, "127.0.0.2", 4).await;
    assert!(
        refused(&hub, "127.0.0.2").await,
        "a fifth connection from one source was served"
    );

    // Everyone else is served as usual: health checks and enrollment.
    let other = muster_client::HubClient::with_options(
        &hub.url,
        muster_client::Trust::Hash(hub.ca_hash),
        muster_client::ClientOptions {
            local_address: Some(ip("127.0.0.3")),
            ..Default::default()
        },
    )
    .unwrap();
    other.healthz().await.unwrap();
    let token = hub.default_token().await;
    other
        .enroll(Some(&token), &request("neighbour", None).0)
        .await
        .unwrap();
    assert!(hold(&hub, "127.0.0.4", 4).await.len() == 4);

    // The held ones still work, and a closed one gives its slot back.
    assert!(greedy[0].healthy().await);
    greedy.pop();
    let _back = admitted_again(&hub, "127.0.0.2").await;
    assert!(refused(&hub, "127.0.0.2").await);
    hub.stop().await;
}

#[tokio::test]
async fn agent_sessions_do_not_count_against_their_addresss_cap() {
    // A fleet behind one NAT address: more sessions than the per-source cap.
    let hub = hub_with(|o| o.max_connections_per_source = 3).await;
    // One client each, so the test's own calls keep one connection each.
    let (admin, anonymous) = (hub.admin(), hub.anonymous());
    let token = admin
        .create_token(&CreateTokenRequest {
            max_uses: Some(5),
            ttl_s: Some(600),
            ..Default::default()
        })
        .await
        .unwrap()
        .token;
    let mut sessions = Vec::new();
    for i in 0..5 {
        let (req, key_pem) = request(&format!("natted-{i}"), None);
        let Ok(EnrollOutcome::Created(r)) = anonymous.enroll(Some(&token), &req).await else {
            panic!("enrollment {i} refused");
        };
        let id = ClientIdentity {
            cert_pem: r.cert_pem,
            key_pem,
        };
        let mut s = connect_session(&hub.url, &r.ca_pem, &id, &r.agent_key)
            .await
            .unwrap_or_else(|e| panic!("session {i}: {e}"));
        s.send(&hello(r.generation)).await.unwrap();
        assert!(matches!(
            s.recv().await.unwrap(),
            Some(HubMessage::Welcome { .. })
        ));
        sessions.push(s);
    }
    // Plain connections from that address are still capped: the two clients' and
    // one more.
    admin.list_agents().await.unwrap();
    anonymous.healthz().await.unwrap();
    let _third = hold(&hub, "127.0.0.1", 1).await;
    assert!(
        refused(&hub, "127.0.0.1").await,
        "a fourth plain connection was served"
    );
    hub.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_hubs_total_are_refused_at_the_door() {
    let hub = hub_with(|o| {
        o.max_connections = Some(6);
        o.max_connections_per_source = 4;
    })
    .await;
    let _a = hold(&hub, "127.0.0.2", 4).await;
    let mut b = hold(&hub, "127.0.0.3", 2).await;
    assert!(
        refused(&hub, "127.0.0.4").await,
        "a seventh connection was served"
    );
    b.pop();
    let _c = admitted_again(&hub, "127.0.0.4").await;
    hub.stop().await;
}

/// A TCP connection from `from` that never starts its TLS handshake.
async fn stall(hub: &TestHub, from: &str) -> tokio::net::TcpStream {
    let addr: std::net::SocketAddr = hub.url.trim_start_matches("https://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((ip(from), 0).into()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Whether the hub closes a stalled connection within `within`.
async fn closed(conn: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        timeout(within, conn.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

async fn handshakes_refused(hub: &TestHub) -> u64 {
    hub.metric("muster_handshakes_refused_total").await.unwrap() as u64
}

/// Handshakes run a bounded number at a time: a peer that connects and says nothing
/// holds a place in the queue (closed after a few seconds), not a slot; one source
/// gets as many places as there are slots and a quarter of the slots; peers that
/// start handshakes and stall hold slots, and newcomers then wait briefly and are
/// closed unanswered; everyone else is served meanwhile where there is room, and a
/// freed slot is used again.
#[tokio::test]
async fn stalled_handshakes_hold_their_share_not_the_door() {
    // Four slots (one per source), four places per source, a queue of 32.
    let hub = hub_with(|o| o.max_handshakes = Some(4)).await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(stall(&hub, "127.0.0.2").await);
    }
    let mut fifth = stall(&hub, "127.0.0.2").await;
    assert!(
        closed(&mut fifth, Duration::from_millis(500)).await,
        "a fifth connection from one source was not closed at once"
    );
    // Silent connections hold no slot: others are served meanwhile.
    let _served = hold(&hub, "127.0.0.3", 1).await;
    let start = Instant::now();
    for mut s in silent {
        assert!(
            closed(&mut s, Duration::from_secs(8)).await,
            "a silent connection stayed open"
        );
    }
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    // A handshake begun and stalled holds its source's one slot: a second from that
    // source waits, then is closed, while other sources are served.
    let begun = |mut s: tokio::net::TcpStream| async move {
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
        s
    };
    let mut stalled = vec![begun(stall(&hub, "127.0.0.4").await).await];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = begun(stall(&hub, "127.0.0.4").await).await;
    let start = Instant::now();
    let _other = hold(&hub, "127.0.0.5", 1).await;
    assert!(
        closed(&mut second, Duration::from_secs(5)).await,
        "a second slot for one source"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );

    // Every slot stalled: a newcomer waits, then is closed.
    for from in ["127.0.0.5", "127.0.0.6", "127.0.0.8"] {
        stalled.push(begun(stall(&hub, from).await).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    assert!(
        refused(&hub, "127.0.0.7").await,
        "served with every slot stalled"
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "closed after {waited:?}, before its wait was up"
    );

    // A stall ends: its slot serves the next comer.
    stalled.pop();
    let _again = admitted_again(&hub, "127.0.0.7").await;
    assert!(handshakes_refused(&hub).await >= 4);
    hub.stop().await;
}

/// A machine enrolling while the hub refuses at its door (its handshake queue full
/// from its address) is not told it failed: it retries from a random moment with the
/// same enrollment id, and is enrolled once there is room.
#[tokio::test]
async fn an_enrollment_turned_away_at_the_door_retries_and_succeeds() {
    // Four places per source: silent connections from this address take them.
    let hub = hub_with(|o| o.max_handshakes = Some(4)).await;
    let token = hub.default_token().await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(stall(&hub, "127.0.0.1").await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let agent = muster_testkit::TestAgent::new("turned-away");
    let opts = hub.enroll_options(&agent, Some(&token), None);
    let start = Instant::now();
    let enrolled = muster_agent::enroll(&opts, &agent.dir).await;
    assert!(enrolled.is_ok(), "{enrolled:?}");
    // Turned away until the hub closed the silent connection (5 s), then enrolled.
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(handshakes_refused(&hub).await >= 2);
    hub.stop().await;
}
