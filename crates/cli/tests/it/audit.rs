//! The audit log (SPEC §11): every change writes one entry in its own transaction,
//! and the chain shows any entry changed, deleted or inserted behind the hub's back.

use std::process::Command;

use muster_client::AuditQuery;
use muster_testkit::{TestAgent, TestHub};

use crate::each_backend;

/// Runs `muster audit verify` on a blocking thread, so the in-process hub can answer.
async fn verify_with_cli(hub: &TestHub) -> (bool, String) {
    let (url, key, hash) = (
        hub.url.clone(),
        hub.admin_key.clone(),
        hub.ca_hash.to_string(),
    );
    tokio::task::spawn_blocking(move || run_verify(&url, &key, &hash))
        .await
        .unwrap()
}

fn run_verify(url: &str, key: &str, hash: &str) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muster"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MUSTER_")) {
        cmd.env_remove(k);
    }
    let out = cmd
        .args(["audit", "verify"])
        .env("MUSTER_HUB_URL", url)
        .env("MUSTER_API_KEY", key)
        .env("MUSTER_CA_HASH", hash)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn the_audit_log_records_changes_and_verify_catches_tampering() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let admin = hub.admin();
        let agent = TestAgent::new("audited");
        let token = hub.default_token().await;
        let r = muster_agent::enroll(&hub.enroll_options(&agent, Some(&token), None), &agent.dir)
            .await
            .unwrap();
        admin.revoke_agent(&r.agent_id).await.unwrap();

        let for_agent = admin
            .audit(&AuditQuery {
                agent: Some("audited".into()),
                ..Default::default()
            })
            .await;
        // The name no longer resolves to a live agent after revocation: ask by id.
        let by_id = admin
            .audit(&AuditQuery {
                agent: Some(r.agent_id.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        let actions: Vec<&str> = by_id.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            vec!["agent.revoked", "agent.enrolled"],
            "{for_agent:?}"
        );
        assert_eq!(by_id[1].source, "127.0.0.1");
        let created = admin
            .audit(&AuditQuery {
                action: Some("token.created".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(created.len(), 1);
        assert!(created[0].actor.starts_with("key:"));

        let (ok, out) = verify_with_cli(&hub).await;
        assert!(ok, "{out}");
        assert!(out.starts_with("OK: "), "{out}");

        // Someone with the database but not the secret rewrites an entry.
        hub.raw_sql("UPDATE audit_log SET source = '10.9.9.9' WHERE action = 'agent.enrolled'")
            .await;
        let (ok, out) = verify_with_cli(&hub).await;
        assert!(!ok);
        assert_eq!(out.trim().lines().count(), 1, "{out}");
        assert!(out.contains("changed"), "{out}");
        hub.stop().await;
    })
    .await;
}

fn audit_query(action: &str) -> AuditQuery {
    AuditQuery {
        action: Some(action.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn refused_enrollments_and_denied_admin_calls_are_audited() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let admin = hub.admin();
        let anonymous = hub.anonymous();
        let (req, _) = crate::request("intruder", Some("front-door"));
        let bogus = "met_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(
            crate::code(anonymous.enroll(Some(bogus), &req).await),
            "token_unknown"
        );
        let narrow = hub
            .token(muster_proto::CreateTokenRequest {
                pattern: Some("web-*".into()),
                ..Default::default()
            })
            .await;
        assert_eq!(
            crate::code(anonymous.enroll(Some(&narrow.token), &req).await),
            "hostname_not_allowed"
        );

        let refused = admin
            .audit(&audit_query("agent.enroll_refused"))
            .await
            .unwrap();
        assert_eq!(refused.len(), 2, "{refused:?}");
        // Newest first: the token that did not allow the hostname, named by its id.
        assert_eq!(refused[0].actor, format!("token:{}", narrow.id));
        assert_eq!(refused[0].details["code"], "hostname_not_allowed");
        // An unknown token names nobody.
        assert_eq!(refused[1].actor, "anonymous");
        assert_eq!(refused[1].outcome, "denied");
        assert_eq!(refused[1].source, "127.0.0.1");
        assert_eq!(refused[1].details["code"], "token_unknown");
        assert_eq!(refused[1].details["hostname"], "intruder");
        assert_eq!(refused[1].details["name"], "front-door");

        // A member key on an admin route.
        let member = admin
            .create_key(&muster_proto::CreateKeyRequest {
                name: "viewer".into(),
                role: muster_proto::Role::Member,
                ..Default::default()
            })
            .await
            .unwrap();
        let viewer = hub.anonymous().with_bearer(member.key.clone());
        assert_eq!(crate::code(viewer.list_tokens().await), "forbidden");
        let denied = admin.audit(&audit_query("access.denied")).await.unwrap();
        assert_eq!(denied.len(), 1, "{denied:?}");
        assert_eq!(denied[0].actor, format!("key:{}", member.info.id));
        assert_eq!(denied[0].outcome, "denied");
        assert_eq!(denied[0].details["route"], "GET /api/v1/tokens");
        let (ok, out) = verify_with_cli(&hub).await;
        assert!(ok, "{out}");
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_flood_of_refusals_leaves_a_bounded_trace() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let anonymous = hub.anonymous();
        let (req, _) = crate::request("flooder", None);
        let bogus = "met_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
        for _ in 0..200 {
            assert_eq!(
                crate::code(anonymous.enroll(Some(bogus), &req).await),
                "token_unknown"
            );
        }
        let refused = hub
            .admin()
            .audit(&audit_query("agent.enroll_refused"))
            .await
            .unwrap();
        // The first refusals are recorded, then at most 10 a minute from one source.
        assert!((1..=10).contains(&refused.len()), "{}", refused.len());
        let (_, metrics) = anonymous.get_raw("/metrics").await.unwrap();
        let metrics = String::from_utf8(metrics).unwrap();
        let dropped: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("muster_audit_refusals_dropped_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no dropped count in {metrics}"));
        assert_eq!(dropped as usize + refused.len(), 200);
        hub.stop().await;
    })
    .await;
}
