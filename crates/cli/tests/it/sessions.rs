//! Live sessions (SPEC §9): status that tells the truth within a second or two,
//! revocation that closes the session at once, reconnects after a hub restart,
//! and sessions refused when credentials do not belong together.

use std::time::Duration;

use muster_client::{ClientIdentity, SessionError, connect_session};
use muster_proto::{AgentMessage, HubMessage};
use muster_testkit::{TestAgent, TestHub};

use crate::{each_backend, enrolled};

fn fast(o: &mut muster_hub::HubOptions) {
    o.heartbeat_interval = Duration::from_secs(1);
}

async fn metric(hub: &TestHub, name: &str) -> u64 {
    hub.metric(name)
        .await
        .unwrap_or_else(|| panic!("no metric {name}")) as u64
}

#[tokio::test]
async fn status_follows_the_session_and_last_seen_is_batched() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, fast).await;
        let (agent, id) = enrolled(&hub, "live-01").await;
        assert_eq!(hub.admin().agent(&id).await.unwrap().status, "offline");
        let running = agent.run();
        let took = hub.wait_status(&id, "online", Duration::from_secs(5)).await;
        assert!(took < Duration::from_secs(2), "online after {took:?}");

        // Heartbeats arrive at the hub's interval (1 s) and are written in batches.
        tokio::time::sleep(Duration::from_millis(3200)).await;
        let beats = metric(&hub, "muster_heartbeats_total").await;
        let flushes = metric(&hub, "muster_last_seen_flushes_total").await;
        assert!(
            (2..=5).contains(&beats),
            "{beats} heartbeats in ~3 s at a 1 s interval"
        );
        assert!(
            flushes >= 1 && flushes <= beats + 1,
            "{flushes} flushes for {beats} heartbeats"
        );
        assert!(hub.admin().agent(&id).await.unwrap().last_seen_at.is_some());

        running.stop().await.unwrap();
        let took = hub
            .wait_status(&id, "offline", Duration::from_secs(3))
            .await;
        assert!(took < Duration::from_secs(1), "offline after {took:?}");
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn revocation_closes_the_session_within_a_second_and_the_agent_stops() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, fast).await;
        let (agent, id) = enrolled(&hub, "doomed").await;
        let running = agent.run();
        hub.wait_status(&id, "online", Duration::from_secs(5)).await;
        let client = agent.client();
        let start = std::time::Instant::now();
        hub.admin().revoke_agent(&id).await.unwrap();
        let end = running.ended(Duration::from_secs(1)).await;
        assert!(start.elapsed() < Duration::from_secs(1));
        let err = end.unwrap_err();
        assert!(matches!(err, muster_agent::AgentError::Revoked(_)), "{err}");
        assert_eq!(crate::code(client.agent_me().await), "agent_revoked");
        // And it cannot come back: the session is refused for good.
        let err = agent.run().ended(Duration::from_secs(5)).await.unwrap_err();
        assert!(
            matches!(&err, muster_agent::AgentError::Session(e) if e.is_final()),
            "{err}"
        );
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_replacing_enrollment_closes_the_old_session() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, fast).await;
        let (agent, id) = enrolled(&hub, "twin").await;
        let running = agent.run();
        hub.wait_status(&id, "online", Duration::from_secs(5)).await;
        let reimaged = TestAgent::new("twin");
        let mut opts = hub.enroll_options(&reimaged, None, None);
        opts.key = Some(hub.admin_key.clone());
        opts.ca_hash = Some(hub.ca_hash.to_string());
        muster_agent::enroll(&opts, &reimaged.dir).await.unwrap();
        let err = running.ended(Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, muster_agent::AgentError::Revoked(_)), "{err}");
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn agents_reconnect_after_a_hub_restart() {
    each_backend(|b| async move {
        let mut hub = TestHub::start_with(&b, fast).await;
        let (agent, id) = enrolled(&hub, "survivor").await;
        let running = agent.run();
        hub.wait_status(&id, "online", Duration::from_secs(5)).await;
        hub.restart_same_port().await;
        // The hub told the agent it was going away, so it returns within the
        // announced window (10 s) rather than after a long backoff.
        hub.wait_status(&id, "online", Duration::from_secs(12))
            .await;
        running.stop().await.unwrap();
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_config_dir_that_cannot_be_written_makes_the_agent_degraded() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, fast).await;
        let (agent, id) = enrolled(&hub, "sick").await;
        let running = agent.run();
        hub.wait_status(&id, "online", Duration::from_secs(5)).await;
        let dir = agent.dir.path().to_path_buf();
        let moved = dir.with_extension("away");
        std::fs::rename(&dir, &moved).unwrap();
        hub.wait_status(&id, "degraded", Duration::from_secs(4))
            .await;
        std::fs::rename(&moved, &dir).unwrap();
        hub.wait_status(&id, "online", Duration::from_secs(4)).await;
        running.stop().await.unwrap();
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sessions_need_the_certificate_and_key_of_one_live_agent() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, fast).await;
        let (a, _) = enrolled(&hub, "alpha").await;
        let (bee, _) = enrolled(&hub, "bravo").await;
        let ca = a.dir.load().unwrap().unwrap();
        let cb = bee.dir.load().unwrap().unwrap();
        let id_a = ClientIdentity {
            cert_pem: ca.cert_pem.clone(),
            key_pem: ca.key_pem.clone(),
        };
        match connect_session(&hub.url, &ca.ca_pem, &id_a, &cb.config.agent_key).await {
            Err(SessionError::Refused {
                status: 401, code, ..
            }) => assert_eq!(code, "key_invalid"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("certificate of A with key of B was accepted"),
        }
        // An old protocol version gets a clear refusal, not silence.
        let mut s = connect_session(&hub.url, &ca.ca_pem, &id_a, &ca.config.agent_key)
            .await
            .unwrap();
        s.send(&AgentMessage::Hello {
            protocol_version: 0,
            agent_version: "0.0.1".into(),
            packs: vec![],
            facts: None,
            generation: 1,
            catalog: vec![],
        })
        .await
        .unwrap();
        match s.recv().await.unwrap() {
            Some(HubMessage::Refused { code, message }) => {
                assert_eq!(code, "protocol_version");
                assert!(message.contains("upgrade"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_token_cannot_take_over_a_live_machine_unless_it_allows_replacing() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, fast).await;
        let (agent, id) = enrolled(&hub, "busy").await;
        let running = agent.run();
        hub.wait_status(&id, "online", Duration::from_secs(5)).await;
        let intruder = TestAgent::new("busy");
        let plain = hub.default_token().await;
        let err = muster_agent::enroll(
            &hub.enroll_options(&intruder, Some(&plain), None),
            &intruder.dir,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("name_in_use"), "{err}");
        assert_eq!(
            hub.admin().agent(&id).await.unwrap().status,
            "online",
            "the live machine is untouched"
        );
        let replacing = hub
            .token(muster_proto::CreateTokenRequest {
                max_uses: Some(1),
                ttl_s: Some(600),
                allow_replace: true,
                ..Default::default()
            })
            .await
            .token;
        let r = muster_agent::enroll(
            &hub.enroll_options(&intruder, Some(&replacing), None),
            &intruder.dir,
        )
        .await
        .unwrap();
        assert_eq!(r.agent_id, id);
        assert!(
            running.ended(Duration::from_secs(1)).await.is_err(),
            "the old session was closed"
        );
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn facts_are_refreshed_at_every_session_start() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, fast).await;
        let (mut agent, id) = enrolled(&hub, "before").await;
        agent.rename_host("after");
        let running = agent.run();
        hub.wait_status(&id, "online", Duration::from_secs(5)).await;
        let shown = hub.admin().agent(&id).await.unwrap();
        assert_eq!(shown.hostname, "after", "hello carried the new hostname");
        assert_eq!(shown.name, "before", "the name is the admin's, not a fact");
        assert!(!shown.interfaces.is_empty(), "interfaces are reported");
        assert!(shown.interfaces.iter().any(|i| i.is_loopback));
        running.stop().await.unwrap();
        hub.stop().await;
    })
    .await;
}
