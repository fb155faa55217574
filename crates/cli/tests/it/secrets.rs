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
                role: muster_proto::Role::Member,
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

#[tokio::test]
async fn rotating_the_secret_keeps_everything_working_and_the_old_secret_out() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let agent = TestAgent::new("rotated");
        let t = hub.default_token().await;
        muster_agent::enroll(&hub.enroll_options(&agent, Some(&t), None), &agent.dir)
            .await
            .unwrap();
        let unused = hub.default_token().await;
        let old_secret = std::fs::read_to_string(hub.data_dir.join("secret"))
            .unwrap()
            .trim()
            .to_owned();
        let (before_ca, admin_key, data_dir) =
            (hub.ca_hash, hub.admin_key.clone(), hub.data_dir.clone());
        let db_url = hub.db_url.clone();
        let (mut options, pg, tmp) = hub.stop_keeping_data().await;
        // An SSO client secret set through the hub (encrypted under the secret), as
        // `muster sso set` stores it.
        let keys = muster_hub::secrets::Keys::derive(old_secret.as_bytes()).unwrap();
        let store = muster_store::SqlStore::connect(&db_url, keys.audit_key())
            .await
            .unwrap();
        let sso = muster_store::SsoSettingsRecord {
            issuer: "https://idp.example.com".into(),
            client_id: "muster".into(),
            client_secret: Some(keys.encrypt(b"sso secret", b"muster sso client secret")),
            display_name: None,
            groups_claim: None,
            scopes: vec![],
            updated_at: 0,
        };
        let entry = muster_store::AuditEntry {
            at: 1,
            actor: "test".into(),
            action: "sso.set".into(),
            target: "sso".into(),
            source: "127.0.0.1".into(),
            outcome: "ok".into(),
            details: "{}".into(),
        };
        muster_store::SsoStore::set_sso_settings(&store, Some(&sso), &entry)
            .await
            .unwrap();
        store.pool().close().await;

        let (signed, printed) = muster_hub::rotate_secret(&options, None).await.unwrap();
        assert!(signed >= 3 && printed.is_none());
        let new_secret = std::fs::read_to_string(data_dir.join("secret"))
            .unwrap()
            .trim()
            .to_owned();
        assert_ne!(new_secret, old_secret);

        // The old secret no longer opens the database.
        options.secret = Some(old_secret);
        let err = TestHub::start_on(options.clone()).await.err().unwrap();
        assert!(matches!(err, muster_hub::HubError::WrongSecret), "{err}");

        options.secret = None;
        let mut restarted = TestHub::start_on(options).await.unwrap();
        restarted.adopt(pg, tmp);
        assert_eq!(restarted.ca_hash, before_ca, "same CA, re-encrypted");
        // Values hashed under the old secret still work: the admin key, the agent
        // key, an unused token.
        let admin = restarted.admin().with_bearer(admin_key);
        assert_eq!(admin.list_agents().await.unwrap().len(), 1);
        let creds = agent.dir.load().unwrap().unwrap();
        let as_agent = muster_client::HubClient::with_options(
            &restarted.url,
            muster_client::Trust::CaPem(creds.ca_pem.clone()),
            muster_client::ClientOptions {
                identity: Some(muster_client::ClientIdentity {
                    cert_pem: creds.cert_pem,
                    key_pem: creds.key_pem,
                }),
                ..Default::default()
            },
        )
        .unwrap()
        .with_bearer(creds.config.agent_key);
        assert_eq!(as_agent.agent_me().await.unwrap().name, "rotated");
        let fresh = TestAgent::new("after-rotation");
        muster_agent::enroll(
            &restarted.enroll_options(&fresh, Some(&unused), None),
            &fresh.dir,
        )
        .await
        .unwrap();
        // The SSO client secret was re-encrypted: it still opens.
        let sso = admin.sso().await.unwrap();
        assert!(sso.enabled && sso.client_secret_set, "{sso:?}");
        let v = admin.verify_audit().await.unwrap();
        assert!(v.ok, "{v:?}");
        assert!(
            restarted
                .audit_actions()
                .await
                .contains(&"hub.secret_rotated".to_owned())
        );
        restarted.stop().await;
    })
    .await;
}

/// One hub per data dir (SPEC §12): a second one is refused in one line, leaves
/// `hub.json` as the first wrote it, and the first keeps working; once the first
/// stops, the data dir is free again.
#[tokio::test]
async fn a_second_hub_on_the_same_data_dir_is_refused() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let hub_json = std::fs::read(hub.data_dir.join("hub.json")).unwrap();
        let err = match TestHub::start_on(hub.options.clone()).await {
            Ok(_) => panic!("a second hub started on the same data dir"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("another hub")
                && err.contains(&format!("pid {}", std::process::id()))
                && !err.contains('\n'),
            "{err}"
        );
        assert_eq!(
            std::fs::read(hub.data_dir.join("hub.json")).unwrap(),
            hub_json
        );
        hub.admin().list_agents().await.unwrap();
        let (options, pg, tmp) = hub.stop_keeping_data().await;
        let mut again = TestHub::start_on(options).await.unwrap();
        again.adopt(pg, tmp);
        again.admin().list_agents().await.unwrap();
        again.stop().await;
    })
    .await;
}
