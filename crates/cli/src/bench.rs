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
    let admin = client(conn)?;
    let (label, count, concurrency, json) = match &cmd {
        BenchCommand::Enroll {
            agents,
            concurrency,
            json,
        } => ("enroll", *agents, *concurrency, *json),
        BenchCommand::Sessions(_) => return Ok(()),
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
        BenchCommand::Handshakes { .. } | BenchCommand::Sessions(_) => None,
    };
    let hub = admin.base_url().to_owned();
    let ca_pem = admin.ca().await.map_err(|e| e.to_string())?.ca_pem;
    let run_id = uuid_prefix();
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
        if let Some(e) = first_error {
            println!("first error: {e}");
        }
    }
    Ok(())
}

async fn enroll_one(hub: &str, ca_pem: &str, token: &str, name: &str) -> Result<(), String> {
    let (_key, csr_pem) = muster_ca::new_key_and_csr(name).map_err(|e| e.to_string())?;
    let client = HubClient::new(hub, muster_client::Trust::CaPem(ca_pem.to_owned()))
        .map_err(|e| e.to_string())?;
    let req = EnrollRequest {
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
        enrollment_id: Some(format!("{:032x}", rand_u128())),
        protocol_version: Some(PROTOCOL_VERSION),
        keep_agent_key: false,
    };
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
