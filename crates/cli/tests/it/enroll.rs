//! Enrollment with a token: the walkthrough path, the files it leaves, the
//! certificate it yields, and the CA pin that guards it.

use std::os::unix::fs::PermissionsExt;

use muster_ca::CaHash;
use muster_client::{ClientError, EnrollOutcome, HubClient, Trust};
use muster_proto::CreateTokenRequest;
use muster_testkit::{TestAgent, TestHub};

use crate::each_backend;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn token_enrollment_writes_a_verifiable_identity() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let token = hub.default_token().await;
        let agent = TestAgent::new("web-01");
        let report =
            muster_agent::enroll(&hub.enroll_options(&agent, Some(&token), None), &agent.dir)
                .await
                .unwrap();
        assert!(report.created);
        assert_eq!(report.name, "web-01", "default name is the hostname");

        let dir = agent.dir.path();
        assert_eq!(mode(dir), 0o700);
        assert_eq!(mode(&dir.join("config.json")), 0o600);
        assert_eq!(mode(&dir.join("key.pem")), 0o600);
        let creds = agent.dir.load().unwrap().unwrap();
        assert_eq!(creds.config.agent_id, report.agent_id);
        assert!(creds.config.agent_key.starts_with("mag_"));
        assert_eq!(creds.config.ca_hash, hub.ca_hash.to_string());

        let cert = muster_ca::cert_info(&creds.cert_pem).unwrap();
        assert_eq!(cert.subject_cn, report.agent_id);
        assert_eq!(
            cert.uri_sans,
            vec![format!("muster://agent/{}", report.agent_id)]
        );
        assert_eq!(
            cert.public_key_sha256,
            muster_ca::key_public_sha256(&creds.key_pem).unwrap()
        );
        if let Ok(out) = std::process::Command::new("openssl")
            .args(["verify", "-purpose", "sslclient", "-CAfile"])
            .arg(dir.join("ca.pem"))
            .arg(dir.join("cert.pem"))
            .output()
        {
            assert!(
                out.status.success(),
                "openssl verify: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }

        let listed = hub.admin().list_agents().await.unwrap();
        let a = listed.iter().find(|a| a.id == report.agent_id).unwrap();
        assert_eq!(a.hostname, "web-01");
        assert_eq!(a.os_info, "Test OS 1.0");
        assert!(!a.arch.is_empty());
        assert!(!a.ip.is_empty());

        let status = muster_agent::status(&agent.dir).await.unwrap();
        assert!(status.hub.reachable);
        assert_eq!(status.hub.agent.as_ref().unwrap().id, report.agent_id);
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_pin_stops_a_wrong_hub_before_the_token_leaves() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let token = hub.default_token().await;
        let (secret, _pin) = token.split_once('.').unwrap();
        let other_pin = CaHash([7; 32]).pin();
        let forged = format!("{secret}.{other_pin}");
        let agent = TestAgent::new("pinned");
        let err =
            muster_agent::enroll(&hub.enroll_options(&agent, Some(&forged), None), &agent.dir)
                .await
                .unwrap_err();
        assert!(
            matches!(
                err,
                muster_agent::AgentError::Client(ClientError::CaMismatch { .. })
            ),
            "{err}"
        );
        let mut opts = hub.enroll_options(&agent, Some(&token), None);
        opts.ca_hash = Some(CaHash([9; 32]).to_string());
        let err = muster_agent::enroll(&opts, &agent.dir).await.unwrap_err();
        assert!(
            matches!(
                err,
                muster_agent::AgentError::Client(ClientError::CaMismatch { .. })
            ),
            "{err}"
        );

        // The token never reached the hub: it is still unused and works.
        let t = &hub.admin().list_tokens().await.unwrap()[0];
        assert_eq!((t.uses, t.state.as_str()), (0, "active"));
        assert!(
            agent.dir.load().unwrap().is_none(),
            "nothing written on failure"
        );
        muster_agent::enroll(&hub.enroll_options(&agent, Some(&token), None), &agent.dir)
            .await
            .unwrap();
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_admin_key_enrolls_and_a_full_ca_hash_or_file_verifies_the_hub() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let agent = TestAgent::new("keyed");
        let mut opts = hub.enroll_options(&agent, None, Some("by-key"));
        opts.key = Some(hub.admin_key.clone());
        let err = muster_agent::enroll(&opts, &agent.dir).await.unwrap_err();
        assert!(err.to_string().contains("cannot verify the hub"), "{err}");
        opts.ca_hash = Some(hub.ca_hash.to_string());
        let r = muster_agent::enroll(&opts, &agent.dir).await.unwrap();
        assert_eq!(r.name, "by-key");

        let other = TestAgent::new("filed");
        let mut opts = hub.enroll_options(&other, None, None);
        opts.key = Some(hub.admin_key.clone());
        opts.ca_file = Some(hub.data_dir.join("ca.pem"));
        muster_agent::enroll(&opts, &other.dir).await.unwrap();
        assert_eq!(hub.admin().list_agents().await.unwrap().len(), 2);
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_enrollments_never_exceed_a_tokens_uses() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        for (max_uses, attempts) in [(1u32, 8usize), (10, 16)] {
            let token = hub
                .token(CreateTokenRequest {
                    max_uses: Some(max_uses),
                    ttl_s: Some(600),
                    ..Default::default()
                })
                .await
                .token;
            let mut tasks = Vec::new();
            for i in 0..attempts {
                let (url, hash, token) = (hub.url.clone(), hub.ca_hash, token.clone());
                tasks.push(tokio::spawn(async move {
                    let client = HubClient::new(&url, Trust::Hash(hash)).unwrap();
                    let (req, _) = crate::request(&format!("race-{max_uses}-{i}"), None);
                    client.enroll(Some(&token), &req).await
                }));
            }
            let mut ok = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Ok(_) => ok += 1,
                    Err(e) => assert_eq!(e.code(), Some("token_exhausted"), "{e}"),
                }
            }
            assert_eq!(
                ok, max_uses as usize,
                "exactly max_uses enrollments succeed"
            );
            let tokens = hub.admin().list_tokens().await.unwrap();
            let t = tokens
                .iter()
                .find(|t| token.starts_with(&t.prefix))
                .unwrap();
            assert_eq!((t.uses, t.state.as_str()), (max_uses, "exhausted"));
        }
        assert_eq!(hub.admin().list_agents().await.unwrap().len(), 11);
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_retried_enrollment_returns_the_same_agent_and_consumes_nothing() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let token = hub.default_token().await;
        let client = hub.anonymous();
        let (mut req, key) = crate::request("retry-host", None);
        req.enrollment_id = Some("0123456789abcdef0123456789abcdef".to_owned());
        let first = match client.enroll(Some(&token), &req).await.unwrap() {
            muster_client::EnrollOutcome::Created(r) => r,
            other => panic!("{other:?}"),
        };
        // The answer was "lost": the agent retries with the same id and key.
        req.csr_pem = muster_ca::csr_for_key(&key, "retry-host").unwrap();
        let second = match client.enroll(Some(&token), &req).await.unwrap() {
            muster_client::EnrollOutcome::Created(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(first.agent_id, second.agent_id);
        assert_ne!(
            first.agent_key, second.agent_key,
            "a fresh key: the first was never received"
        );
        let t = &hub.admin().list_tokens().await.unwrap()[0];
        assert_eq!(t.uses, 1);
        assert_eq!(hub.admin().list_agents().await.unwrap().len(), 1);

        // Someone else holding the id (but not the key) gets nothing.
        let (mut thief, _) = crate::request("retry-host", None);
        thief.enrollment_id = req.enrollment_id.clone();
        assert_eq!(
            crate::code(client.enroll(Some(&token), &thief).await),
            "conflict"
        );
        hub.stop().await;
    })
    .await;
}

/// A fleet that re-enrolls all at once under the names it had (reimaged machines,
/// containers restarting without their config dir): every machine keeps its UUID,
/// however the hub groups the commits.
#[tokio::test]
async fn a_fleet_reenrolling_at_once_keeps_its_uuids() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let token = hub
            .token(CreateTokenRequest {
                max_uses: None,
                ttl_s: Some(600),
                ..Default::default()
            })
            .await
            .token;
        let wave = || {
            let tasks: Vec<_> = (0..24)
                .map(|i| {
                    let (url, hash, token) = (hub.url.clone(), hub.ca_hash, token.clone());
                    tokio::spawn(async move {
                        let client = HubClient::new(&url, Trust::Hash(hash)).unwrap();
                        let (req, _) = crate::request(&format!("fleet-{i}"), None);
                        client.enroll(Some(&token), &req).await.unwrap()
                    })
                })
                .collect();
            async move {
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.unwrap());
                }
                out
            }
        };
        let first = wave().await;
        let second = wave().await;
        for (a, b) in first.iter().zip(&second) {
            let (EnrollOutcome::Created(a), EnrollOutcome::Reenrolled(b)) = (a, b) else {
                panic!("expected 201 then 200, got {a:?} then {b:?}");
            };
            assert_eq!((&a.name, &a.agent_id), (&b.name, &b.agent_id));
            assert_ne!(a.agent_key, b.agent_key);
        }
        let agents = hub.admin().list_agents().await.unwrap();
        assert_eq!(agents.len(), 24);
        assert!(agents.iter().all(|a| a.generation == 2), "{agents:?}");
        hub.stop().await;
    })
    .await;
}
