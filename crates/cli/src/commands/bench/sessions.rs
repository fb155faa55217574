//! `muster bench sessions`: hold N live sessions against a hub this command starts
//! itself (so it can read the hub's memory and CPU and restart it), then measure:
//! hub RSS per session, hub CPU per heartbeat, heartbeat round trip, time from
//! `revoke` to the session's close, and how reconnections spread after a restart.
//!
//! Simulated agents use the real client and the real agent's backoff policy.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use muster_agent::session::Backoff;
use muster_client::{ClientIdentity, EnrollOutcome, HubClient, Trust, connect_session};
use muster_proto::{AgentHealth, AgentMessage, CreateTokenRequest, HubMessage, PROTOCOL_VERSION};
use tokio::sync::{Semaphore, oneshot};

use crate::commands::bench::sim::{metric, sim_request};
use crate::duration::parse_duration;
use crate::output::{Format, emit};

#[derive(Args)]
pub struct SessionsArgs {
    /// How many simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Heartbeat interval the hub hands out.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// Steady-state window over which CPU and round trips are measured.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    window: Duration,
    /// How many agents to revoke, one by one, timing each close.
    #[arg(long, default_value_t = 100)]
    revocations: usize,
    /// Database for the hub (default: SQLite in a temporary data dir).
    #[arg(long)]
    db: Option<String>,
    #[command(flatten)]
    format: Format,
}

pub(super) struct Sim {
    pub agent_id: String,
    pub identity: ClientIdentity,
    pub agent_key: String,
}

#[derive(Default)]
struct Shared {
    connected: AtomicUsize,
    gave_up: AtomicUsize,
    measuring: AtomicBool,
    rtts_us: Mutex<Vec<u64>>,
    /// First reconnection of each agent after the restart.
    reconnects: Mutex<HashMap<String, Instant>>,
    restarted: AtomicBool,
    revoked: Mutex<HashMap<String, oneshot::Sender<Instant>>>,
}

struct HubProc {
    child: Child,
    url: String,
}

fn start_hub(data: &Path, listen: &str, args: &SessionsArgs) -> Result<HubProc> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let _ = std::fs::remove_file(data.join("hub.json"));
    let mut cmd = Command::new(exe);
    cmd.args(["hub", "--listen", listen, "--data-dir"])
        .arg(data)
        .args([
            "--heartbeat-interval",
            &format!("{}s", args.heartbeat_interval.as_secs()),
            // Every simulated agent connects from this machine's address.
            "--max-connections-per-source",
            "1000000",
        ])
        .env("MUSTER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(db) = &args.db {
        cmd.args(["--db", db]);
    }
    let child = cmd.spawn().context("cannot start the hub")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(data.join("hub.json")) {
            let v: serde_json::Value = serde_json::from_str(&text).context("hub.json")?;
            let url = v["url"].as_str().unwrap_or_default().to_owned();
            return Ok(HubProc { child, url });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(anyhow!("the hub did not start in 30 s"))
}

impl HubProc {
    fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err(anyhow!("the hub did not stop on SIGTERM within 30 s"))
    }
}

pub async fn run(args: SessionsArgs) -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("muster-bench-{}", std::process::id()));
    let result = run_in(&tmp, &args).await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

async fn run_in(tmp: &Path, args: &SessionsArgs) -> Result<()> {
    let n = args.agents;
    let data = tmp.join("data");
    let hub = start_hub(&data, "127.0.0.1:0", args)?;
    let key = std::fs::read_to_string(data.join("initial-admin-key"))
        .context("reading the hub's initial-admin-key")?;
    let ca_pem =
        std::fs::read_to_string(data.join("ca.pem")).context("reading the hub's ca.pem")?;
    let admin =
        HubClient::new(&hub.url, Trust::CaPem(ca_pem.clone()))?.with_bearer(key.trim().to_owned());

    eprintln!("enrolling {n} agents…");
    let sims = enroll_all(&admin, &hub.url, &ca_pem, n).await?;
    let rss_before = rss_kib(&admin).await?;

    eprintln!("opening {n} sessions…");
    let shared = Arc::new(Shared::default());
    let url = Arc::new(hub.url.clone());
    let ca = Arc::new(ca_pem.clone());
    let open_gate = Arc::new(Semaphore::new(64));
    let mut revoke_rx = HashMap::new();
    for sim in sims.iter().take(args.revocations.min(n)) {
        let (tx, rx) = oneshot::channel();
        shared
            .revoked
            .lock()
            .map_err(|_| anyhow!("lock poisoned"))?
            .insert(sim.agent_id.clone(), tx);
        revoke_rx.insert(sim.agent_id.clone(), rx);
    }
    let opened = Instant::now();
    for sim in sims {
        tokio::spawn(simulate(
            sim,
            url.clone(),
            ca.clone(),
            shared.clone(),
            open_gate.clone(),
        ));
    }
    wait_for(
        || shared.connected.load(Ordering::Relaxed) >= n,
        Duration::from_secs(300),
    )
    .await?;
    let open_secs = opened.elapsed().as_secs_f64();
    // Round trips are sampled from here on: the hub acks every sixth heartbeat,
    // starting with each session's first.
    shared.measuring.store(true, Ordering::Relaxed);
    // Let every session send a heartbeat or two before measuring memory.
    tokio::time::sleep(args.heartbeat_interval + Duration::from_secs(2)).await;
    let rss_after = rss_kib(&admin).await?;

    eprintln!("measuring steady heartbeats for {:?}…", args.window);
    let beats0 = heartbeats(&admin).await?;
    let cpu0 = cpu_secs(&admin).await?;
    tokio::time::sleep(args.window).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let cpu1 = cpu_secs(&admin).await?;
    let beats1 = heartbeats(&admin).await?;
    let beats = beats1.saturating_sub(beats0).max(1);
    let cpu_per_beat_us = (cpu1 - cpu0) * 1e6 / beats as f64;
    let mut rtts = std::mem::take(
        &mut *shared
            .rtts_us
            .lock()
            .map_err(|_| anyhow!("lock poisoned"))?,
    );
    rtts.sort_unstable();

    eprintln!("revoking {} agents one by one…", revoke_rx.len());
    let mut revoke_ms = Vec::new();
    for (id, rx) in revoke_rx {
        let t0 = Instant::now();
        admin.revoke_agent(&id).await?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(at)) => revoke_ms.push(at.saturating_duration_since(t0).as_secs_f64() * 1000.0),
            _ => {
                bail!("agent {id} was not told of its revocation within 10 s");
            }
        }
    }
    revoke_ms.sort_by(f64::total_cmp);
    let alive = n - revoke_ms.len();

    eprintln!("restarting the hub with {alive} agents connected…");
    let listen = hub.url.trim_start_matches("https://").to_owned();
    shared.restarted.store(true, Ordering::Relaxed);
    let stopped_at = Instant::now();
    hub.stop()?;
    let hub = start_hub(&data, &listen, args)?;
    let ready_at = Instant::now();
    wait_for(
        || shared.reconnects.lock().map(|r| r.len()).unwrap_or(0) >= alive,
        Duration::from_secs(180),
    )
    .await?;
    let mut back: Vec<f64> = shared
        .reconnects
        .lock()
        .map_err(|_| anyhow!("lock poisoned"))?
        .values()
        .map(|t| t.saturating_duration_since(ready_at).as_secs_f64())
        .collect();
    back.sort_by(f64::total_cmp);
    let busiest = busiest_second(&back);
    let gave_up = shared.gave_up.load(Ordering::Relaxed);
    let restart_gap = ready_at.duration_since(stopped_at).as_secs_f64();
    hub.stop()?;

    let per_session = (rss_after.saturating_sub(rss_before)) as f64 / n as f64;
    let report = serde_json::json!({
        "agents": n,
        "heartbeat_interval_s": args.heartbeat_interval.as_secs(),
        "sessions_open_seconds": open_secs,
        "hub_rss_before_kib": rss_before,
        "hub_rss_after_kib": rss_after,
        "hub_rss_per_session_kib": per_session,
        "heartbeats_in_window": beats,
        "hub_cpu_per_heartbeat_us": cpu_per_beat_us,
        "heartbeat_rtt_p50_ms": pct(&rtts, 0.5) as f64 / 1000.0,
        "heartbeat_rtt_p99_ms": pct(&rtts, 0.99) as f64 / 1000.0,
        "revocations": revoke_ms.len(),
        "revoke_to_close_p50_ms": pctf(&revoke_ms, 0.5),
        "revoke_to_close_p99_ms": pctf(&revoke_ms, 0.99),
        "restart_gap_seconds": restart_gap,
        "reconnected": back.len(),
        "gave_up": gave_up,
        "reconnect_p50_s": pctf(&back, 0.5),
        "reconnect_p99_s": pctf(&back, 0.99),
        "reconnect_last_s": back.last().copied().unwrap_or(0.0),
        "reconnect_busiest_second": busiest,
    });
    emit(args.format, &report, |_| {
        [
            format!(
                "sessions bench, {n} agents, heartbeat {}s",
                args.heartbeat_interval.as_secs()
            ),
            format!("  sessions opened in          {open_secs:.1} s"),
            format!(
                "  hub RSS                     {rss_before} KiB -> {rss_after} KiB = {per_session:.1} KiB per session"
            ),
            format!(
                "  hub CPU per heartbeat       {cpu_per_beat_us:.1} us ({beats} heartbeats in {:?})",
                args.window
            ),
            format!(
                "  heartbeat round trip        p50 {:.2} ms, p99 {:.2} ms",
                pct(&rtts, 0.5) as f64 / 1000.0,
                pct(&rtts, 0.99) as f64 / 1000.0
            ),
            format!(
                "  revoke -> session closed    p50 {:.1} ms, p99 {:.1} ms ({} revocations)",
                pctf(&revoke_ms, 0.5),
                pctf(&revoke_ms, 0.99),
                revoke_ms.len()
            ),
            format!(
                "  after restart               {} of {alive} back, {gave_up} gave up; p50 {:.1} s, p99 {:.1} s, last {:.1} s; busiest second {busiest} reconnects",
                back.len(),
                pctf(&back, 0.5),
                pctf(&back, 0.99),
                back.last().copied().unwrap_or(0.0)
            ),
        ]
        .join("\n")
    })
}

async fn heartbeats(admin: &HubClient) -> Result<u64> {
    Ok(metric(admin, "muster_heartbeats_total").await? as u64)
}

async fn rss_kib(admin: &HubClient) -> Result<u64> {
    Ok((metric(admin, "process_resident_memory_bytes").await? / 1024.0) as u64)
}

async fn cpu_secs(admin: &HubClient) -> Result<f64> {
    metric(admin, "process_cpu_seconds_total").await
}

async fn wait_for(done: impl Fn() -> bool, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            bail!("gave up waiting after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn pctf(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

/// The most reconnections that landed within any one second.
fn busiest_second(sorted_secs: &[f64]) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted_secs.len() {
        while sorted_secs[end] - sorted_secs[start] >= 1.0 {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

pub(super) async fn enroll_all(
    admin: &HubClient,
    url: &str,
    ca_pem: &str,
    n: usize,
) -> Result<Vec<Sim>> {
    let token = admin
        .create_token(&CreateTokenRequest {
            max_uses: Some(u32::try_from(n).context("too many agents")?),
            ttl_s: Some(3600),
            description: Some("muster bench sessions".to_owned()),
            ..Default::default()
        })
        .await?
        .token;
    let gate = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let (url, ca, token) = (url.to_owned(), ca_pem.to_owned(), token.clone());
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

/// One simulated agent: connect, hello, heartbeat, and reconnect like the real one.
async fn simulate(
    sim: Sim,
    url: Arc<String>,
    ca: Arc<String>,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
) {
    let mut backoff = Backoff::default();
    loop {
        let permit = gate.acquire().await;
        let connected = connect_session(&url, &ca, &sim.identity, &sim.agent_key).await;
        let mut session = match connected {
            Ok(s) => s,
            Err(e) if e.is_final() => {
                shared.gave_up.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                drop(permit);
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let hello = AgentMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            packs: Vec::new(),
            facts: None,
            generation: 1,
        };
        let interval = match (session.send(&hello).await, session.recv().await) {
            (
                Ok(()),
                Ok(Some(HubMessage::Welcome {
                    heartbeat_interval_s,
                    ..
                })),
            ) => Duration::from_secs(heartbeat_interval_s.max(1)),
            _ => {
                drop(permit);
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        drop(permit);
        backoff.reset();
        if shared.restarted.load(Ordering::Relaxed)
            && let Ok(mut r) = shared.reconnects.lock()
        {
            r.entry(sim.agent_id.clone()).or_insert_with(Instant::now);
        }
        shared.connected.fetch_add(1, Ordering::Relaxed);
        // Spread heartbeats over the interval instead of all at once.
        let first = Duration::from_millis(rand_ms(interval.as_millis() as u64));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, interval);
        let mut sent_at = None;
        let wait = loop {
            tokio::select! {
                _ = tick.tick() => {
                    let hb = AgentMessage::Heartbeat { status: AgentHealth::Ok, problems: Vec::new() };
                    if session.send(&hb).await.is_err() {
                        break backoff.next_delay();
                    }
                    sent_at = Some(Instant::now());
                }
                frame = session.recv() => match frame {
                    Ok(Some(HubMessage::Ack { .. })) => {
                        if let Some(t) = sent_at.take()
                            && shared.measuring.load(Ordering::Relaxed)
                            && let Ok(mut v) = shared.rtts_us.lock()
                        {
                            v.push(t.elapsed().as_micros() as u64);
                        }
                    }
                    Ok(Some(HubMessage::Revoked { .. })) => {
                        let at = Instant::now();
                        if let Some(tx) = shared.revoked.lock().ok().and_then(|mut m| m.remove(&sim.agent_id)) {
                            let _ = tx.send(at);
                        }
                        return;
                    }
                    Ok(Some(HubMessage::Shutdown { reconnect_within_ms })) => {
                        break Duration::from_millis(250 + rand_ms(reconnect_within_ms.saturating_sub(250)));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break backoff.next_delay(),
                },
            }
        };
        shared.connected.fetch_sub(1, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
    }
}

pub(super) fn rand_ms(max: u64) -> u64 {
    if max == 0 {
        0
    } else {
        rand::random_range(0..max)
    }
}
