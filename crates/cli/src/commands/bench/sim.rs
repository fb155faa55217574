//! What the benches share: the enrollment request a simulated agent sends, and
//! reading one figure from the hub's `/metrics`.

use anyhow::{Context as _, Result};
use muster_client::HubClient;
use muster_proto::{EnrollRequest, PROTOCOL_VERSION};

/// What a simulated agent named `name` sends to enroll.
pub fn sim_request(name: &str, csr_pem: String) -> EnrollRequest {
    EnrollRequest {
        name: Some(name.to_owned()),
        hostname: name.to_owned(),
        os_info: "bench".to_owned(),
        arch: muster_agent::facts::arch().to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        ip: "127.0.0.1".to_owned(),
        interfaces: Vec::new(),
        packs: Vec::new(),
        labels: Default::default(),
        csr_pem,
        enrollment_id: None,
        protocol_version: Some(PROTOCOL_VERSION),
        keep_agent_key: false,
    }
}

/// One value from the hub's `/metrics` (the hub reports its own RSS and CPU there).
pub async fn metric(admin: &HubClient, name: &str) -> Result<f64> {
    let (_, body) = admin.get_raw("/metrics").await?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .with_context(|| format!("the hub's /metrics has no {name}"))
}
