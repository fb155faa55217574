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
