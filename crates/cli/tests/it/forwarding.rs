//! Probes across the hubs of one fleet (SPEC §12, §15): a probe asked of any hub
//! runs on an agent whose session another hub holds, through that hub, with the
//! caller's scopes checked and the run audited once, where it was asked. Only the
//! hubs (holding the shared secret) may ask one another. PostgreSQL only: SQLite
//! serves one hub.

use std::time::{Duration, Instant};

use muster_client::AuditQuery;
use muster_proto::{ProbeOutcome, RunProbeRequest};
use muster_testkit::{Backend, TestAgent, TestHub, backends};

use crate::multihub::{second_hub, wait_sessions};

#[tokio::test]
async fn a_probe_asked_of_one_hub_runs_where_the_agent_is_connected() {
    for backend in backends() {
        if !matches!(backend, Backend::Postgres(_)) {
            continue;
        }
        let a = TestHub::start_with(&backend, |o| {
            o.heartbeat_interval = Duration::from_secs(1);
            o.hub_lease = Duration::from_secs(2);
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let b = second_hub(&a, dir.path()).await;

        // Two agents whose sessions hub B holds, enrolled with hub A's token.
        let (mut agents, mut running, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for name in ["far-01", "far-02"] {
            let agent = TestAgent::new(name);
            let token = a.default_token().await;
            let id =
                muster_agent::enroll(&b.enroll_options(&agent, Some(&token), None), &agent.dir)
                    .await
                    .unwrap()
                    .agent_id;
            running.push(agent.run());
            ids.push(id);
            agents.push(agent);
        }
        wait_sessions(&b, 2).await;
        for id in &ids {
            a.wait_status(id, "online", Duration::from_secs(10)).await;
        }
        let admin = a.admin();
        let deadline = Instant::now() + Duration::from_secs(10);
        while admin.agent_probes(&ids[0]).await.unwrap().packs.is_empty() {
            assert!(Instant::now() < deadline, "the agent announced no packs");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // One agent, asked of hub A: the answer comes from the machine, through B.
        let run = admin
            .run_probe(&ids[0], "system.info", &RunProbeRequest::default())
            .await
            .unwrap();
        assert_eq!(run.outcome, ProbeOutcome::Ok, "{run:?}");
        assert_eq!(run.result.as_ref().unwrap()["hostname"], "far-01");

        // A fan-out through hub A reaches both.
        let req = RunProbeRequest {
            agents: Some("far-*".into()),
            ..Default::default()
        };
        let runs = admin.run_probes("system.load", &req).await.unwrap();
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert!(
            runs.iter().all(|r| r.outcome == ProbeOutcome::Ok),
            "{runs:?}"
        );
        assert_eq!(runs[0].agent, "far-01");

        // Audited once per run, by the hub asked, with the caller's name on it.
        let audited = admin
            .audit(&AuditQuery {
                action: Some("probe.run".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(audited.len(), 3, "{audited:?}");
        assert!(
            audited.iter().all(|e| e.actor.starts_with("key:")),
            "{audited:?}"
        );

        // Only a hub may ask a hub: no key, an admin key, a made-up token are refused;
        // the token derived from the shared secret is taken.
        let body = format!(
            r#"{{"probe":"system.info","timeout_ms":5000,"agents":["{}"]}}"#,
            ids[0]
        );
        let secret = std::fs::read_to_string(a.data_dir.join("secret")).unwrap();
        let peer = muster_hub::secrets::Keys::derive(secret.trim().as_bytes())
            .unwrap()
            .peer_token();
        let raw =
            muster_client::HubClient::new(&b.url, muster_client::Trust::Hash(b.ca_hash)).unwrap();
        for bearer in [None, Some(a.admin_key.as_str()), Some("0123456789abcdef")] {
            let (status, _) = raw
                .post_raw("/api/v1/hub/probes", body.clone().into_bytes(), bearer)
                .await
                .unwrap();
            assert_eq!(status, 401, "{bearer:?}");
        }
        let (status, answer) = raw
            .post_raw("/api/v1/hub/probes", body.into_bytes(), Some(&peer))
            .await
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        let list: muster_proto::ProbeRunList = serde_json::from_slice(&answer).unwrap();
        assert_eq!(list.runs[0].outcome, ProbeOutcome::Ok);
        // A batch past the bound is refused before anything runs.
        let many: Vec<String> = (0..=muster_proto::PEER_PROBE_BATCH)
            .map(|_| ids[0].clone())
            .collect();
        let body = serde_json::json!({"probe": "system.info", "timeout_ms": 5000, "agents": many});
        let (status, _) = raw
            .post_raw(
                "/api/v1/hub/probes",
                body.to_string().into_bytes(),
                Some(&peer),
            )
            .await
            .unwrap();
        assert_eq!(status, 400);

        // Hub B gone: its agents are offline to hub A once its lease runs out.
        b.stop().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let run = admin
                .run_probe(&ids[1], "system.info", &RunProbeRequest::default())
                .await
                .unwrap();
            if run.outcome == ProbeOutcome::Offline {
                break;
            }
            assert!(Instant::now() < deadline, "still {run:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(running);
        drop(agents);
        a.stop().await;
    }
}
