//! Secrets at rest (SPEC §2): someone who copies the database finds keyed hashes
//! and ciphertext, never a token, key or private key.

use muster_testkit::{Backend, TestAgent, TestHub};

use crate::each_backend;

/// Everything the database holds, as text: the SQLite files byte for byte, or
/// every PostgreSQL row.
async fn database_text(hub: &TestHub) -> String {
    match &hub.backend {
        Backend::Sqlite => {
            let mut all = Vec::new();
            for entry in std::fs::read_dir(&hub.data_dir).unwrap() {
                let path = entry.unwrap().path();
                if path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("muster.db")
                {
                    all.extend(std::fs::read(&path).unwrap());
                }
            }
            String::from_utf8_lossy(&all).into_owned()
        }
        Backend::Postgres(_) => hub.dump_rows().await,
    }
}

#[tokio::test]
async fn the_database_holds_no_secret_in_plain_text() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let token = hub.default_token().await;
        let agent = TestAgent::new("secretive");
        muster_agent::enroll(&hub.enroll_options(&agent, Some(&token), None), &agent.dir)
            .await
            .unwrap();
        let creds = agent.dir.load().unwrap().unwrap();
        let other_token = hub.default_token().await;
        let member = hub
            .admin()
            .create_key(&muster_proto::CreateKeyRequest {
                name: "m".into(),
                role: "member".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .key;
        let secret = std::fs::read_to_string(hub.data_dir.join("secret")).unwrap();
        let text = database_text(&hub).await;
        assert!(text.len() > 1000, "read the database");
        let token_secret = |t: &str| t.split_once('.').unwrap().0.to_owned();
        for (what, value) in [
            ("used token", token_secret(&token)),
            ("unused token", token_secret(&other_token)),
            ("agent key", creds.config.agent_key.clone()),
            ("admin key", hub.admin_key.clone()),
            ("member key", member),
            ("hub secret", secret.trim().to_owned()),
        ] {
            // The display prefix (12 characters) is kept on purpose; the rest never is.
            assert!(!text.contains(&value[12..]), "{what} found in the database");
        }
        assert!(
            !text.contains("PRIVATE KEY"),
            "a private key in PEM form is in the database"
        );
        hub.stop().await;
    })
    .await;
}
