//! The hub's one HTTP client for calls it makes itself (the single sign-on
//! provider, integrations), and the bounded read every such call goes through.
//!
//! Invariants: no redirect is ever followed (a redirect would be a request we did
//! not mean to make, perhaps to another host, carrying credentials); every request
//! has a deadline; no response body is read past the caller's cap.

use std::time::Duration;

/// The deadline of each outbound request, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting (TCP and TLS) may take of that.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Build the shared client. `extra_roots_pem` are CA certificates trusted besides
/// the system's (`--outbound-ca`: an internal API's private CA; tests).
pub fn client(extra_roots_pem: Option<&str>) -> Result<reqwest::Client, String> {
    // reqwest's rustls wants a process-wide provider: ours, ring (a no-op when
    // the binary installed it already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        // Calls are minutes apart (sign-ins, probes): a kept-alive connection would
        // mostly be one the other side has closed meanwhile (a reset request).
        .pool_max_idle_per_host(0)
        .user_agent(concat!("muster-hub/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = extra_roots_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("reading the outbound CA certificates: {e}"))?;
        if certs.is_empty() {
            return Err("the outbound CA file holds no certificate".to_owned());
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// The client one hub uses to ask another (`forward.rs`). It trusts the fleet's
/// CA alone (the other hub's certificate is the CA's), or also the system's roots
/// when hubs serve a publicly trusted certificate (`--tls-cert`). No redirects; each
/// request sets its own deadline (a probe's wait). Connections are kept: a fan-out
/// sends many requests to the same few hubs.
pub fn peer_client(ca_pem: &str, public_tls: bool) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())
        .map_err(|e| format!("reading the hub CA certificate: {e}"))?;
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("muster-hub/", env!("CARGO_PKG_VERSION")));
    let builder = if public_tls {
        builder.tls_certs_merge(certs)
    } else {
        builder.tls_certs_only(certs)
    };
    builder
        .build()
        .map_err(|e| format!("building the hub-to-hub client: {e}"))
}

/// A response body read up to `cap` bytes: what arrived, and whether more was left
/// unread (the rest is dropped with the connection).
pub async fn read_bounded(
    resp: &mut reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// A reqwest error said without its URL (which may carry a query an admin typed)
/// and with its causes, on one line.
pub fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        let mut s = e.to_string();
        if let Some(url) = e.url() {
            s = s
                .replace(&format!(" for url ({url})"), "")
                .replace(url.as_str(), "the URL");
        }
        s
    };
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
