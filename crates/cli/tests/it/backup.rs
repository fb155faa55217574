//! Backup and restore (SPEC §12): an online SQLite backup taken while enrollments
//! run restores into a fresh data dir with the same secret: same fleet, tokens, keys
//! and a verifying audit chain, and connected agents come back by themselves.

use std::time::Duration;

use muster_hub::HubOptions;
use muster_testkit::{Backend, TestAgent, TestHub};

#[tokio::test]
async fn a_backup_taken_while_serving_restores_the_same_fleet() {
    let mut hub = TestHub::start_with(&Backend::Sqlite, |o| {
        o.heartbeat_interval = Duration::from_secs(1)
    })
    .await;
    let agent = TestAgent::new("backed-up");
    let t = hub.default_token().await;
    let id = muster_agent::enroll(&hub.enroll_options(&agent, Some(&t), None), &agent.dir)
        .await
        .unwrap()
        .agent_id;
    let running = agent.run();
    hub.wait_status(&id, "online", Duration::from_secs(5)).await;

    // Enrollments keep coming while the backup runs.
    let busy = {
        let (url, hash, token) = (
            hub.url.clone(),
            hub.ca_hash,
            hub.token(muster_proto::CreateTokenRequest {
                max_uses: Some(50),
                ttl_s: Some(600),
                ..Default::default()
            })
            .await
            .token,
        );
        tokio::spawn(async move {
            let client =
                muster_client::HubClient::new(&url, muster_client::Trust::Hash(hash)).unwrap();
            for i in 0..30 {
                let (req, _) = crate::request(&format!("busy-{i}"), None);
                client.enroll(Some(&token), &req).await.unwrap();
            }
        })
    };
    let out = hub.data_dir.parent().unwrap().join("backup.db");
    let data = hub.data_dir.clone();
    let out2 = out.clone();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(["hub", "backup", "--data-dir"])
            .arg(&data)
            .arg("--out")
            .arg(&out2)
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(status.success());
    busy.await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let before = hub.admin().list_agents().await.unwrap().len();
    let secret = std::fs::read_to_string(hub.data_dir.join("secret"))
        .unwrap()
        .trim()
        .to_owned();
    let port_addr = hub.url.trim_start_matches("https://").parse().unwrap();
    hub.stop_serving().await;

    // A fresh data dir with the wrong secret is refused.
    let fresh = tempfile::tempdir().unwrap();
    let restore = |dir: &std::path::Path| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(&out, dir.join("muster.db")).unwrap();
    };
    let wrong_dir = fresh.path().join("wrong");
    restore(&wrong_dir);
    let mut wrong = HubOptions::new(&wrong_dir);
    wrong.listen = "127.0.0.1:0".parse().unwrap();
    wrong.secret = Some("not-the-secret-at-all".into());
    let err = TestHub::start_on(wrong).await.err().unwrap();
    assert!(matches!(err, muster_hub::HubError::WrongSecret), "{err}");

    // The right secret, same address: the same fleet, and the agent returns by itself.
    let dir = fresh.path().join("restored");
    restore(&dir);
    let mut opts = HubOptions::new(&dir);
    opts.listen = port_addr;
    opts.heartbeat_interval = Duration::from_secs(1);
    opts.secret = Some(secret);
    let restored = TestHub::start_on(opts).await.unwrap();
    assert_eq!(restored.ca_hash, hub.ca_hash, "same CA");
    let mut admin = restored.admin();
    // The restored hub has no initial-admin-key file: the old admin key still works.
    admin = admin.with_bearer(hub.admin_key.clone());
    let agents = admin.list_agents().await.unwrap();
    assert!(
        agents.len() >= before - 30 && agents.len() <= before,
        "{} of {before}",
        agents.len()
    );
    assert!(admin.list_tokens().await.unwrap().len() >= 2);
    assert!(admin.verify_audit().await.unwrap().ok);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if admin.agent(&id).await.unwrap().status == "online" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await.unwrap();
    restored.stop().await;
}
