//! `muster bench`: load against a running hub, through the same client the agent
//! uses, so the figures describe the real path (fresh TLS connection, real P-256
//! key, real CSR, real database write).

mod events;
mod hubs;
mod pool;
mod sessions;
mod sim;
mod storm;
mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use muster_client::{ClientOptions, EnrollOutcome, HubClient, Trust};
use muster_proto::CreateTokenRequest;
use tokio::sync::Semaphore;

use crate::commands::bench::sim::{metric, sim_request};
use crate::connection::{ConnectionArgs, client};
use crate::failure::render;
use crate::output::{Format, emit};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    action: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Enroll N simulated agents, each over a fresh TLS connection with its own key.
    Enroll {
        #[command(flatten)]
        conn: ConnectionArgs,
        /// How many agents to enroll.
        #[arg(long, default_value_t = 2000)]
        agents: usize,
        /// Enrollments in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[command(flatten)]
        format: Format,
    },
    /// Hold N live sessions against hubs this command starts (or --hub ones already
    /// running), and measure them.
    Sessions(sessions::SessionsArgs),
    /// One child process of `bench sessions`, holding a share of its sessions.
    #[command(hide = true)]
    SessionsWorker {
        /// The 0600 file with the identities (deleted once read).
        #[arg(long)]
        setup: std::path::PathBuf,
    },
    /// A data centre reimaged at once: N machines enroll with one token within a
    /// few seconds, through the real agent's enrollment and retries.
    EnrollStorm(storm::StormArgs),
    /// One worker process of `enroll-storm` (started by it).
    #[command(hide = true)]
    EnrollStormWorker(storm::WorkerArgs),
    /// Push latency of the live event stream: N agents flip their health at random
    /// on a running hub; one watcher times each flip to the event that shows it.
    Events {
        #[command(flatten)]
        conn: ConnectionArgs,
        /// How many simulated agents.
        #[arg(long, default_value_t = 200)]
        agents: usize,
        /// Event streams open at once (dashboards); the first is timed.
        #[arg(long, default_value_t = 1)]
        watchers: usize,
        /// How often each agent flips, on average.
        #[arg(long, default_value = "2s", value_parser = crate::duration::parse_duration)]
        flip_every: Duration,
        /// How long to watch.
        #[arg(long, default_value = "20s", value_parser = crate::duration::parse_duration)]
        window: Duration,
        /// Measure hub memory instead of latency: open watchers in these cumulative
        /// steps (ascending, e.g. 0,500,1000; the hub serves 1,000 at most) and
        /// report the hub's RSS at each and KiB per watcher over the first step.
        /// Each watcher is its own connection: raise the hub's
        /// --max-connections-per-source above the largest step.
        #[arg(long, value_delimiter = ',', value_name = "N,N,...")]
        memory_steps: Option<Vec<usize>>,
        /// With --memory-steps: how long each step settles before its RSS is read.
        #[arg(long, default_value = "5s", value_parser = crate::duration::parse_duration)]
        settle: Duration,
        #[command(flatten)]
        format: Format,
    },
    /// API-key authenticated reads: GET /api/v1/agents?limit=100 (or --path, or the
    /// Fleet page filtered by --label) over kept-alive connections.
    Api {
        #[command(flatten)]
        conn: ConnectionArgs,
        /// The path to read instead, e.g. "/?status=offline" (the Fleet page).
        #[arg(long, conflicts_with = "label")]
        path: Option<String>,
        /// Time the Fleet page filtered by this label (KEY=VALUE) instead.
        #[arg(long, value_parser = label_filter)]
        label: Option<String>,
        /// Log in as this user (password from MUSTER_PASSWORD) to read dashboard
        /// pages (--label, or a --path outside /api/).
        #[arg(long)]
        user: Option<String>,
        /// How many requests in all.
        #[arg(long, default_value_t = 5000)]
        requests: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[command(flatten)]
        format: Format,
    },
    /// Probe round trips on one live agent (a real one: `muster agent` running),
    /// one after another over a kept-alive connection, timed at the API.
    Probe {
        #[command(flatten)]
        conn: ConnectionArgs,
        /// The agent (name or id).
        agent: String,
        /// The probe, e.g. system.info.
        #[arg(default_value = "system.info")]
        probe: String,
        /// How many runs.
        #[arg(long, default_value_t = 500)]
        requests: usize,
        #[command(flatten)]
        format: Format,
    },
    /// The ceiling: fresh TLS connections, each doing only a handshake and GET /healthz.
    Handshakes {
        #[command(flatten)]
        conn: ConnectionArgs,
        /// How many connections in all.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Connections in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[command(flatten)]
        format: Format,
    },
}

impl BenchArgs {
    /// The hub connection, for the benches that use a running hub.
    pub fn connection_mut(&mut self) -> Option<&mut ConnectionArgs> {
        match &mut self.action {
            BenchCommand::Enroll { conn, .. }
            | BenchCommand::Api { conn, .. }
            | BenchCommand::Handshakes { conn, .. }
            | BenchCommand::Probe { conn, .. }
            | BenchCommand::Events { conn, .. } => Some(conn),
            BenchCommand::EnrollStorm(a) => Some(&mut a.conn),
            BenchCommand::Sessions(_)
            | BenchCommand::SessionsWorker { .. }
            | BenchCommand::EnrollStormWorker(_) => None,
        }
    }
}

pub async fn exec(args: BenchArgs) -> Result<()> {
    match args.action {
        BenchCommand::Sessions(args) => sessions::run(args).await,
        BenchCommand::SessionsWorker { setup } => worker::run(&setup).await,
        BenchCommand::EnrollStorm(args) => storm::run(args).await,
        BenchCommand::EnrollStormWorker(args) => storm::worker(args).await,
        BenchCommand::Events {
            conn,
            agents,
            watchers,
            flip_every,
            window,
            memory_steps,
            settle,
            format,
        } => {
            let admin = client(&conn)?;
            match memory_steps {
                Some(steps) => {
                    events::memory(&admin, agents, &steps, flip_every, settle, format).await
                }
                None => events::run(&admin, agents, watchers, flip_every, window, format).await,
            }
        }
        BenchCommand::Api {
            conn,
            path,
            label,
            user,
            requests,
            concurrency,
            format,
        } => {
            let path = match (path, label) {
                (Some(p), _) => p,
                (None, Some(l)) => format!("/?label={l}"),
                (None, None) => "/api/v1/agents?limit=100".to_owned(),
            };
            let admin = client(&conn)?;
            let reader = if path.starts_with("/api/") {
                admin
            } else {
                let user = user.context(
                    "dashboard pages need a login: --user USER with MUSTER_PASSWORD set",
                )?;
                let password = std::env::var("MUSTER_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty())
                    .context("--user needs MUSTER_PASSWORD")?;
                dashboard_client(&admin, &user, &password).await?
            };
            api_reads(&reader, &path, requests, concurrency, format).await
        }
        BenchCommand::Enroll {
            conn,
            agents,
            concurrency,
            format,
        } => connections(&conn, Load::Enroll, agents, concurrency, format).await,
        BenchCommand::Handshakes {
            conn,
            count,
            concurrency,
            format,
        } => connections(&conn, Load::Handshakes, count, concurrency, format).await,
        BenchCommand::Probe {
            conn,
            agent,
            probe,
            requests,
            format,
        } => probe_round_trips(&conn, &agent, &probe, requests, format).await,
    }
}

/// `requests` runs of `probe` on `agent`, one at a time: p50/p99 of the whole
/// round trip (API, hub, session, agent, back) and what the agent itself took.
async fn probe_round_trips(
    conn: &ConnectionArgs,
    agent: &str,
    probe: &str,
    requests: usize,
    format: Format,
) -> Result<()> {
    let admin = client(conn)?;
    let req = muster_proto::RunProbeRequest::default();
    // One run first, outside the figures: the connection and the agent warm up.
    let first = admin.run_probe(agent, probe, &req).await?;
    if first.outcome != muster_proto::ProbeOutcome::Ok {
        bail!(
            "{probe} on {agent} did not answer ok: {}",
            first.error.unwrap_or_default()
        );
    }
    let mut took = Vec::with_capacity(requests);
    let mut failed = 0;
    for _ in 0..requests {
        let t0 = std::time::Instant::now();
        let run = admin.run_probe(agent, probe, &req).await?;
        took.push(t0.elapsed());
        if run.outcome != muster_proto::ProbeOutcome::Ok {
            failed += 1;
        }
    }
    took.sort();
    let (p50, p99) = (percentile_ms(&took, 0.5), percentile_ms(&took, 0.99));
    let report = serde_json::json!({
        "agent": agent, "probe": probe, "requests": requests, "failed": failed,
        "p50_ms": p50, "p99_ms": p99,
    });
    emit(format, &report, |_| {
        format!(
            "{probe} on {agent}: {requests} runs, p50 {p50:.2} ms, p99 {p99:.2} ms, {failed} not ok"
        )
    })
}

/// What each fresh connection of [`connections`] does.
#[derive(Clone, Copy, PartialEq)]
enum Load {
    Enroll,
    Handshakes,
}

/// `count` fresh TLS connections, `concurrency` at a time, each enrolling a new
/// agent or only shaking hands.
async fn connections(
    conn: &ConnectionArgs,
    load: Load,
    count: usize,
    concurrency: usize,
    format: Format,
) -> Result<()> {
    let admin = client(conn)?;
    let label = match load {
        Load::Enroll => "enroll",
        Load::Handshakes => "handshakes",
    };
    if count == 0 || concurrency == 0 {
        bail!("--agents/--count and --concurrency must be at least 1");
    }
    let token = match load {
        Load::Enroll => Some(
            admin
                .create_token(&CreateTokenRequest {
                    max_uses: Some(u32::try_from(count).context("too many agents")?),
                    ttl_s: Some(3600),
                    description: Some("muster bench enroll".to_owned()),
                    ..Default::default()
                })
                .await?
                .token,
        ),
        Load::Handshakes => None,
    };
    let hub = admin.base_url().to_owned();
    let ca_pem = admin.ca().await?.ca_pem;
    let run_id = uuid_prefix();
    // How many transactions the hub needed (group commit), when it says.
    let transactions = || async {
        metric(&admin, "muster_enroll_transactions_total")
            .await
            .ok()
    };
    let transactions_before = transactions().await;
    let sem = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let permit = sem.clone().acquire_owned().await?;
        let (hub, ca_pem, token, run_id) =
            (hub.clone(), ca_pem.clone(), token.clone(), run_id.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let t0 = Instant::now();
            let result = match token {
                Some(token) => {
                    enroll_one(&hub, &ca_pem, &token, &format!("bench-{run_id}-{i}")).await
                }
                None => handshake_one(&hub, &ca_pem).await,
            };
            result.map(|()| t0.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    let mut errors = 0usize;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(d)) => latencies.push(d),
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert(render(&e));
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let elapsed = started.elapsed();
    let per_transaction = match (token.is_some(), transactions_before, transactions().await) {
        (true, Some(before), Some(after)) if after > before => {
            Some(latencies.len() as f64 / (after - before))
        }
        _ => None,
    };
    latencies.sort();
    let (p50, p99) = (
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
    );
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    let report = serde_json::json!({
        "bench": label, "count": count, "concurrency": concurrency, "ok": latencies.len(),
        "errors": errors, "seconds": elapsed.as_secs_f64(), "per_second": rate,
        "p50_ms": p50, "p99_ms": p99, "first_error": first_error,
        "enrollments_per_transaction": per_transaction,
    });
    emit(format, &report, |_| {
        let mut lines = vec![format!(
            "{label}: {} ok, {errors} errors in {:.2} s = {rate:.0}/s; latency p50 {p50:.1} ms, p99 {p99:.1} ms (concurrency {concurrency})",
            latencies.len(),
            elapsed.as_secs_f64(),
        )];
        if let Some(n) = per_transaction {
            lines.push(format!(
                "{label}: {n:.1} enrollments per database transaction (group commit)"
            ));
        }
        if let Some(e) = &first_error {
            lines.push(format!("first error: {e}"));
        }
        lines.join("\n")
    })
}

/// The `p` quantile of sorted latencies, in milliseconds (0 when there are none).
pub(super) fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn enroll_one(hub: &str, ca_pem: &str, token: &str, name: &str) -> Result<()> {
    let (_key, csr_pem) = muster_ca::new_key_and_csr(name)?;
    let client = HubClient::new(hub, muster_client::Trust::CaPem(ca_pem.to_owned()))?;
    let mut req = sim_request(name, csr_pem);
    req.enrollment_id = Some(format!("{:032x}", rand_u128()));
    match client.enroll(Some(token), &req).await? {
        EnrollOutcome::Created(_) | EnrollOutcome::Reenrolled(_) => Ok(()),
        EnrollOutcome::Pending(_) => bail!("enrollment went to the approval queue"),
    }
}

async fn handshake_one(hub: &str, ca_pem: &str) -> Result<()> {
    let client = HubClient::new(hub, muster_client::Trust::CaPem(ca_pem.to_owned()))?;
    client.healthz().await?;
    Ok(())
}

fn rand_u128() -> u128 {
    u128::from_be_bytes(*uuid::Uuid::new_v4().as_bytes())
}

fn uuid_prefix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// A client that reads the dashboard as `user` (its login cookie on every request).
pub(super) async fn dashboard_client(
    admin: &HubClient,
    user: &str,
    password: &str,
) -> Result<HubClient> {
    let ca = admin.ca().await?.ca_pem;
    let anon = HubClient::new(admin.base_url(), Trust::CaPem(ca.clone()))?;
    let (_, set_cookie) = anon.login(user, password).await?;
    let cookie = set_cookie.split(';').next().unwrap_or_default().trim();
    if cookie.is_empty() {
        bail!("{} set no login cookie", admin.base_url());
    }
    let opts = ClientOptions {
        headers: vec![("Cookie".to_owned(), cookie.to_owned())],
        ..Default::default()
    };
    Ok(HubClient::with_options(
        admin.base_url(),
        Trust::CaPem(ca),
        opts,
    )?)
}

/// `--label KEY=VALUE`, checked and written as a query value (`KEY%3DVALUE`).
fn label_filter(s: &str) -> Result<String, String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("expected KEY=VALUE, got {s:?}"));
    }
    Ok(format!("{}%3D{}", query_escape(k), query_escape(v)))
}

/// Percent-encode everything but unreserved characters.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `requests` GETs of `path`, `concurrency` at a time over one client (its pool
/// keeps TLS sessions alive, as an admin tool or dashboard would); the latencies,
/// sorted, and the size of the last answer. Any answer but 200 is an error.
pub(super) async fn timed_gets(
    client: &HubClient,
    path: &str,
    requests: usize,
    concurrency: usize,
) -> Result<(Vec<Duration>, usize)> {
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, counter, path) = (client.clone(), counter.clone(), path.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut size = 0;
            while counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                let t0 = Instant::now();
                let (status, body) = client.get_raw(&path).await?;
                lat.push(t0.elapsed());
                if status != 200 {
                    bail!("GET {path} answered {status}");
                }
                size = body.len();
            }
            Ok((lat, size))
        }));
    }
    let mut all = Vec::new();
    let mut size = 0;
    for t in tasks {
        let (lat, s) = t.await??;
        all.extend(lat);
        size = size.max(s);
    }
    all.sort();
    Ok((all, size))
}

/// `concurrency` workers sharing one client, each reading `path`.
async fn api_reads(
    client: &HubClient,
    path: &str,
    requests: usize,
    concurrency: usize,
    format: Format,
) -> Result<()> {
    let started = Instant::now();
    let (all, size) = timed_gets(client, path, requests, concurrency).await?;
    let secs = started.elapsed().as_secs_f64();
    let (p50, p99) = (percentile_ms(&all, 0.5), percentile_ms(&all, 0.99));
    let rate = all.len() as f64 / secs;
    let report = serde_json::json!({"bench": "api", "path": path, "requests": all.len(), "bytes": size, "per_second": rate, "p50_ms": p50, "p99_ms": p99});
    emit(format, &report, |_| {
        format!(
            "api: {} requests of {path} ({size} bytes) in {secs:.2} s = {rate:.0}/s; latency p50 {p50:.1} ms, p99 {p99:.1} ms (concurrency {concurrency})",
            all.len(),
        )
    })
}
