//! The agent's live session (SPEC §9): one WebSocket over mutual TLS, typed frames.
//!
//! The connection verifies the hub against the agent's `ca.pem`, presents the agent
//! certificate, and sends the agent key as a bearer: the hub accepts only when both
//! name the same live agent. Refusals at upgrade time come back as
//! [`SessionError::Refused`] with the hub's error code, so the agent can tell
//! "revoked, stop" from "network trouble, retry".

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use muster_proto::{AgentMessage, ApiError, HubMessage};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::{ClientIdentity, Trust, tls_config};

/// Largest frame either side sends; a session carries small JSON only.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The hub refused the session: `code` is stable (`agent_revoked`, `key_invalid`, …).
    #[error("the hub refused the session: {message} ({code})")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// The hub's certificate does not chain to the agent's CA.
    #[error("the hub's certificate is not signed by this agent's CA")]
    CaMismatch,
    /// The connection could not be made or broke.
    #[error("session connection: {0}")]
    Transport(String),
    /// The hub sent something this agent does not understand.
    #[error("session protocol: {0}")]
    Protocol(String),
}

impl SessionError {
    /// Whether retrying can help: refusals of the credentials are final.
    pub fn is_final(&self) -> bool {
        match self {
            SessionError::Refused { status, .. } => matches!(status, 401 | 403),
            SessionError::CaMismatch => true,
            _ => false,
        }
    }
}

pub struct Session {
    ws: WebSocketStream<TlsStream<TcpStream>>,
}

/// WebSocket buffers sized for small frames: memory per session is what lets one
/// hub hold tens of thousands of agents (tungstenite's default read buffer is 128 KiB).
/// The hub's frames are mostly acks of about 50 bytes; a larger one (an update
/// order) grows the buffer while it needs to.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(4096)
        .max_write_buffer_size(MAX_FRAME_BYTES * 2)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

pub async fn connect_session(
    hub_url: &str,
    ca_pem: &str,
    identity: &ClientIdentity,
    agent_key: &str,
) -> Result<Session, SessionError> {
    let url = reqwest::Url::parse(hub_url)
        .map_err(|_| SessionError::Transport(format!("invalid hub URL {hub_url:?}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| SessionError::Transport(format!("no host in {hub_url:?}")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let (tls, mismatch) = tls_config(&Trust::CaPem(ca_pem.to_owned()), Some(identity))
        .map_err(|e| SessionError::Transport(e.to_string()))?;
    let tcp = connect_tcp(&host, port, hub_url).await?;
    let _ = tcp.set_nodelay(true);
    let server_name = rustls_pki_types::ServerName::try_from(host.clone())
        .map_err(|_| SessionError::Transport(format!("invalid host {host:?}")))?;
    let stream = TlsConnector::from(Arc::new(tls))
        .connect(server_name, tcp)
        .await
        .map_err(|e| {
            if mismatch.is_set() {
                SessionError::CaMismatch
            } else {
                SessionError::Transport(format!("TLS: {e}"))
            }
        })?;
    let ws_url = format!(
        "wss://{}:{port}/api/v1/agent/session",
        url.host_str().unwrap_or(&host)
    );
    let mut request = ws_url
        .into_client_request()
        .map_err(|e| SessionError::Transport(e.to_string()))?;
    let bearer = format!("Bearer {agent_key}")
        .parse()
        .map_err(|_| SessionError::Transport("agent key is not a valid header value".to_owned()))?;
    request
        .headers_mut()
        .insert(tungstenite::http::header::AUTHORIZATION, bearer);
    let (ws, _response) = tokio::time::timeout(
        Duration::from_secs(15),
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())),
    )
    .await
    .map_err(|_| SessionError::Transport("WebSocket upgrade timed out".to_owned()))?
    .map_err(upgrade_error)?;
    Ok(Session { ws })
}

/// How long one connection attempt to the hub may take in all, every address
/// of its name together.
const CONNECT_BUDGET: Duration = Duration::from_secs(10);
/// The least time one address gets, however many the name has.
const MIN_PER_ADDRESS: Duration = Duration::from_secs(2);

/// The time each of `n` addresses gets: the budget shared out, but never so little
/// that a healthy hub across a slow link cannot answer.
fn per_address_timeout(n: usize) -> Duration {
    let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    (CONNECT_BUDGET / n).max(MIN_PER_ADDRESS)
}

/// A TCP connection to `host:port`, trying every address the name resolves to, in
/// the resolver's order, until one accepts. Certificate checks happen above this,
/// against the name, so a hub reached at any of its addresses is verified the same.
async fn connect_tcp(host: &str, port: u16, hub_url: &str) -> Result<TcpStream, SessionError> {
    let addrs: Vec<std::net::SocketAddr> =
        tokio::time::timeout(CONNECT_BUDGET, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| SessionError::Transport(format!("resolving {host} timed out")))?
            .map_err(|e| SessionError::Transport(format!("cannot resolve {host}: {e}")))?
            .collect();
    match connect_any(&addrs, per_address_timeout(addrs.len())).await {
        Ok(tcp) => Ok(tcp),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(SessionError::Transport(format!(
                "{hub_url} refused the connection (is the hub running and listening there?)"
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(SessionError::Transport(
            format!("connecting to {hub_url} timed out"),
        )),
        Err(e) => Err(SessionError::Transport(format!(
            "cannot connect to {hub_url}: {e}"
        ))),
    }
}

/// The first of `addrs` that accepts within `each`; else the last address's error
/// (a refusal stays a refusal, so the caller can say what to check).
pub(crate) async fn connect_any(
    addrs: &[std::net::SocketAddr],
    each: Duration,
) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "the name resolves to no address",
    );
    for addr in addrs {
        match tokio::time::timeout(each, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "hub address did not accept; trying the next");
                last = e;
            }
            Err(_) => {
                tracing::debug!(%addr, "hub address timed out; trying the next");
                last =
                    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{addr} timed out"));
            }
        }
    }
    Err(last)
}

fn upgrade_error(e: tungstenite::Error) -> SessionError {
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let parsed = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<ApiError>(b).ok());
            match parsed {
                Some(e) => SessionError::Refused {
                    status,
                    code: e.error.code,
                    message: e.error.message,
                },
                None => SessionError::Refused {
                    status,
                    code: format!("http_{status}"),
                    message: format!("the hub answered HTTP {status}"),
                },
            }
        }
        other => SessionError::Transport(other.to_string()),
    }
}

impl Session {
    pub async fn send(&mut self, msg: &AgentMessage) -> Result<(), SessionError> {
        let text = serde_json::to_string(msg).map_err(|e| SessionError::Protocol(e.to_string()))?;
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| SessionError::Transport(e.to_string()))
    }

    /// The next hub frame; `None` once the hub closed the session.
    pub async fn recv(&mut self) -> Result<Option<HubMessage>, SessionError> {
        while let Some(frame) = self.ws.next().await {
            match frame.map_err(|e| SessionError::Transport(e.to_string()))? {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str())
                        .map(Some)
                        .map_err(|e| SessionError::Protocol(format!("{e}: {}", text.as_str())));
                }
                Message::Close(_) => return Ok(None),
                // Pings are answered by tungstenite itself; binary frames are not ours.
                _ => {}
            }
        }
        Ok(None)
    }

    /// Close politely (best effort).
    pub async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_address_gets_a_share_of_the_budget_but_never_too_little() {
        assert_eq!(per_address_timeout(0), CONNECT_BUDGET);
        assert_eq!(per_address_timeout(1), CONNECT_BUDGET);
        assert_eq!(per_address_timeout(2), Duration::from_secs(5));
        assert_eq!(per_address_timeout(50), MIN_PER_ADDRESS);
    }

    #[tokio::test]
    async fn addresses_are_tried_in_turn_until_one_accepts() {
        // A port that refuses: bound, then closed.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refused = closed.local_addr().unwrap();
        drop(closed);
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listening = open.local_addr().unwrap();

        let tcp = connect_any(&[refused, listening], Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(tcp.peer_addr().unwrap(), listening);

        let err = connect_any(&[refused], Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        let err = connect_any(&[], Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
