//! A hub under slow, stalled, idle, oversized or piled-up connections keeps its
//! files and keeps answering everyone else; and whatever goes wrong with a request,
//! the answer is our JSON error. Spoken byte by byte over real TLS (HTTP/1.1 and
//! HTTP/2), since the clients Muster ships never misbehave like this.
//!
//! These exercise the hub's HTTP layer, not its database: they run on SQLite only.

use std::net::IpAddr;
use std::time::Duration;

use muster_hub::HubOptions;
use muster_proto::ApiError;
use muster_testkit::{Backend, TestHub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

type Tls = muster_testkit::RawTls;

const H1: &[u8] = b"http/1.1";

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
