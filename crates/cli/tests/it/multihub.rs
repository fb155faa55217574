//! Several hubs sharing one PostgreSQL database (SPEC §12): a revocation or a
//! replacing enrollment made on one hub closes the session another hub holds within
//! a second; every hub shows the same fleet; a hub that dies takes its agents
//! offline within one lease. PostgreSQL only: SQLite serves one hub.

use std::time::{Duration, Instant};

use muster_testkit::{Backend, TestAgent, TestHub, backends};

/// A second hub on `first`'s database and secret, with its own data dir and port.
pub(crate) async fn second_hub(first: &TestHub, dir: &std::path::Path) -> TestHub {
    let mut options = first.options.clone();
    options.data_dir = dir.join("muster-data");
    options.secret = Some(
        std::fs::read_to_string(first.data_dir.join("secret"))
            .unwrap()
            .trim()
            .to_owned(),
    );
    options.advertise_url = None;
    let mut hub = TestHub::start_on(options).await.unwrap();
    // The first hub's admin key lives in the shared database: it works here too.
    hub.admin_key = first.admin_key.clone();
    hub
}

/// Hubs that take each other for dead after two seconds without a renewal.
const LEASE: Duration = Duration::from_secs(2);

fn short_lease(o: &mut muster_hub::HubOptions) {
    o.heartbeat_interval = Duration::from_secs(1);
    o.hub_lease = LEASE;
}

/// `muster_agents{status="…"}` in a hub's /metrics.
async fn fleet_metric(hub: &TestHub, status: &str) -> Option<i64> {
    let series = format!("muster_agents{{status=\"{status}\"}}");
    hub.metric(&series).await.map(|v| v as i64)
}

/// Poll until `check` holds, or fail saying `what` after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    start.elapsed()
}

pub(crate) async fn sessions_live(hub: &TestHub) -> u64 {
    hub.metric("muster_sessions_live").await.unwrap() as u64
}

pub(crate) async fn wait_sessions(hub: &TestHub, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while sessions_live(hub).await != n {
        assert!(Instant::now() < deadline, "hub never held {n} sessions");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_revocation_on_one_hub_closes_the_session_held_by_another() {
    for backend in backends() {
        if !matches!(backend, Backend::Postgres(_)) {
            continue;
        }
        let a = TestHub::start_with(&backend, |o| {
            o.heartbeat_interval = Duration::from_secs(1);
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let b = second_hub(&a, dir.path()).await;
        assert_eq!(a.ca_hash, b.ca_hash, "the hubs share one CA");

        // Enrolled through hub B, with a token made on hub A; its session is on B.
        let token = a.default_token().await;
        let agent = TestAgent::new("roamer");
        let opts = b.enroll_options(&agent, Some(&token), None);
        let id = muster_agent::enroll(&opts, &agent.dir)
            .await
            .unwrap()
            .agent_id;
        let running = agent.run();
        wait_sessions(&b, 1).await;
        assert_eq!(sessions_live(&a).await, 0);

        let start = Instant::now();
        a.admin().revoke_agent(&id).await.unwrap();
        let end = running.ended(Duration::from_secs(1)).await;
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        let err = end.unwrap_err();
        assert!(matches!(err, muster_agent::AgentError::Revoked(_)), "{err}");

        // A machine re-enrolled under the same name through hub A replaces the
        // identity whose session hub B holds: that session closes too.
        let token = a.default_token().await;
        let old = TestAgent::new("twin");
        let opts = b.enroll_options(&old, Some(&token), None);
        muster_agent::enroll(&opts, &old.dir).await.unwrap();
        let running = old.run();
        wait_sessions(&b, 1).await;
        let new = TestAgent::new("twin");
        let mut opts = a.enroll_options(&new, None, None);
        opts.key = Some(a.admin_key.clone());
        opts.ca_hash = Some(a.ca_hash.to_string());
        muster_agent::enroll(&opts, &new.dir).await.unwrap();
        let end = running.ended(Duration::from_secs(1)).await;
        assert!(end.is_err(), "the replaced session must end");
        wait_sessions(&b, 0).await;

        // The listening connections are cut (a database failover, a proxy timeout):
        // the hubs listen again on new ones, and revocations still arrive.
        a.raw_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN%' AND datname = current_database()",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let token = a.default_token().await;
        let third = TestAgent::new("after-failover");
        let opts = b.enroll_options(&third, Some(&token), None);
        let id = muster_agent::enroll(&opts, &third.dir)
            .await
            .unwrap()
            .agent_id;
        let running = third.run();
        wait_sessions(&b, 1).await;
        a.admin().revoke_agent(&id).await.unwrap();
        let end = running.ended(Duration::from_secs(1)).await;
        assert!(
            end.is_err(),
            "the revoked session must end after the reconnect"
        );

        b.stop().await;
        a.stop().await;
    }
}

#[tokio::test]
async fn every_hub_shows_the_same_fleet_and_lists_the_others() {
    for backend in backends() {
        if !matches!(backend, Backend::Postgres(_)) {
            continue;
        }
        let a = TestHub::start_with(&backend, short_lease).await;
        let dir = tempfile::tempdir().unwrap();
        let b = second_hub(&a, dir.path()).await;

        let token = a.default_token().await;
        let agent = TestAgent::new("seen-everywhere");
        let opts = b.enroll_options(&agent, Some(&token), None);
        let id = muster_agent::enroll(&opts, &agent.dir)
            .await
            .unwrap()
            .agent_id;
        let running = agent.run();
        wait_sessions(&b, 1).await;

        // Hub A holds no session, yet shows the agent online within two seconds,
        // in `agents show`, `agents list` and the /metrics fleet counts.
        let took = a.wait_status(&id, "online", Duration::from_secs(2)).await;
        eprintln!("online as seen from the other hub after {took:?}");
        assert_eq!(sessions_live(&a).await, 0);
        let listed = a.admin().list_agents().await.unwrap();
        assert_eq!(listed[0].status.to_string(), "online");
        assert_eq!(fleet_metric(&a, "online").await, Some(1));
        assert_eq!(fleet_metric(&a, "offline").await, Some(0));

        // Both hubs are listed, live, with the sessions each holds.
        eventually(
            Duration::from_secs(3),
            "B's session in the hubs list",
            || async {
                let hubs = a.admin().list_hubs().await.unwrap();
                hubs.len() == 2
                    && hubs.iter().all(|h| h.state == muster_proto::HubState::Live)
                    && hubs
                        .iter()
                        .any(|h| h.address == b.url && h.sessions == 1 && !h.this_hub)
                    && hubs
                        .iter()
                        .any(|h| h.address == a.url && h.sessions == 0 && h.this_hub)
            },
        )
        .await;

        // The agent stops: offline everywhere within two seconds.
        running.stop().await.unwrap();
        a.wait_status(&id, "offline", Duration::from_secs(2)).await;
        assert_eq!(fleet_metric(&a, "online").await, Some(0));

        // A hub that stops gracefully gives its lease back at once.
        b.stop().await;
        let hubs = a.admin().list_hubs().await.unwrap();
        let gone = hubs.iter().find(|h| !h.this_hub).unwrap();
        assert_eq!(gone.state, muster_proto::HubState::Stopped);
        a.stop().await;
    }
}

/// A child process killed when dropped (a failed test must not leave a hub behind).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `muster hub` as a process of its own on `first`'s database and secret, so that
/// it can be killed outright: (process, url, data dir guard).
fn hub_process_on(first: &TestHub) -> (Killed, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_muster"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MUSTER_")) {
        cmd.env_remove(k);
    }
    let secret = std::fs::read_to_string(first.data_dir.join("secret")).unwrap();
    let child = cmd
        .args([
            "hub",
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-interval",
            "1s",
        ])
        .args(["--hub-lease", &format!("{}s", LEASE.as_secs())])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--db")
        .arg(first.options.db_url.as_deref().unwrap())
        .env("MUSTER_SECRET", secret.trim())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let json = dir.path().join("hub.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !json.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let child = Killed(child);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (child, v["url"].as_str().unwrap().to_owned(), dir)
}

#[tokio::test]
async fn a_killed_hubs_agents_go_offline_within_one_lease_and_move_to_another() {
    for backend in backends() {
        if !matches!(backend, Backend::Postgres(_)) {
            continue;
        }
        let a = TestHub::start_with(&backend, short_lease).await;
        let dir = tempfile::tempdir().unwrap();
        let c = second_hub(&a, dir.path()).await;
        let (mut b, b_url, _b_dir) = hub_process_on(&a);

        // Two agents on hub B: one knows only B, the other B then A.
        let mut ids = Vec::new();
        let mut agents = Vec::new();
        let mut running = Vec::new();
        for (name, urls) in [
            ("stays-with-b", vec![b_url.clone()]),
            ("moves-to-a", vec![b_url.clone(), a.url.clone()]),
        ] {
            let token = a.default_token().await;
            let agent = TestAgent::new(name);
            let mut opts = a.enroll_options(&agent, Some(&token), None);
            opts.hub_urls = urls;
            ids.push(
                muster_agent::enroll(&opts, &agent.dir)
                    .await
                    .unwrap()
                    .agent_id,
            );
            running.push(agent.run());
            agents.push(agent);
        }
        for id in &ids {
            c.wait_status(id, "online", Duration::from_secs(5)).await;
        }
        assert_eq!(sessions_live(&a).await, 0);

        // kill -9: no shutdown frame, no lease given back, presence rows left as
        // they were. The agent that knows only B shows offline once the lease runs
        // out; the other comes back through A.
        let killed = Instant::now();
        b.0.kill().unwrap();
        b.0.wait().unwrap();
        c.wait_status(&ids[0], "offline", LEASE + Duration::from_secs(1))
            .await;
        let took = killed.elapsed();
        eprintln!("offline {took:?} after the kill (lease {LEASE:?})");
        assert!(
            took > LEASE / 2,
            "offline before the lease ran out: {took:?}"
        );
        wait_sessions(&a, 1).await;
        eprintln!("moved to another hub {:?} after the kill", killed.elapsed());
        a.wait_status(&ids[1], "online", Duration::from_secs(1))
            .await;
        // Hub C, which holds neither, counts the moved one and not the stranded one.
        eventually(
            Duration::from_secs(2),
            "C's count of one online",
            || async { fleet_metric(&c, "online").await == Some(1) },
        )
        .await;
        let hubs = a.admin().list_hubs().await.unwrap();
        let dead = hubs.iter().find(|h| h.address == b_url).unwrap();
        assert_eq!(dead.state, muster_proto::HubState::Expired);

        // Revoked through hub C, the moved agent's session on A ends within a second.
        let start = Instant::now();
        c.admin().revoke_agent(&ids[1]).await.unwrap();
        let end = running.pop().unwrap().ended(Duration::from_secs(1)).await;
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        assert!(
            matches!(end, Err(muster_agent::AgentError::Revoked(_))),
            "{end:?}"
        );

        // Once it has been dead a lease longer, a live hub closes its session
        // history, so the agent's page says when it went.
        eventually(
            Duration::from_secs(3 * LEASE.as_secs()),
            "the dead hub's session closed",
            || async {
                a.admin()
                    .agent_sessions(&ids[0])
                    .await
                    .unwrap()
                    .sessions
                    .iter()
                    .all(|s| s.disconnected_at.is_some())
            },
        )
        .await;
        c.stop().await;
        a.stop().await;
    }
}
