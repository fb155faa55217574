//! `muster bench sessions`: hold N live sessions against one or several hubs and
//! measure them: hub RSS per session, hub CPU per heartbeat, heartbeat round trip,
//! revoke → close (sent to a hub other than the one holding the session), connect
//! rate early and late, the fleet count each hub shows, the fleet view's cost, and
//! the machine's memory per session (hub + load generator + kernel).
//!
//! The bench starts its own hubs (`--hubs N`, on one database and secret) so that
//! it can restart one (a single hub: SIGTERM, then kill -9) or kill -9 one of
//! several and time its agents' move; or measures hubs already running (`--hub
//! URL`, steady state only). The simulated agents live in `--procs` child
//! processes ([`super::worker`]), because one process holds at most ~19,000
//! sockets.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use muster_client::{HubClient, Trust};
use muster_proto::HubState;
use serde_json::{Value, json};

use crate::commands::bench::hubs::{
    HubProc, HubSpawn, Scrape, machine_used_kib, open_files_limit, scrape, scrape_all,
};
use crate::commands::bench::pool::Pool;
use crate::commands::bench::sim::{RARE_LABEL, enroll_all};
use crate::commands::bench::worker::{Command, now_us};
use crate::commands::bench::{dashboard_client, percentile_ms, timed_gets};
use crate::connection::{parse_ca_hash, read_ca_file};
use crate::duration::parse_duration;
use crate::output::{Format, emit};

#[derive(Args)]
pub struct SessionsArgs {
    /// How many simulated agents in all, spread round-robin over the hubs.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Heartbeat interval the bench's hubs hand out.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// Steady-state window over which CPU and round trips are measured.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    window: Duration,
    /// How many agents to revoke, one by one, timing each close.
    #[arg(long, default_value_t = 100)]
    revocations: usize,
    /// Database for the bench's hubs (default: SQLite in a temporary data dir);
    /// postgres://… for --hubs above 1 (a throwaway database: the bench fills it).
    #[arg(long)]
    db: Option<String>,
    /// Start this many hubs on one database and secret; with more than one, the
    /// last is killed with kill -9 and its agents' move to the others is timed.
    #[arg(long, default_value_t = 1)]
    hubs: usize,
    /// Lease of the bench's hubs (`muster hub --hub-lease`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    hub_lease: Duration,
    /// With one hub of its own: restart it gracefully (SIGTERM), after a crash
    /// (kill -9), both in turn, or not at all; each time on the same port.
    #[arg(long, default_value = "both", value_parser = ["graceful", "crash", "both", "none"])]
    restart: String,
    /// Measure these running hubs instead (repeatable; they share one database):
    /// steady state only, nothing restarted or killed.
    #[arg(long = "hub", value_name = "URL", conflicts_with_all = ["db", "hubs"])]
    hub_urls: Vec<String>,
    /// Admin API key (mak_…) for --hub.
    #[arg(long, env = "MUSTER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The --hub hubs' CA certificate (PEM).
    #[arg(long, env = "MUSTER_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// The --hub hubs' CA hash (sha256:…), if no --ca-file.
    #[arg(long, env = "MUSTER_CA_HASH")]
    ca_hash: Option<String>,
    /// With --hub: log in as this user (password from MUSTER_PASSWORD) to time the
    /// dashboard's Fleet page too.
    #[arg(long, requires = "hub_urls")]
    user: Option<String>,
    /// Child processes holding the simulated agents' sessions (each holds at most
    /// the open-files limit less a reserve).
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// Requests timed for each fleet view (agents list first page, label filter).
    #[arg(long, default_value_t = 200)]
    fleet_requests: usize,
    /// Times to run `system.info` on every simulated agent at once (one fan-out
    /// through the first hub, which holds them all with --hubs 1), timing all
    /// results and the hub's CPU and memory during it; 0: none.
    #[arg(long, default_value_t = 0)]
    probe_rounds: usize,
    #[command(flatten)]
    format: Format,
}

pub async fn run(args: SessionsArgs) -> Result<()> {
    if args.agents == 0 || args.procs == 0 || args.hubs == 0 {
        bail!("--agents, --procs and --hubs must be at least 1");
    }
    if args.hubs > 1
        && !args
            .db
            .as_deref()
            .is_some_and(|d| d.starts_with("postgres"))
    {
        bail!("--hubs above 1 needs --db postgres://… (SQLite serves one hub)");
    }
    if let Some(limit) = open_files_limit() {
        let per_proc = args.agents.div_ceil(args.procs);
        if per_proc + 200 > limit {
            bail!(
                "{per_proc} sessions per process but the open-files limit is {limit}: raise --procs (or `ulimit -n`)"
            );
        }
    }
    let tmp = std::env::temp_dir().join(format!("muster-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = run_in(&tmp, &args).await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// The hubs under test: admin clients, and the processes when the bench owns them.
struct Fleet {
    urls: Vec<String>,
    ca_pem: String,
    admins: Vec<HubClient>,
    own: Vec<HubProc>,
    spawn: Option<HubSpawn>,
    /// Logged in to the first hub's dashboard, when the bench has a user.
    dashboard: Option<HubClient>,
}

async fn fleet(tmp: &Path, args: &SessionsArgs) -> Result<Fleet> {
    if !args.hub_urls.is_empty() {
        let key = args
            .api_key
            .clone()
            .ok_or_else(|| anyhow!("--hub needs an admin key: --api-key or MUSTER_API_KEY"))?;
        let trust = match (&args.ca_file, &args.ca_hash) {
            (Some(f), _) => Trust::CaPem(read_ca_file(f).context("--ca-file")?),
            (None, Some(h)) => Trust::Hash(parse_ca_hash("--ca-hash", h)?),
            (None, None) => bail!("--hub needs the hubs' CA: --ca-file or --ca-hash"),
        };
        let urls: Vec<String> = args
            .hub_urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect();
        let ca_pem = HubClient::new(&urls[0], trust)?.ca().await?.ca_pem;
        let admins = admins(&urls, &ca_pem, &key)?;
        let dashboard = match &args.user {
            Some(user) => {
                let password = std::env::var("MUSTER_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty())
                    .context("--user needs MUSTER_PASSWORD")?;
                Some(dashboard_client(&admins[0], user, &password).await?)
            }
            None => None,
        };
        return Ok(Fleet {
            urls,
            ca_pem,
            admins,
            own: Vec::new(),
            spawn: None,
            dashboard,
        });
    }
    let mut spawn = HubSpawn {
        heartbeat_interval: args.heartbeat_interval,
        hub_lease: args.hub_lease,
        db: args.db.clone(),
        secret: std::env::var("MUSTER_SECRET")
            .ok()
            .filter(|s| !s.is_empty()),
        first_admin: Some((
            "bench".to_owned(),
            format!("bench-{}", uuid::Uuid::new_v4()),
        )),
    };
    let first = HubProc::start(&tmp.join("hub-0"), "127.0.0.1:0", &spawn)?;
    let login = spawn.first_admin.take();
    if spawn.secret.is_none() {
        spawn.secret = Some(
            std::fs::read_to_string(first.data.join("secret"))
                .context("reading the first hub's secret")?
                .trim()
                .to_owned(),
        );
    }
    let key = std::fs::read_to_string(first.data.join("initial-admin-key"))
        .context("reading the hub's initial-admin-key")?;
    let ca_pem =
        std::fs::read_to_string(first.data.join("ca.pem")).context("reading the hub's ca.pem")?;
    let mut own = vec![first];
    for i in 1..args.hubs {
        own.push(HubProc::start(
            &tmp.join(format!("hub-{i}")),
            "127.0.0.1:0",
            &spawn,
        )?);
    }
    let urls: Vec<String> = own.iter().map(|h| h.url.clone()).collect();
    let admins = admins(&urls, &ca_pem, key.trim())?;
    let dashboard = match login {
        Some((user, password)) => Some(dashboard_client(&admins[0], &user, &password).await?),
        None => None,
    };
    Ok(Fleet {
        urls,
        ca_pem,
        admins,
        own,
        spawn: Some(spawn),
        dashboard,
    })
}

fn admins(urls: &[String], ca_pem: &str, key: &str) -> Result<Vec<HubClient>> {
    urls.iter()
        .map(
            |u| Ok(HubClient::new(u, Trust::CaPem(ca_pem.to_owned()))?.with_bearer(key.to_owned())),
        )
        .collect()
}

async fn run_in(tmp: &Path, args: &SessionsArgs) -> Result<()> {
    let n = args.agents;
    let mut fleet = fleet(tmp, args).await?;
    let h = fleet.urls.len();
    let mut report = json!({"agents": n, "hubs": h, "procs": args.procs, "hub_urls": fleet.urls});
    let mut text = vec![format!(
        "sessions bench: {n} agents on {h} hub(s){}, {} load process(es)",
        if fleet.own.is_empty() {
            " already running"
        } else {
            ""
        },
        args.procs
    )];

    eprintln!("enrolling {n} agents…");
    let enroll_t0 = Instant::now();
    let sims = enroll_all(&fleet.admins[0], &fleet.urls, &fleet.ca_pem, n).await?;
    let enroll_s = enroll_t0.elapsed().as_secs_f64();
    text.push(format!(
        "  enrolled                    {n} in {enroll_s:.1} s = {:.0}/s",
        n as f64 / enroll_s
    ));
    report["enroll_seconds"] = json!(enroll_s);
    let revoke_ids: Vec<(String, usize)> = sims
        .iter()
        .enumerate()
        .take(args.revocations.min(n))
        .map(|(i, s)| (s.agent_id.clone(), i % h))
        .collect();

    let before = scrape_all(&fleet.admins).await?;
    let mem_before = machine_used_kib()?;
    eprintln!("opening {n} sessions from {} process(es)…", args.procs);
    let opened_us = now_us();
    let mut pool = Pool::start(tmp, args.procs, &fleet.urls, &fleet.ca_pem, sims)?;
    let open_within = Duration::from_secs(120 + (n / 200) as u64);
    if let Err(e) = wait_for(
        || Ok(pool.totals()?.connected >= n),
        open_within,
        "all sessions open",
    )
    .await
    {
        let t = pool.totals()?;
        bail!(
            "{e}: {} of {n} connected (per hub {:?}), {} gave up",
            t.connected,
            t.per_hub,
            t.gave_up
        );
    }
    let open_s = (now_us() - opened_us) as f64 / 1e6;
    let connects = pool.ask(Command::Connects).await?;
    let k = connects.len().min(1000);
    let rate_first = if k > 0 {
        k as f64 / ((connects[k - 1].saturating_sub(opened_us)).max(1) as f64 / 1e6)
    } else {
        0.0
    };
    let rate_last = if connects.len() > k && k > 1 {
        let end = connects.len() - 1;
        k as f64 / ((connects[end] - connects[end - k]).max(1) as f64 / 1e6)
    } else {
        rate_first
    };
    text.push(format!(
        "  sessions opened in          {open_s:.1} s; connects/s first {k}: {rate_first:.0}, last {k}: {rate_last:.0}"
    ));
    report["sessions_open_seconds"] = json!(open_s);
    report["connects_per_s_first_1000"] = json!(rate_first);
    report["connects_per_s_last_1000"] = json!(rate_last);

    // Let every session send a heartbeat or two before measuring memory.
    pool.tell(Command::Measure)?;
    tokio::time::sleep(args.heartbeat_interval + Duration::from_secs(2)).await;
    let after = scrape_all(&fleet.admins).await?;
    let mem_after = machine_used_kib()?;
    let mem_per = (mem_after as f64 - mem_before as f64) / n as f64;
    let mut per_hub = Vec::new();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let held = a.sessions.saturating_sub(b.sessions).max(1);
        let kib = a.rss_kib.saturating_sub(b.rss_kib) as f64 / held as f64;
        text.push(format!(
            "  hub {i} RSS                   {} KiB -> {} KiB with {} sessions = {kib:.1} KiB per session",
            b.rss_kib, a.rss_kib, a.sessions
        ));
        per_hub.push(
            json!({"url": fleet.urls[i], "rss_before_kib": b.rss_kib, "rss_after_kib": a.rss_kib,
            "sessions": a.sessions, "rss_per_session_kib": kib}),
        );
    }
    let rss_growth: u64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.rss_kib.saturating_sub(b.rss_kib))
        .sum();
    let rss_per = rss_growth as f64 / n as f64;
    text.push(format!(
        "  hub RSS, all hubs           {rss_per:.1} KiB per session"
    ));
    text.push(format!(
        "  machine memory              {mem_before} KiB -> {mem_after} KiB used = {mem_per:.1} KiB per session (hubs + load generator + kernel)"
    ));
    report["hub_rss_per_session_kib"] = json!(rss_per);
    report["machine_used_before_kib"] = json!(mem_before);
    report["machine_used_after_kib"] = json!(mem_after);
    report["machine_kib_per_session"] = json!(mem_per);

    eprintln!("measuring steady heartbeats for {:?}…", args.window);
    let w0 = scrape_all(&fleet.admins).await?;
    tokio::time::sleep(args.window).await;
    let w1 = scrape_all(&fleet.admins).await?;
    let rtts = pool.ask(Command::Rtts).await?;
    let (mut cpu, mut beats) = (0.0, 0u64);
    for (i, (a, b)) in w0.iter().zip(&w1).enumerate() {
        let (c, hb) = (b.cpu_s - a.cpu_s, b.heartbeats.saturating_sub(a.heartbeats));
        cpu += c;
        beats += hb;
        let us = c * 1e6 / hb.max(1) as f64;
        text.push(format!(
            "  hub {i} CPU per heartbeat     {us:.1} us ({hb} heartbeats, {c:.2} CPU s in {:?})",
            args.window
        ));
        per_hub[i]["cpu_per_heartbeat_us"] = json!(us);
        per_hub[i]["heartbeats_in_window"] = json!(hb);
    }
    let cpu_per_beat = cpu * 1e6 / beats.max(1) as f64;
    let (rtt50, rtt99) = (pct(&rtts, 0.5) as f64 / 1e3, pct(&rtts, 0.99) as f64 / 1e3);
    text.push(format!(
        "  hub CPU per heartbeat, all  {cpu_per_beat:.1} us ({beats} heartbeats)"
    ));
    text.push(format!(
        "  heartbeat round trip        p50 {rtt50:.2} ms, p99 {rtt99:.2} ms ({} samples)",
        rtts.len()
    ));
    report["hub_cpu_per_heartbeat_us"] = json!(cpu_per_beat);
    report["heartbeats_in_window"] = json!(beats);
    report["heartbeat_rtt_p50_ms"] = json!(rtt50);
    report["heartbeat_rtt_p99_ms"] = json!(rtt99);

    // The fleet as every hub shows it (presence rows are read every half second).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = scrape_all(&fleet.admins).await?;
    let online: Vec<u64> = seen.iter().map(|s| s.online).collect();
    text.push(format!(
        "  fleet online, seen per hub  {online:?} (of {n} agents)"
    ));
    report["fleet_online_per_hub"] = json!(online);

    if args.probe_rounds > 0 {
        eprintln!(
            "probe fan-out: system.info on every agent, {} rounds…",
            args.probe_rounds
        );
        let admin = &fleet.admins[0];
        let mut rounds = Vec::new();
        for round in 0..args.probe_rounds {
            let before = scrape_all(std::slice::from_ref(admin)).await?;
            // The hub's RSS sampled while the fan-out runs: its peak.
            let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
            let (flag, sampler_admin) = (sampling.clone(), admin.clone());
            let sampler = tokio::spawn(async move {
                let mut peak = 0u64;
                while flag.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(s) = scrape_all(std::slice::from_ref(&sampler_admin)).await {
                        peak = peak.max(s[0].rss_kib);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                peak
            });
            let t0 = Instant::now();
            let runs = admin
                .run_probes(
                    "system.info",
                    &muster_proto::RunProbeRequest {
                        agents: Some("*".to_owned()),
                        timeout_s: Some(60),
                        ..Default::default()
                    },
                )
                .await?;
            let took = t0.elapsed();
            sampling.store(false, std::sync::atomic::Ordering::Relaxed);
            let peak = sampler.await.unwrap_or(0);
            let after = scrape_all(std::slice::from_ref(admin)).await?;
            let ok = runs
                .iter()
                .filter(|r| r.outcome == muster_proto::ProbeOutcome::Ok)
                .count();
            let cpu = after[0].cpu_s - before[0].cpu_s;
            text.push(format!(
                "  probe fan-out round {round}    {ok} of {} ok, all results in {:.2} s, hub CPU {cpu:.2} s, RSS {} -> peak {} KiB",
                runs.len(),
                took.as_secs_f64(),
                before[0].rss_kib,
                peak.max(after[0].rss_kib)
            ));
            rounds.push(json!({
                "agents": runs.len(), "ok": ok, "seconds": took.as_secs_f64(),
                "hub_cpu_s": cpu, "rss_before_kib": before[0].rss_kib,
                "rss_peak_kib": peak.max(after[0].rss_kib),
            }));
        }
        report["probe_fan_out"] = json!(rounds);
    }

    eprintln!("timing the fleet view…");
    let mut views = serde_json::Map::new();
    let rare = format!("/?label={}%3D{}", RARE_LABEL.0, RARE_LABEL.1);
    let mut pages = vec![(
        "api_first_page",
        "/api/v1/agents?limit=100",
        &fleet.admins[0],
    )];
    if let Some(dash) = &fleet.dashboard {
        pages.push(("fleet_page_first", "/", dash));
        pages.push(("fleet_page_label_1_in_1000", rare.as_str(), dash));
    }
    for (what, path, client) in pages {
        let (lat, size) = timed_gets(client, path, args.fleet_requests, 1).await?;
        let (p50, p99) = (percentile_ms(&lat, 0.5), percentile_ms(&lat, 0.99));
        text.push(format!(
            "  {what:<27} p50 {p50:.1} ms, p99 {p99:.1} ms ({size} bytes, {} requests)",
            lat.len()
        ));
        views.insert(
            what.to_owned(),
            json!({"path": path, "p50_ms": p50, "p99_ms": p99, "bytes": size}),
        );
    }
    report["fleet_view"] = Value::Object(views);

    eprintln!("revoking {} agents one by one…", revoke_ids.len());
    let mut revoke_ms = Vec::new();
    for (id, held_by) in &revoke_ids {
        // Sent to the next hub: the revocation crosses hubs whenever there are two.
        let via = &fleet.admins[(held_by + 1) % h];
        let rx = pool.on_revoked(id)?;
        let t0 = now_us();
        via.revoke_agent(id).await?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(at)) => revoke_ms.push(at.saturating_sub(t0) as f64 / 1000.0),
            _ => bail!("agent {id} was not told of its revocation within 10 s"),
        }
    }
    revoke_ms.sort_by(f64::total_cmp);
    let (rv50, rv99) = (pctf(&revoke_ms, 0.5), pctf(&revoke_ms, 0.99));
    text.push(format!(
        "  revoke -> session closed    p50 {rv50:.1} ms, p99 {rv99:.1} ms ({} revocations{})",
        revoke_ms.len(),
        if h > 1 {
            ", each sent to another hub"
        } else {
            ""
        }
    ));
    report["revocations"] = json!(revoke_ms.len());
    report["revoke_to_close_p50_ms"] = json!(rv50);
    report["revoke_to_close_p99_ms"] = json!(rv99);
    report["per_hub"] = json!(per_hub);
    let alive = n - revoke_ms.len();

    if fleet.own.len() == 1 {
        let modes: &[&str] = match args.restart.as_str() {
            "both" => &["graceful", "crash"],
            "graceful" => &["graceful"],
            "crash" => &["crash"],
            _ => &[],
        };
        for mode in modes {
            match restart(&mut fleet, &mut pool, mode, alive).await {
                Ok((lines, value)) => {
                    text.extend(lines);
                    report[format!("restart_{mode}")] = value;
                }
                // Keep the figures measured so far.
                Err(e) => {
                    text.push(format!("  {mode} restart failed: {e}"));
                    report[format!("restart_{mode}")] = json!({"error": e.to_string()});
                    break;
                }
            }
        }
    } else if fleet.own.len() > 1 {
        let (lines, value) = kill_one(&mut fleet, &mut pool, alive, args.hub_lease).await?;
        text.extend(lines);
        report["kill"] = value;
    }
    pool.stop();
    // Measured: no need to wait for a graceful stop of thousands of sessions.
    for hub in fleet.own.drain(..) {
        hub.crash()?;
    }
    emit(args.format, &report, |_| text.join("\n"))
}

/// Stop the one hub (SIGTERM or kill -9), start it again on the same port, and time
/// every agent's return from the moment it is up again.
async fn restart(
    fleet: &mut Fleet,
    pool: &mut Pool,
    mode: &str,
    alive: usize,
) -> Result<(Vec<String>, Value)> {
    eprintln!("restarting the hub ({mode}) with {alive} agents connected…");
    let hub = fleet
        .own
        .pop()
        .ok_or_else(|| anyhow!("no hub to restart"))?;
    let spawn = fleet
        .spawn
        .as_ref()
        .ok_or_else(|| anyhow!("not the bench's own hub"))?;
    let (listen, data) = (hub.listen(), hub.data.clone());
    pool.tell(Command::Mark)?;
    let stopped_at = Instant::now();
    let stop_s = if mode == "crash" {
        hub.crash()?;
        0.0
    } else {
        hub.stop()?.as_secs_f64()
    };
    let hub = HubProc::start(&data, &listen, spawn)?;
    let ready_us = now_us();
    let gap = stopped_at.elapsed().as_secs_f64();
    fleet.own.push(hub);
    let waited = wait_for(
        || Ok(pool.totals()?.back >= alive),
        Duration::from_secs(300),
        "every agent back",
    )
    .await;
    let back_us = pool.ask(Command::Back).await?;
    let back: Vec<f64> = back_us
        .iter()
        .map(|t| t.saturating_sub(ready_us) as f64 / 1e6)
        .collect();
    let gave_up = pool.totals()?.gave_up;
    let busiest = busiest_second(&back);
    let last = back.last().copied().unwrap_or(0.0);
    let line = format!(
        "  after a {mode} restart{} {} of {alive} back, {gave_up} gave up; p50 {:.1} s, p99 {:.1} s, last {last:.1} s after the hub was up ({gap:.1} s down, {stop_s:.1} s of it stopping); busiest second {busiest}{}",
        if mode == "crash" { "  " } else { "" },
        back.len(),
        pctf(&back, 0.5),
        pctf(&back, 0.99),
        if waited.is_err() {
            " (stopped waiting after 300 s)"
        } else {
            ""
        },
    );
    Ok((
        vec![line],
        json!({"back": back.len(), "of": alive, "gave_up": gave_up, "down_seconds": gap, "stop_seconds": stop_s,
            "p50_s": pctf(&back, 0.5), "p99_s": pctf(&back, 0.99), "last_s": last, "busiest_second": busiest}),
    ))
}

/// kill -9 the last hub; time until the first hub shows it expired and its agents
/// offline, and until they are all connected (and shown online) on the others.
async fn kill_one(
    fleet: &mut Fleet,
    pool: &mut Pool,
    alive: usize,
    lease: Duration,
) -> Result<(Vec<String>, Value)> {
    let victim = fleet.own.len() - 1;
    let watcher = &fleet.admins[0];
    // The workers report every tenth of a second: let the last revocations show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = pool.totals()?.per_hub[victim];
    let online_before = scrape(watcher).await?.online;
    eprintln!("kill -9 of hub {victim} holding {held} sessions…");
    pool.tell(Command::Mark)?;
    let hub = fleet.own.pop().ok_or_else(|| anyhow!("no hub to kill"))?;
    let killed = Instant::now();
    let killed_us = now_us();
    hub.crash()?;
    let (mut expired, mut dropped, mut all_back, mut all_online) = (None, None, None, None);
    let mut lowest = (online_before, 0.0);
    let deadline = killed + Duration::from_secs(180).max(lease * 6);
    while Instant::now() < deadline {
        let t = killed.elapsed().as_secs_f64();
        let s: Scrape = scrape(watcher).await?;
        if s.online < lowest.0 {
            lowest = (s.online, t);
        }
        if dropped.is_none() && s.online + held as u64 <= online_before {
            dropped = Some(t);
        }
        if expired.is_none() {
            let hubs = watcher.list_hubs().await?;
            if hubs
                .iter()
                .any(|x| x.address == fleet.urls[victim] && x.state != HubState::Live)
            {
                expired = Some(t);
            }
        }
        let totals = pool.totals()?;
        if all_back.is_none() && totals.back + totals.gave_up >= held && totals.connected >= alive {
            all_back = Some(t);
        }
        if all_online.is_none() && expired.is_some() && s.online >= alive as u64 {
            all_online = Some(t);
        }
        if expired.is_some() && all_back.is_some() && all_online.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let totals = pool.totals()?;
    let back_us = pool.ask(Command::Back).await?;
    let back: Vec<f64> = back_us
        .iter()
        .map(|t| t.saturating_sub(killed_us) as f64 / 1e6)
        .collect();
    let show = |v: Option<f64>| v.map_or("not within 180 s".to_owned(), |s| format!("{s:.1} s"));
    let lines = vec![
        format!(
            "  kill -9 of hub {victim}            held {held} sessions; fleet online seen by hub 0 before: {online_before}"
        ),
        format!(
            "    shown expired on hub 0    {} (lease {:?}); its agents then count offline",
            show(expired),
            lease
        ),
        format!(
            "    online dropped by {held:<6}  {}; lowest online count {} at {:.1} s",
            show(dropped),
            lowest.0,
            lowest.1
        ),
        format!(
            "    all connected elsewhere   {} ({} reconnected, {} gave up; p50 {:.1} s, last {:.1} s, busiest second {})",
            show(all_back),
            back.len(),
            totals.gave_up,
            pctf(&back, 0.5),
            back.last().copied().unwrap_or(0.0),
            busiest_second(&back)
        ),
        format!(
            "    all shown online again    {} (sessions per hub now {:?}, {} connected)",
            show(all_online),
            &totals.per_hub,
            totals.connected
        ),
    ];
    Ok((
        lines,
        json!({"hub": victim, "held": held, "online_before": online_before,
            "expired_s": expired, "online_dropped_by_held_s": dropped,
            "lowest_online": lowest.0, "lowest_online_at_s": lowest.1,
            "all_connected_elsewhere_s": all_back, "reconnected": back.len(), "gave_up": totals.gave_up,
            "reconnect_p50_s": pctf(&back, 0.5), "reconnect_last_s": back.last().copied().unwrap_or(0.0),
            "busiest_second": busiest_second(&back), "all_online_again_s": all_online,
            "per_hub_after": &totals.per_hub[..victim]}),
    ))
}

async fn wait_for(
    mut done: impl FnMut() -> Result<bool>,
    within: Duration,
    what: &str,
) -> Result<()> {
    let deadline = Instant::now() + within;
    while !done()? {
        if Instant::now() > deadline {
            bail!("gave up waiting for {what} after {within:?}");
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
