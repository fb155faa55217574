//! What the audit chain costs an enrollment: the same enrollment transaction
//! (token use, agent row, enrollment id, audit entry), N times with the chain and N
//! times without, in one run, on SQLite and (when `MUSTER_TEST_POSTGRES_URL` is set)
//! PostgreSQL. `cargo bench -p muster-store [-- N CONCURRENCY]`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use muster_store::*;
use sqlx::Connection;

fn write(i: usize, token: &str, run: &str) -> EnrollWrite {
    let id = format!("{run}-agent-{i}");
    EnrollWrite {
        agent_id: id.clone(),
        name: id.clone(),
        facts: AgentFacts {
            hostname: id.clone(),
            ..Default::default()
        },
        creds: IssuedCredentials {
            key_hash: format!("{run}-key-{i}"),
            cert_serial: format!("serial-{i}"),
            cert_pubkey: format!("pk-{i}"),
            cert_expires_at: 1,
        },
        mode: EnrollMode::New,
        consume_token: Some(token.to_owned()),
        consume_rule: None,
        enrollment: Some(EnrollmentRecord {
            enrollment_id: format!("{run}-enrollment-{i}"),
            agent_id: id.clone(),
            credential: format!("token:{token}"),
            public_key: format!("pk-{i}"),
            created: true,
            created_at: 1,
        }),
        complete_request: None,
        audit: AuditEntry {
            at: 1,
            actor: format!("token:{token}"),
            action: "agent.enrolled".into(),
            target: format!("agent:{id}"),
            source: "127.0.0.1".into(),
            outcome: "ok".into(),
            details: "{}".into(),
        },
        now: 1,
    }
}

async fn run(store: Arc<SqlStore>, label: &str, n: usize, concurrency: usize) -> f64 {
    let token = format!("tok-{label}");
    let t = TokenRecord {
        id: token.clone(),
        hash: format!("hash-{label}"),
        prefix: "met_".into(),
        description: None,
        max_uses: None,
        uses: 0,
        expires_at: None,
        revoked_at: None,
        pattern: None,
        cidrs: vec![],
        labels: Default::default(),
        allow_replace: false,
        created_at: 0,
        created_by: "bench".into(),
    };
    let audit = write(0, &token, label).audit;
    store.create_token(&t, &audit).await.unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (store, next, token, label) =
            (store.clone(), next.clone(), token.clone(), label.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                store.enroll(&write(i, &token, &label)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn compare(backend: &str, chained: SqlStore, plain: SqlStore, n: usize, c: usize) {
    // Alternate, so neither side always runs on a warmer cache.
    let (chained, plain) = (Arc::new(chained), Arc::new(plain));
    let with1 = run(chained.clone(), "with-1", n / 2, c).await;
    let without1 = run(plain.clone(), "without-1", n / 2, c).await;
    let with2 = run(chained.clone(), "with-2", n / 2, c).await;
    let without2 = run(plain, "without-2", n / 2, c).await;
    let with = (with1 + with2) / 2.0;
    let without = (without1 + without2) / 2.0;
    assert!(chained.verify_audit().await.unwrap().broken.is_none());
    println!(
        "{backend}: {n} enrollment transactions each way, concurrency {c}: with the audit chain {with:.0}/s, \
         without {without:.0}/s ({:+.1} %)",
        (with / without - 1.0) * 100.0
    );
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` builds and runs benches too (unoptimized); only
    // `cargo bench`, which passes `--bench`, should spend the time.
    if !std::env::args().any(|a| a == "--bench") {
        println!("audit_chain: skipped (run it with cargo bench -p muster-store)");
        return;
    }
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with('-')).collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4000);
    let c: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(16);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    let chained = SqlStore::connect(&sqlite("chained.db"), [1; 32])
        .await
        .unwrap();
    let plain = SqlStore::connect(&sqlite("plain.db"), [1; 32])
        .await
        .unwrap()
        .unchained_for_benchmarks();
    compare("SQLite", chained, plain, n, c).await;
    if let Ok(admin) = std::env::var("MUSTER_TEST_POSTGRES_URL") {
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        let mut urls = Vec::new();
        for name in ["muster_bench_chained", "muster_bench_plain"] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .unwrap();
            urls.push(format!("{base}/{name}"));
        }
        let chained = SqlStore::connect(&urls[0], [1; 32]).await.unwrap();
        let plain = SqlStore::connect(&urls[1], [1; 32])
            .await
            .unwrap()
            .unchained_for_benchmarks();
        compare("PostgreSQL", chained, plain, n, c).await;
        for name in ["muster_bench_chained", "muster_bench_plain"] {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
    }
}
