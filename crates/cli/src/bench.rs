//! `muster bench`: load against a running hub, through the same client the agent
//! uses, so the figures describe the real path (fresh TLS connection, real P-256
//! key, real CSR, real database write).

use std::sync::Arc;
use std::time::Instant;

use clap::Subcommand;
use muster_client::{EnrollOutcome, HubClient};
use muster_proto::{CreateTokenRequest, EnrollRequest, PROTOCOL_VERSION};
use tokio::sync::Semaphore;

use crate::admin::{ConnectionArgs, client};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Enroll N simulated agents, each over a fresh TLS connection with its own key.
    Enroll {
        #[arg(long, default_value_t = 2000)]
        agents: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long)]
        json: bool,
    },
    /// Hold N live sessions against a hub this command starts, and measure them.
    Sessions(crate::bench_sessions::SessionsArgs),
    /// API-key authenticated reads: GET /api/v1/agents?limit=100 over kept-alive connections.
    Api {
        #[arg(long, default_value_t = 5000)]
        requests: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long)]
        json: bool,
    },
    /// The ceiling: fresh TLS connections, each doing only a handshake and GET /healthz.
    Handshakes {
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(conn: &ConnectionArgs, cmd: BenchCommand) -> Result<(), String> {
    if let BenchCommand::Sessions(args) = cmd {
        return crate::bench_sessions::run(args).await;
    }
    if let BenchCommand::Api {
        requests,
        concurrency,
        json,
    } = cmd
    {
        return api_reads(&client(conn)?, requests, concurrency, json).await;
    }
    let admin = client(conn)?;
    let (label, count, concurrency, json) = match &cmd {
        BenchCommand::Enroll {
            agents,
            concurrency,
            json,
        } => ("enroll", *agents, *concurrency, *json),
        BenchCommand::Sessions(_) | BenchCommand::Api { .. } => return Ok(()),
        BenchCommand::Handshakes {
            count,
            concurrency,
            json,
        } => ("handshakes", *count, *concurrency, *json),
    };
    if count == 0 || concurrency == 0 {
        return Err("--agents/--count and --concurrency must be at least 1".to_owned());
    }
    let token = match cmd {
        BenchCommand::Enroll { .. } => Some(
            admin
                .create_token(&CreateTokenRequest {
                    max_uses: Some(u32::try_from(count).map_err(|_| "too many agents")?),
                    ttl_s: Some(3600),
                    description: Some("muster bench enroll".to_owned()),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?
                .token,
        ),
        BenchCommand::Handshakes { .. } | BenchCommand::Sessions(_) | BenchCommand::Api { .. } => {
            None
        }
    };
    let hub = admin.base_url().to_owned();
    let ca_pem = admin.ca().await.map_err(|e| e.to_string())?.ca_pem;
    let run_id = uuid_prefix();
    // How many transactions the hub needed (group commit), when it says.
    let transactions = || async {
        crate::bench_sessions::metric(&admin, "muster_enroll_transactions_total")
            .await
            .ok()
    };
    let transactions_before = transactions().await;
    let sem = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
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
                first_error.get_or_insert(e);
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
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let idx = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[idx.min(latencies.len() - 1)].as_secs_f64() * 1000.0
    };
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "bench": label, "count": count, "concurrency": concurrency, "ok": latencies.len(),
                "errors": errors, "seconds": elapsed.as_secs_f64(), "per_second": rate,
                "p50_ms": pct(0.50), "p99_ms": pct(0.99), "first_error": first_error,
                "enrollments_per_transaction": per_transaction,
            })
        );
    } else {
        println!(
            "{label}: {} ok, {errors} errors in {:.2} s = {rate:.0}/s; latency p50 {:.1} ms, p99 {:.1} ms (concurrency {concurrency})",
            latencies.len(),
            elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99)
        );
        if let Some(n) = per_transaction {
            println!("{label}: {n:.1} enrollments per database transaction (group commit)");
        }
        if let Some(e) = first_error {
            println!("first error: {e}");
        }
    }
    Ok(())
}

/// What a simulated agent named `name` sends to enroll (both benches).
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

async fn enroll_one(hub: &str, ca_pem: &str, token: &str, name: &str) -> Result<(), String> {
    let (_key, csr_pem) = muster_ca::new_key_and_csr(name).map_err(|e| e.to_string())?;
    let client = HubClient::new(hub, muster_client::Trust::CaPem(ca_pem.to_owned()))
        .map_err(|e| e.to_string())?;
    let mut req = sim_request(name, csr_pem);
    req.enrollment_id = Some(format!("{:032x}", rand_u128()));
    match client
        .enroll(Some(token), &req)
        .await
        .map_err(|e| e.to_string())?
    {
        EnrollOutcome::Created(_) | EnrollOutcome::Reenrolled(_) => Ok(()),
        EnrollOutcome::Pending(_) => Err("enrollment went to the approval queue".to_owned()),
    }
}

async fn handshake_one(hub: &str, ca_pem: &str) -> Result<(), String> {
    let client = HubClient::new(hub, muster_client::Trust::CaPem(ca_pem.to_owned()))
        .map_err(|e| e.to_string())?;
    client
        .healthz()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn rand_u128() -> u128 {
    let mut buf = [0u8; 16];
    let id = uuid::Uuid::new_v4();
    buf.copy_from_slice(id.as_bytes());
    u128::from_be_bytes(buf)
}

fn uuid_prefix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// `concurrency` workers sharing one client (its connection pool keeps TLS sessions
/// alive, as an admin tool or dashboard would), each reading the first page.
async fn api_reads(
    client: &HubClient,
    requests: usize,
    concurrency: usize,
    json: bool,
) -> Result<(), String> {
    let first = client
        .agents_page(100, None)
        .await
        .map_err(|e| e.to_string())?;
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, counter) = (client.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                let t0 = Instant::now();
                client
                    .agents_page(100, None)
                    .await
                    .map_err(|e| e.to_string())?;
                lat.push(t0.elapsed());
            }
            Ok::<_, String>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let rate = all.len() as f64 / secs;
    if json {
        println!(
            "{}",
            serde_json::json!({"bench": "api", "requests": all.len(), "page": first.agents.len(), "per_second": rate, "p50_ms": pct(0.5), "p99_ms": pct(0.99)})
        );
    } else {
        println!(
            "api: {} requests of a {}-agent page in {secs:.2} s = {rate:.0}/s; latency p50 {:.1} ms, p99 {:.1} ms (concurrency {concurrency})",
            all.len(),
            first.agents.len(),
            pct(0.5),
            pct(0.99)
        );
    }
    Ok(())
}
