//! Several hubs sharing one PostgreSQL database (SPEC §12): a revocation or a
//! replacing enrollment made on one hub closes the session another hub holds within
//! a second. PostgreSQL only: SQLite serves one hub.

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
    TestHub::start_on(options).await.unwrap()
}

pub(crate) async fn sessions_live(hub: &TestHub) -> u64 {
    let (_, body) = hub.anonymous().get_raw("/metrics").await.unwrap();
    String::from_utf8(body)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("muster_sessions_live "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
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
