//! `muster bench enroll-storm`: a data centre reimaged at once (SPEC §12). N machines
//! enroll with one multi-use token, each starting at a random moment within a few
//! seconds, through the real agent's enrollment (`muster_agent::enroll`: its key,
//! its config dir, its retries when the hub says it is busy or closes the door), in
//! child processes (one process may hold 20,000 open files here). Reports whether
//! every machine ended enrolled, the time to the last one, and the hub's memory.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use muster_client::HubClient;
use muster_proto::CreateTokenRequest;

use crate::commands::bench::sim::metric;
use crate::connection::{ConnectionArgs, client};
use crate::failure::render;
use crate::output::{Format, emit};

/// Machines per worker process: each holds a connection per enrollment in flight.
const PER_PROCESS: usize = 9_000;
/// Where workers get the token (not on their command line, which `ps` shows).
const TOKEN_ENV: &str = "MUSTER_BENCH_STORM_TOKEN";

#[derive(Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// How many machines enroll.
    #[arg(long, default_value_t = 20_000)]
    agents: usize,
    /// Each machine starts at a random moment within this window.
    #[arg(long, default_value = "3s", value_parser = crate::duration::parse_duration)]
    within: Duration,
    /// The hub's process id, to sample its memory from /proc during the storm
    /// (default: from its /metrics, when it answers).
    #[arg(long)]
    hub_pid: Option<u32>,
    #[command(flatten)]
    format: Format,
}

/// One worker's share (hidden: `enroll-storm` starts these itself).
#[derive(Args)]
pub struct WorkerArgs {
    /// The hub URL.
    #[arg(long)]
    hub: String,
    /// The hub CA's hash.
    #[arg(long)]
    ca_hash: String,
    /// Index of this worker's first machine.
    #[arg(long)]
    first: usize,
    /// How many machines this worker enrolls.
    #[arg(long)]
    count: usize,
    /// When the storm starts (unix ms).
    #[arg(long)]
    start_ms: i64,
    /// The start window (ms).
    #[arg(long)]
    within_ms: u64,
    /// Config dirs go under here.
    #[arg(long)]
    dir: PathBuf,
    /// Names are `storm-<run>-<index>`.
    #[arg(long)]
    run: String,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn hub_rss_kib(admin: &HubClient, pid: Option<u32>) -> Option<u64> {
    match pid {
        Some(pid) => rss_kib(pid),
        None => metric(admin, "process_resident_memory_bytes")
            .await
            .ok()
            .map(|b| (b / 1024.0) as u64),
    }
}

pub async fn run(args: StormArgs) -> Result<()> {
    let n = args.agents;
    if n == 0 {
        bail!("--agents must be at least 1");
    }
    let admin = client(&args.conn)?;
    let ca_hash = muster_ca::CaHash::of_pem(&admin.ca().await?.ca_pem)
        .map_err(|e| anyhow!("the hub's CA: {e}"))?
        .to_string();
    let counter = |name: &'static str| {
        let admin = admin.clone();
        async move { metric(&admin, name).await.unwrap_or(0.0) }
    };
    let token = admin
        .create_token(&CreateTokenRequest {
            max_uses: Some(u32::try_from(n).context("too many agents")?),
            ttl_s: Some(3600),
            description: Some("muster bench enroll-storm".to_owned()),
            ..Default::default()
        })
        .await?;
    let refused_before = counter("muster_handshakes_refused_total").await;
    let agents_before = admin.fleet_summary().await?.total;
    let rss_before = hub_rss_kib(&admin, args.hub_pid).await;

    let tmp = std::env::temp_dir().join(format!("muster-storm-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let exe = std::env::current_exe().context("cannot find this binary")?;
    // All workers start the storm at one moment, once they are all up.
    let start_ms = now_ms() + 2_000;
    let procs = n.div_ceil(PER_PROCESS);
    let mut children = Vec::new();
    for p in 0..procs {
        let first = p * n / procs;
        let count = (p + 1) * n / procs - first;
        let child = Command::new(&exe)
            .args(["bench", "enroll-storm-worker", "--hub", admin.base_url()])
            .args(["--ca-hash", &ca_hash, "--run", &run])
            .args(["--first", &first.to_string(), "--count", &count.to_string()])
            .args(["--start-ms", &start_ms.to_string()])
            .args(["--within-ms", &args.within.as_millis().to_string()])
            .arg("--dir")
            .arg(&tmp)
            .env(TOKEN_ENV, &token.token)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start a worker")?;
        children.push(child);
    }
    eprintln!(
        "{n} machines enrolling within {:?} from {procs} processes…",
        args.within
    );

    // Sample the hub's memory while the workers run.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_before.unwrap_or(0)));
    let sampler = {
        let (admin, done, peak, pid) = (admin.clone(), done.clone(), peak.clone(), args.hub_pid);
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = hub_rss_kib(&admin, pid).await {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let results = tokio::task::spawn_blocking(move || collect(children))
        .await
        .context("collecting the workers' results")??;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let _ = std::fs::remove_dir_all(&tmp);

    let mut times: Vec<f64> = Vec::new();
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    for r in &results {
        match &r.error {
            None => times.push((r.at_ms - start_ms) as f64 / 1000.0),
            Some(e) => *errors.entry(e.clone()).or_default() += 1,
        }
    }
    times.sort_by(f64::total_cmp);
    let failed: usize = errors.values().sum();
    let missing = n.saturating_sub(results.len());
    let pct = |p: f64| {
        times
            .get(((times.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let agents_after = admin.fleet_summary().await?.total;
    let uses = admin
        .list_tokens()
        .await?
        .into_iter()
        .find(|t| t.id == token.id)
        .map(|t| t.uses);
    let refused = counter("muster_handshakes_refused_total").await - refused_before;
    let rss_after = hub_rss_kib(&admin, args.hub_pid).await;
    let report = serde_json::json!({
        "machines": n,
        "window_s": args.within.as_secs_f64(),
        "processes": procs,
        "enrolled": times.len(),
        "failed": failed,
        "no_answer": missing,
        "errors": errors,
        "last_enrolled_s": times.last().copied().unwrap_or(0.0),
        "enrolled_p50_s": pct(0.5),
        "enrolled_p99_s": pct(0.99),
        "agents_created": agents_after - agents_before,
        "token_uses": uses,
        "handshakes_refused": refused,
        "hub_rss_before_kib": rss_before,
        "hub_rss_peak_kib": peak.load(Ordering::Relaxed),
        "hub_rss_after_kib": rss_after,
    });
    emit(args.format, &report, |_| {
        let mut lines = vec![
            format!(
                "enroll storm: {n} machines starting within {:?} ({procs} processes)",
                args.within
            ),
            format!(
                "  enrolled {} of {n}, {failed} gave up, {missing} without an answer",
                times.len()
            ),
            format!(
                "  enrolled by  p50 {:.1} s, p99 {:.1} s, last {:.1} s after the storm began",
                pct(0.5),
                pct(0.99),
                times.last().copied().unwrap_or(0.0)
            ),
            format!(
                "  agents created {}, token uses {}, handshakes refused at the door {refused:.0}",
                agents_after - agents_before,
                uses.map_or("?".to_owned(), |u| u.to_string())
            ),
            format!(
                "  hub RSS {} KiB before, {} KiB at peak, {} KiB after",
                rss_before.map_or("?".to_owned(), |k| k.to_string()),
                peak.load(Ordering::Relaxed),
                rss_after.map_or("?".to_owned(), |k| k.to_string())
            ),
        ];
        for (e, count) in errors.iter().take(5) {
            lines.push(format!("  {count} × {e}"));
        }
        lines.join("\n")
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Outcome {
    at_ms: i64,
    error: Option<String>,
}

/// Read every worker's lines until it exits.
fn collect(children: Vec<std::process::Child>) -> Result<Vec<Outcome>> {
    let mut readers = Vec::new();
    for mut child in children {
        let out = child.stdout.take().context("a worker's output")?;
        readers.push(std::thread::spawn(move || {
            let mut got = Vec::new();
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(o) = serde_json::from_str::<Outcome>(&line) {
                    got.push(o);
                }
            }
            let _ = child.wait();
            got
        }));
    }
    let mut all = Vec::new();
    for r in readers {
        all.extend(
            r.join()
                .map_err(|_| anyhow!("a worker's reader panicked"))?,
        );
    }
    Ok(all)
}

/// A worker: enroll `count` machines, each from its own config dir, starting at
/// random moments in the window; one JSON line per machine on stdout.
pub async fn worker(args: WorkerArgs) -> Result<()> {
    let token = std::env::var(TOKEN_ENV).with_context(|| format!("{TOKEN_ENV} is not set"))?;
    let start = Instant::now()
        + Duration::from_millis(u64::try_from(args.start_ms - now_ms()).unwrap_or(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in args.first..args.first + args.count {
        let offset = Duration::from_millis(crate::commands::bench::sim::rand_ms(args.within_ms));
        let opts = muster_agent::EnrollOptions {
            hub_urls: vec![args.hub.clone()],
            token: Some(token.clone()),
            name: Some(format!("storm-{}-{i}", args.run)),
            ca_hash: Some(args.ca_hash.clone()),
            ..Default::default()
        };
        let dir = config_dir(&args.dir, i);
        let tx = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((start + offset).into()).await;
            let result = muster_agent::enroll(&opts, &dir).await;
            let _ = tx.send(Outcome {
                at_ms: now_ms(),
                error: result.err().map(|e| render(&anyhow::Error::new(e))),
            });
        });
    }
    drop(tx);
    let mut stdout = std::io::stdout().lock();
    while let Some(o) = rx.recv().await {
        writeln!(stdout, "{}", serde_json::to_string(&o)?)?;
    }
    Ok(())
}

fn config_dir(root: &Path, i: usize) -> muster_agent::configdir::ConfigDir {
    muster_agent::configdir::ConfigDir::new(root.join(i.to_string()))
}
