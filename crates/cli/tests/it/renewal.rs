//! Certificate renewal and clone detection (SPEC §9), with certificates that live
//! a few seconds.

use std::time::{Duration, Instant};

use muster_agent::renew::HubClock;
use muster_client::{ClientIdentity, ClientOptions, HubClient, Trust};
use muster_proto::RenewRequest;
use muster_testkit::{Backend, TestAgent, TestHub};

use crate::{each_backend, enrolled};

fn short_lived(o: &mut muster_hub::HubOptions) {
    o.heartbeat_interval = Duration::from_secs(1);
    o.cert_validity = Duration::from_secs(6);
}

#[tokio::test]
async fn certificates_renew_at_two_thirds_of_their_life_without_a_drop_in_status() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, short_lived).await;
        let (agent, id) = enrolled(&hub, "renewer").await;
        let first = agent.dir.load().unwrap().unwrap();
        assert_eq!(first.config.generation, 1);
        let running = agent.run();
        hub.wait_status(&id, "online", Duration::from_secs(5)).await;
        let admin = hub.admin();
        let start = Instant::now();
        // Over 9 s a 6 s certificate is renewed at ~4 s and again at ~8 s.
        while start.elapsed() < Duration::from_secs(9) {
            assert_eq!(
                admin.agent(&id).await.unwrap().status,
                "online",
                "status dropped at {:?}",
                start.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let now = agent.dir.load().unwrap().unwrap();
        assert!(
            now.config.generation >= 3,
            "generation {}",
            now.config.generation
        );
        assert_ne!(now.cert_pem, first.cert_pem);
        assert_ne!(now.key_pem, first.key_pem, "a new key pair each time");
        assert_eq!(
            admin.agent(&id).await.unwrap().generation,
            now.config.generation
        );
        assert!(
            hub.audit_actions()
                .await
                .iter()
                .filter(|a| *a == "agent.renewed")
                .count()
                >= 2
        );
        // The renewed credentials work for REST as well.
        assert_eq!(agent.client().agent_me().await.unwrap().id, id);
        running.stop().await.unwrap();
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_copied_config_dir_is_caught_as_a_clone() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, short_lived).await;
        let (original, id) = enrolled(&hub, "original").await;
        // Someone copies the config dir to another machine.
        let copy = TestAgent::new("copy");
        let creds = original.dir.load().unwrap().unwrap();
        copy.dir.store(&creds).unwrap();

        let running = original.run();
        hub.wait_status(&id, "online", Duration::from_secs(5)).await;
        let deadline = Instant::now() + Duration::from_secs(8);
        while original.dir.load().unwrap().unwrap().config.generation < 2 {
            assert!(Instant::now() < deadline, "no renewal");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The copy still holds generation 1: its first session gives it away.
        let err = copy.run().ended(Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("agent_cloned"), "{err}");
        // The identity is locked: the original's session is closed too.
        let err = running.ended(Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(err, muster_agent::AgentError::Revoked(_)), "{err}");

        let shown = hub.admin().agent(&id).await.unwrap();
        assert_eq!(shown.status, "cloned");
        let event = &shown.clone_events[0];
        assert_eq!(
            (event.presented_generation, event.expected_generation),
            (1, 2)
        );
        assert_eq!(
            (event.source.as_str(), event.via.as_str()),
            ("127.0.0.1", "session")
        );
        assert!(
            hub.audit_actions()
                .await
                .contains(&"agent.cloned".to_owned())
        );
        // Sessions stay refused until an admin acts; revoking resolves it.
        let err = original
            .run()
            .ended(Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("agent_cloned"), "{err}");
        hub.admin().revoke_agent(&id).await.unwrap();
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_renewal_retried_with_the_same_key_is_not_a_clone() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, short_lived).await;
        let (agent, id) = enrolled(&hub, "flaky-link").await;
        let creds = agent.dir.load().unwrap().unwrap();
        let client = HubClient::with_options(
            &hub.url,
            Trust::CaPem(creds.ca_pem.clone()),
            ClientOptions {
                identity: Some(ClientIdentity {
                    cert_pem: creds.cert_pem.clone(),
                    key_pem: creds.key_pem.clone(),
                }),
                timeout: None,
                ..Default::default()
            },
        )
        .unwrap()
        .with_bearer(creds.config.agent_key.clone());
        let (key, csr) = muster_ca::new_key_and_csr(&id).unwrap();
        let first = client
            .renew(&RenewRequest {
                csr_pem: csr,
                generation: 1,
                expired_cert_pem: None,
                proof: None,
            })
            .await
            .unwrap();
        let muster_client::RenewOutcome::Renewed(first) = first else {
            panic!("{first:?}")
        };
        assert_eq!(first.generation, 2);
        // The answer was lost: the same key asks again, with the old generation.
        let csr = muster_ca::csr_for_key(&key, &id).unwrap();
        let again = client
            .renew(&RenewRequest {
                csr_pem: csr,
                generation: 1,
                expired_cert_pem: None,
                proof: None,
            })
            .await
            .unwrap();
        let muster_client::RenewOutcome::Renewed(again) = again else {
            panic!("{again:?}")
        };
        assert_eq!(again.generation, 2);
        assert_ne!(hub.admin().agent(&id).await.unwrap().status, "cloned");
        // A different key with the old generation is a copy.
        let (_, other) = muster_ca::new_key_and_csr(&id).unwrap();
        let err = client
            .renew(&RenewRequest {
                csr_pem: other,
                generation: 1,
                expired_cert_pem: None,
                proof: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("agent_cloned"));
        assert_eq!(
            hub.admin().agent(&id).await.unwrap().clone_events[0].via,
            "renewal"
        );
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_agent_whose_certificate_expired_offline_renews_with_proof_of_its_key() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, |o| {
            o.heartbeat_interval = Duration::from_secs(1);
            o.cert_validity = Duration::from_secs(2);
            o.renewal_grace = Duration::from_secs(3600);
        })
        .await;
        let (agent, id) = enrolled(&hub, "sleeper").await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let before = agent.dir.load().unwrap().unwrap();
        assert!(muster_agent::renew::expired(&before, HubClock::default()).unwrap());
        let running = agent.run();
        hub.wait_status(&id, "online", Duration::from_secs(5)).await;
        let after = agent.dir.load().unwrap().unwrap();
        assert!(after.config.generation > before.config.generation);
        running.stop().await.unwrap();

        // A stranger with the agent key but not the certificate's key gets nothing.
        let (_, csr) = muster_ca::new_key_and_csr(&id).unwrap();
        let (other_key, _) = muster_ca::new_key_and_csr("x").unwrap();
        let proof =
            muster_ca::sign_proof(&other_key, &muster_ca::proof_message(&id, &csr)).unwrap();
        let client = HubClient::new(&hub.url, Trust::CaPem(after.ca_pem.clone()))
            .unwrap()
            .with_bearer(after.config.agent_key.clone());
        use base64::Engine as _;
        let err = client
            .renew(&RenewRequest {
                csr_pem: csr,
                generation: after.config.generation,
                expired_cert_pem: Some(before.cert_pem.clone()),
                proof: Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(proof)),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("key_invalid"));
        hub.stop().await;
    })
    .await;
}

/// An agent whose clock runs days ahead takes its valid certificate for expired.
/// Until it has heard the hub's clock it asks with proof of its key; the hub, whose
/// clock says the certificate is valid, refuses that with `cert_not_expired`, and
/// the agent renews over TLS with the certificate instead. Once it knows the hub's
/// clock, it judges expiry and the renewal time on it: the fresh certificate is
/// neither expired nor overdue, so no renewal loop.
#[tokio::test]
async fn an_agent_whose_clock_runs_ahead_renews_on_the_hubs_clock() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let (agent, id) = enrolled(&hub, "fast-clock").await;
    let before = agent.dir.load().unwrap().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let days = 24 * 3600 * 1000;
    // The clock as the agent sees it before hearing the hub: its own, 400 days
    // ahead (past any certificate's end); the hub's clock: the true one, i.e. 400
    // days behind ours.
    let mut ahead = HubClock::default();
    ahead.learn(now_ms + 400 * days);
    assert!(muster_agent::renew::expired(&before, ahead).unwrap());
    let mut hubs_clock = HubClock::default();
    hubs_clock.learn(now_ms);
    assert!(!muster_agent::renew::expired(&before, hubs_clock).unwrap());

    // The proof path alone is refused with the code the agent acts on.
    let client = HubClient::new(&hub.url, Trust::CaPem(before.ca_pem.clone()))
        .unwrap()
        .with_bearer(before.config.agent_key.clone());
    let (_, csr) = muster_ca::new_key_and_csr(&id).unwrap();
    let proof =
        muster_ca::sign_proof(&before.key_pem, &muster_ca::proof_message(&id, &csr)).unwrap();
    use base64::Engine as _;
    let err = client
        .renew(&RenewRequest {
            csr_pem: csr,
            generation: before.config.generation,
            expired_cert_pem: Some(before.cert_pem.clone()),
            proof: Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(proof)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("cert_not_expired"), "{err}");

    // The agent, still on its own clock, renews all the same.
    let mut clock = ahead;
    let after = muster_agent::renew::renew(&agent.dir, &before, &mut clock)
        .await
        .unwrap();
    assert_eq!(after.config.generation, before.config.generation + 1);
    assert_eq!(
        hub.admin().agent(&id).await.unwrap().generation,
        after.config.generation
    );
    // The renewal taught the agent the hub's clock (from the new certificate), and
    // on it the new certificate is fresh: not due for most of its life.
    assert!(
        clock.offset() < Duration::from_secs(5),
        "{:?}",
        clock.offset()
    );
    let due = muster_agent::renew::due_in(&after, clock).unwrap();
    assert!(due > Duration::from_secs(3600), "due in {due:?}");
    let on_hubs = muster_agent::renew::due_in(&after, hubs_clock).unwrap();
    assert!(
        on_hubs.abs_diff(due) < Duration::from_secs(5),
        "{on_hubs:?} vs {due:?}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn past_the_renewal_grace_a_renewal_waits_for_an_admin() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, |o| {
            o.heartbeat_interval = Duration::from_secs(1);
            o.cert_validity = Duration::from_secs(1);
            o.renewal_grace = Duration::from_secs(1);
        })
        .await;
        let (agent, id) = enrolled(&hub, "rip-van-winkle").await;
        tokio::time::sleep(Duration::from_millis(2600)).await;
        let running = agent.run();
        // The renewal is queued, bound to the agent and its new key.
        let admin = hub.admin();
        let deadline = Instant::now() + Duration::from_secs(10);
        let request = loop {
            if let Some(r) = admin.list_approvals().await.unwrap().into_iter().next() {
                break r;
            }
            assert!(Instant::now() < deadline, "no queued renewal");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            (request.kind.as_str(), request.agent_id.as_deref()),
            ("renew", Some(id.as_str()))
        );
        assert_eq!(admin.agent(&id).await.unwrap().status, "offline");
        admin.approve(&request.id).await.unwrap();
        hub.wait_status(&id, "online", Duration::from_secs(15))
            .await;
        running.stop().await.unwrap();
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn with_the_queue_off_a_renewal_past_the_grace_is_refused() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, |o| {
            o.cert_validity = Duration::from_secs(1);
            o.renewal_grace = Duration::from_secs(1);
            o.approval_queue = false;
        })
        .await;
        let (agent, _) = enrolled(&hub, "rip-van-winkle").await;
        tokio::time::sleep(Duration::from_millis(2600)).await;
        let err = agent.run().ended(Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("renewal_grace_expired"), "{err}");
        hub.stop().await;
    })
    .await;
}
