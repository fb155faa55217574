//! What the benches share: the enrollment request a simulated agent sends, enrolling
//! many of them at once, and reading one figure from a hub's `/metrics`.

use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow};
use muster_client::{ClientIdentity, EnrollOutcome, HubClient, Trust};
use muster_proto::{AgentMessage, CreateTokenRequest, EnrollRequest, PROTOCOL_VERSION};
use tokio::sync::Semaphore;

/// The label one simulated agent in [`RARE_EVERY`] carries, for timing a label
/// filter over the fleet (`?label=bench=rare`).
pub const RARE_LABEL: (&str, &str) = ("bench", "rare");
pub const RARE_EVERY: usize = 1000;

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

/// The `hello` a simulated agent opens its session with (no facts: the bench's
/// agents were enrolled with theirs), announcing one pack with `system.info`, which
/// it answers like the real agent (see [`sim_probe_answer`]).
pub fn sim_hello() -> AgentMessage {
    AgentMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        packs: vec!["system".to_owned()],
        facts: None,
        generation: 1,
        catalog: vec![muster_proto::PackInfo {
            name: "system".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            needs: Vec::new(),
            health: muster_proto::PackHealth::Ready,
            reason: None,
            probes: vec![muster_proto::ProbeInfo {
                name: "system.info".to_owned(),
                description: "host, OS, kernel, uptime, agent version".to_owned(),
                params: Vec::new(),
            }],
        }],
    }
}

/// A simulated agent's answer to a probe: `system.info` as the real agent shapes
/// it (about the same size on the wire), anything else an error.
pub fn sim_probe_answer(id: u64, probe: &str, name: &str) -> AgentMessage {
    if probe != "system.info" {
        return AgentMessage::ProbeResult {
            id,
            outcome: muster_proto::ProbeOutcome::Error,
            result: None,
            error: Some(format!("unknown probe {probe}")),
            truncated: false,
        };
    }
    AgentMessage::ProbeResult {
        id,
        outcome: muster_proto::ProbeOutcome::Ok,
        result: Some(serde_json::json!({
            "hostname": name,
            "os": "Debian GNU/Linux 12 (bookworm)",
            "kernel": "6.1.0-bench",
            "arch": muster_agent::facts::arch(),
            "uptime_s": 123456,
            "agent_version": env!("CARGO_PKG_VERSION"),
        })),
        error: None,
        truncated: false,
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

/// A simulated agent's credentials.
pub struct Sim {
    pub agent_id: String,
    pub identity: ClientIdentity,
    pub agent_key: String,
}

async fn token(admin: &HubClient, uses: usize, rare: bool) -> Result<String> {
    let mut req = CreateTokenRequest {
        max_uses: Some(u32::try_from(uses).context("too many agents")?),
        ttl_s: Some(3600),
        description: Some("muster bench sessions".to_owned()),
        ..Default::default()
    };
    if rare {
        req.labels
            .insert(RARE_LABEL.0.to_owned(), RARE_LABEL.1.to_owned());
    }
    Ok(admin.create_token(&req).await?.token)
}

/// Enroll `n` simulated agents, 32 at a time, through the hubs at `urls` in turn
/// (they share one database), with one multi-use token; one agent in
/// [`RARE_EVERY`] gets [`RARE_LABEL`] from a second token.
pub async fn enroll_all(
    admin: &HubClient,
    urls: &[String],
    ca_pem: &str,
    n: usize,
) -> Result<Vec<Sim>> {
    if urls.is_empty() {
        return Err(anyhow!("no hub to enroll with"));
    }
    let common = token(admin, n, false).await?;
    let rare = token(admin, n / RARE_EVERY + 1, true).await?;
    let gate = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let token = if i % RARE_EVERY == RARE_EVERY - 1 {
            rare.clone()
        } else {
            common.clone()
        };
        let (url, ca) = (urls[i % urls.len()].clone(), ca_pem.to_owned());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let name = format!("sim-{i}");
            let (key_pem, csr_pem) = muster_ca::new_key_and_csr(&name)?;
            let client = HubClient::new(&url, Trust::CaPem(ca))?;
            let req = sim_request(&name, csr_pem);
            match client.enroll(Some(&token), &req).await? {
                EnrollOutcome::Created(r) | EnrollOutcome::Reenrolled(r) => Ok(Sim {
                    agent_id: r.agent_id,
                    identity: ClientIdentity {
                        cert_pem: r.cert_pem,
                        key_pem,
                    },
                    agent_key: r.agent_key,
                }),
                EnrollOutcome::Pending(_) => Err(anyhow!("enrollment went to the approval queue")),
            }
        }));
    }
    let mut sims = Vec::with_capacity(n);
    for t in tasks {
        sims.push(t.await??);
    }
    Ok(sims)
}

/// A random whole number of milliseconds below `max`.
pub fn rand_ms(max: u64) -> u64 {
    if max == 0 {
        0
    } else {
        rand::random_range(0..max)
    }
}
