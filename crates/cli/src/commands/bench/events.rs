//! `muster bench events`: push latency of the live event stream. N simulated agents
//! hold sessions on a running hub and flip their health (ok ↔ degraded) at random;
//! watchers (dashboards) read `GET /api/v1/events`; the first times each flip from
//! the heartbeat that made it to the first event showing it, the others only read.
//! Also counts how many messages the flips were coalesced into, and the hub's CPU
//! over the window (from its `/metrics`: sessions and heartbeats included).
//!
//! With `--memory-steps` it answers another question, what each watcher costs the
//! hub in memory: watchers are opened in cumulative steps (each its own TLS
//! connection, as separate browsers would be), and the hub's RSS is read from its
//! `/metrics` once each step has settled, while the agents keep flipping (or with
//! `--agents 0`, an idle fleet).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use muster_client::{HubClient, connect_session};
use muster_proto::{AgentHealth, AgentMessage, HubMessage};
use serde::Serialize;

use crate::commands::bench::sim::{Sim, enroll_all, rand_ms};
use crate::output::{Format, emit};

/// The last flip of each agent: when, to what status, and whether an event showed it.
type Flips = Arc<Mutex<HashMap<String, (Instant, &'static str, bool)>>>;

#[derive(Serialize)]
struct Report {
    agents: usize,
    watchers: usize,
    hub_cpu_s: f64,
    window_s: f64,
    flips: u64,
    flips_seen: usize,
    messages: u64,
    notes: u64,
    latency_p50_ms: f64,
    latency_p95_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
}

pub async fn run(
    admin: &HubClient,
    agents: usize,
    watchers: usize,
    flip_every: Duration,
    window: Duration,
    format: Format,
) -> Result<()> {
    let ca_pem = admin.ca().await?.ca_pem;
    let url = admin.base_url().to_owned();
    eprintln!("enrolling {agents} agents…");
    let sims = enroll_all(admin, std::slice::from_ref(&url), &ca_pem, agents).await?;
    let flips: Flips = Arc::default();
    let flipped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let connected = Arc::new(tokio::sync::Barrier::new(agents + 1));
    let mut tasks = Vec::new();
    for sim in sims {
        tasks.push(tokio::spawn(flap(
            sim,
            url.clone(),
            ca_pem.clone(),
            flip_every,
            flips.clone(),
            flipped.clone(),
            connected.clone(),
        )));
    }
    connected.wait().await;
    eprintln!("watching for {window:?}…");
    let mut stream = admin.events().await?;
    // The other dashboards: read everything, as a browser would.
    let mut others = Vec::new();
    for _ in 1..watchers.max(1) {
        let mut s = admin.events().await?;
        others.push(tokio::spawn(async move {
            while let Ok(Some(_)) = s.next().await {}
        }));
    }
    let cpu0 = super::sim::metric(admin, "process_cpu_seconds_total").await?;
    let mut latencies = Vec::new();
    let (mut messages, mut notes) = (0u64, 0u64);
    let flipped0 = flipped.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await {
        let Some((name, data)) = next? else { break };
        if name != "agents" {
            continue;
        }
        let now = Instant::now();
        messages += 1;
        let mut f = flips.lock().map_err(|_| anyhow!("lock poisoned"))?;
        for a in data["agents"].as_array().into_iter().flatten() {
            notes += 1;
            let (Some(id), Some(status)) = (a["id"].as_str(), a["status"].as_str()) else {
                continue;
            };
            if let Some((at, want, seen)) = f.get_mut(id)
                && !*seen
                && *want == status
            {
                *seen = true;
                latencies.push(now.duration_since(*at));
            }
        }
    }
    let cpu1 = super::sim::metric(admin, "process_cpu_seconds_total").await?;
    for t in tasks {
        t.abort();
    }
    for t in others {
        t.abort();
    }
    latencies.sort_unstable();
    let ms = |p: f64| super::percentile_ms(&latencies, p);
    let report = Report {
        agents,
        watchers: watchers.max(1),
        hub_cpu_s: cpu1 - cpu0,
        window_s: window.as_secs_f64(),
        flips: flipped.load(std::sync::atomic::Ordering::Relaxed) - flipped0,
        flips_seen: latencies.len(),
        messages,
        notes,
        latency_p50_ms: ms(0.50),
        latency_p95_ms: ms(0.95),
        latency_p99_ms: ms(0.99),
        latency_max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    };
    emit(format, &report, |r| {
        format!(
            "{} agents flipping health for {:.0} s, {} watchers: {} flips, {} shown in {} messages ({} agent notes)\n\
             push latency (heartbeat sent → event read): p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms\n\
             hub CPU over the window: {:.2} s",
            r.agents,
            r.window_s,
            r.watchers,
            r.flips,
            r.flips_seen,
            r.messages,
            r.notes,
            r.latency_p50_ms,
            r.latency_p95_ms,
            r.latency_p99_ms,
            r.latency_max_ms,
            r.hub_cpu_s
        )
    })
}

#[derive(Serialize)]
struct MemoryStep {
    watchers: usize,
    hub_rss_kib: f64,
    /// RSS growth since the first step, per watcher added since it.
    kib_per_watcher: Option<f64>,
}

#[derive(Serialize)]
struct MemoryReport {
    agents: usize,
    flip_every_s: f64,
    settle_s: f64,
    steps: Vec<MemoryStep>,
}

/// Hub RSS with `steps` watchers open (cumulative, ascending), `agents` flipping
/// health about every `flip_every` throughout.
pub async fn memory(
    admin: &HubClient,
    agents: usize,
    steps: &[usize],
    flip_every: Duration,
    settle: Duration,
    format: Format,
) -> Result<()> {
    if steps.is_empty() || steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err(anyhow!(
            "--memory-steps must be watcher counts in ascending order, e.g. 0,500,1000"
        ));
    }
    let ca_pem = admin.ca().await?.ca_pem;
    let url = admin.base_url().to_owned();
    let mut tasks = Vec::new();
    if agents > 0 {
        eprintln!("enrolling {agents} agents…");
        let sims = enroll_all(admin, std::slice::from_ref(&url), &ca_pem, agents).await?;
        let connected = Arc::new(tokio::sync::Barrier::new(agents + 1));
        for sim in sims {
            tasks.push(tokio::spawn(flap(
                sim,
                url.clone(),
                ca_pem.clone(),
                flip_every,
                Flips::default(),
                Arc::default(),
                connected.clone(),
            )));
        }
        connected.wait().await;
    }
    let mut watchers = Vec::new();
    let mut report = MemoryReport {
        agents,
        flip_every_s: flip_every.as_secs_f64(),
        settle_s: settle.as_secs_f64(),
        steps: Vec::new(),
    };
    for &n in steps {
        while watchers.len() < n {
            let mut s = admin
                .events()
                .await
                .with_context(|| format!("opening watcher {}", watchers.len() + 1))?;
            // Read everything, as a browser would, so no backlog builds up here.
            watchers.push(tokio::spawn(async move {
                while let Ok(Some(_)) = s.next().await {}
            }));
        }
        eprintln!("{n} watchers open; settling for {settle:?}…");
        tokio::time::sleep(settle).await;
        let rss = super::sim::metric(admin, "process_resident_memory_bytes").await? / 1024.0;
        let kib_per_watcher = report
            .steps
            .first()
            .map(|first| (rss - first.hub_rss_kib) / (n - first.watchers) as f64);
        report.steps.push(MemoryStep {
            watchers: n,
            hub_rss_kib: rss,
            kib_per_watcher,
        });
    }
    tasks.iter().for_each(|t| t.abort());
    watchers.iter().for_each(|t| t.abort());
    emit(format, &report, |r| {
        let mut out = format!(
            "hub memory by live-event watchers ({} agents{}, {:.0} s settle per step)",
            r.agents,
            if r.agents > 0 {
                format!(" flipping about every {:.1} s", r.flip_every_s)
            } else {
                String::new()
            },
            r.settle_s
        );
        for step in &r.steps {
            out.push_str(&format!(
                "\n{:>6} watchers: hub RSS {:>9.0} KiB",
                step.watchers, step.hub_rss_kib
            ));
            if let Some(k) = step.kib_per_watcher {
                out.push_str(&format!(", {k:.1} KiB per watcher over the first step"));
            }
        }
        out
    })
}

/// One agent: a session, then a heartbeat flipping its health about every
/// `flip_every` (at random), noting when and to what.
async fn flap(
    sim: Sim,
    url: String,
    ca: String,
    flip_every: Duration,
    flips: Flips,
    flipped: Arc<std::sync::atomic::AtomicU64>,
    connected: Arc<tokio::sync::Barrier>,
) -> Result<()> {
    let mut session = connect_session(&url, &ca, &sim.identity, &sim.agent_key).await?;
    let hello = crate::commands::bench::sim::sim_hello();
    session.send(&hello).await?;
    match session.recv().await? {
        Some(HubMessage::Welcome { .. }) => {}
        other => return Err(anyhow!("no welcome: {other:?}")),
    }
    connected.wait().await;
    let mut degraded = false;
    loop {
        let pause = Duration::from_millis(rand_ms(2 * flip_every.as_millis() as u64));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            // Acks and the like: read so the connection's buffers never fill.
            frame = session.recv() => {
                if frame?.is_none() {
                    return Ok(());
                }
                continue;
            }
        }
        degraded = !degraded;
        let (status, shown) = if degraded {
            (AgentHealth::Degraded, "degraded")
        } else {
            (AgentHealth::Ok, "online")
        };
        let hb = AgentMessage::Heartbeat {
            status,
            problems: Vec::new(),
        };
        let at = Instant::now();
        session.send(&hb).await?;
        flipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        flips
            .lock()
            .map_err(|_| anyhow!("lock poisoned"))?
            .insert(sim.agent_id.clone(), (at, shown, false));
    }
}
