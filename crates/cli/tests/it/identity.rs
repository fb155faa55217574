//! Identity over time (SPEC §6): re-enrollment keeps the UUID and kills the old
//! credentials; a renamed host keeps its UUID; revoked UUIDs never come back;
//! removed agents leave the fleet view.

use muster_testkit::{TestAgent, TestHub};

use crate::each_backend;

#[tokio::test]
async fn reenrollment_keeps_the_uuid_and_kills_the_old_key() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let first_machine = TestAgent::new("db-01");
        let t1 = hub.default_token().await;
        let first = muster_agent::enroll(
            &hub.enroll_options(&first_machine, Some(&t1), None),
            &first_machine.dir,
        )
        .await
        .unwrap();
        let old_client = first_machine.client();
        assert_eq!(old_client.agent_me().await.unwrap().id, first.agent_id);

        // The machine is reimaged: new config dir, same name, new token.
        let reimaged = TestAgent::new("db-01");
        let t2 = hub.default_token().await;
        let second = muster_agent::enroll(
            &hub.enroll_options(&reimaged, Some(&t2), None),
            &reimaged.dir,
        )
        .await
        .unwrap();
        assert!(!second.created);
        assert_eq!(second.agent_id, first.agent_id, "same name keeps the UUID");
        assert_eq!(crate::code(old_client.agent_me().await), "key_invalid");
        assert_eq!(
            reimaged.client().agent_me().await.unwrap().id,
            first.agent_id
        );
        assert_eq!(hub.admin().list_agents().await.unwrap().len(), 1);
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_renamed_host_reenrolls_with_its_own_credentials() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let mut machine = TestAgent::new("old-name");
        let token = hub.default_token().await;
        let first = muster_agent::enroll(
            &hub.enroll_options(&machine, Some(&token), None),
            &machine.dir,
        )
        .await
        .unwrap();
        machine.rename_host("new-name");
        let again = muster_agent::enroll(
            &hub.enroll_options(&machine, None, Some("new-name")),
            &machine.dir,
        )
        .await
        .unwrap();
        assert_eq!(again.agent_id, first.agent_id);
        let a = hub.admin().agent(&first.agent_id).await.unwrap();
        assert_eq!(
            (a.name.as_str(), a.hostname.as_str()),
            ("new-name", "new-name")
        );
        assert_eq!(machine.client().agent_me().await.unwrap().name, "new-name");
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn revoked_agents_are_refused_and_never_come_back() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let admin = hub.admin();
        let machine = TestAgent::new("gone-01");
        let t = hub.default_token().await;
        let first =
            muster_agent::enroll(&hub.enroll_options(&machine, Some(&t), None), &machine.dir)
                .await
                .unwrap();
        let client = machine.client();
        admin.revoke_agent("gone-01").await.unwrap();
        assert_eq!(crate::code(client.agent_me().await), "agent_revoked");
        let status = muster_agent::status(&machine.dir).await.unwrap();
        assert!(status.hub.reachable && status.hub.agent.is_none());
        assert_eq!(status.hub.error_code.as_deref(), Some("agent_revoked"));

        // Its own credentials cannot re-enroll it.
        let err = muster_agent::enroll(&hub.enroll_options(&machine, None, None), &machine.dir)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("agent_revoked"), "{err}");

        // A new enrollment under the same name is a new identity.
        let fresh = TestAgent::new("gone-01");
        let t2 = hub.default_token().await;
        let second = muster_agent::enroll(&hub.enroll_options(&fresh, Some(&t2), None), &fresh.dir)
            .await
            .unwrap();
        assert!(second.created);
        assert_ne!(second.agent_id, first.agent_id);
        let listed = admin.list_agents().await.unwrap();
        let old = listed.iter().find(|a| a.id == first.agent_id).unwrap();
        assert_eq!(
            old.status, "revoked",
            "the revoked record stays for history"
        );

        admin.remove_agent(&second.agent_id).await.unwrap();
        let listed = admin.list_agents().await.unwrap();
        assert!(
            listed.iter().all(|a| a.id != second.agent_id),
            "removed agents leave the list"
        );
        assert_eq!(
            crate::code(fresh.client().agent_me().await),
            "agent_revoked"
        );
        assert_eq!(
            crate::code(admin.agent(&second.agent_id).await),
            "not_found"
        );
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_lost_answer_to_a_reenrollment_with_existing_credentials_can_be_retried() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let machine = TestAgent::new("flaky");
        let t = hub.default_token().await;
        let first =
            muster_agent::enroll(&hub.enroll_options(&machine, Some(&t), None), &machine.dir)
                .await
                .unwrap();
        let old_key = machine.dir.load().unwrap().unwrap().config.agent_key;
        let client = hub.anonymous();
        let (mut req, key) = crate::request("flaky", None);
        req.enrollment_id = Some("aaaabbbbccccddddeeeeffff00001111".to_owned());
        // The answer to this re-enrollment is "lost": the old key is dead now.
        client.enroll(Some(&old_key), &req).await.unwrap();
        req.csr_pem = muster_ca::csr_for_key(&key, "flaky").unwrap();
        match client.enroll(Some(&old_key), &req).await.unwrap() {
            muster_client::EnrollOutcome::Reenrolled(r) => assert_eq!(r.agent_id, first.agent_id),
            other => panic!("{other:?}"),
        }
        // The id alone, with another key pair, gets nothing.
        let (mut other, _) = crate::request("flaky", None);
        other.enrollment_id = req.enrollment_id.clone();
        assert_eq!(
            crate::code(client.enroll(Some(&old_key), &other).await),
            "conflict"
        );
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn unenroll_revokes_at_the_hub_and_removes_the_config_dir() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let machine = TestAgent::new("leaving");
        let t = hub.default_token().await;
        let r = muster_agent::enroll(&hub.enroll_options(&machine, Some(&t), None), &machine.dir)
            .await
            .unwrap();
        let client = machine.client();
        let id = muster_agent::unenroll(&machine.dir, false).await.unwrap();
        assert_eq!(id, r.agent_id);
        assert!(
            !machine.dir.path().join("config.json").exists(),
            "config dir removed"
        );
        assert_eq!(crate::code(client.agent_me().await), "agent_revoked");
        assert_eq!(hub.admin().agent(&id).await.unwrap().status, "revoked");
        assert!(
            hub.audit_actions()
                .await
                .contains(&"agent.unenrolled".to_owned())
        );
        // Nothing to unenroll any more: a clear error, not a panic.
        let err = muster_agent::unenroll(&machine.dir, false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not enrolled"), "{err}");

        // With the hub gone, the credentials stay unless forced.
        let other = TestAgent::new("stranded");
        let t = hub.default_token().await;
        muster_agent::enroll(&hub.enroll_options(&other, Some(&t), None), &other.dir)
            .await
            .unwrap();
        hub.stop().await;
        let err = muster_agent::unenroll(&other.dir, false).await.unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert!(other.dir.load().unwrap().is_some(), "nothing deleted");
        muster_agent::unenroll(&other.dir, true).await.unwrap();
        assert!(other.dir.load().unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn a_name_addresses_the_live_agent_else_the_latest_revoked_one() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let admin = hub.admin();
        let (_, first) = crate::enrolled(&hub, "web-01").await;

        // Revoke, then everything else, by name.
        admin.revoke_agent("web-01").await.unwrap();
        let shown = admin.agent("web-01").await.unwrap();
        assert_eq!(
            (shown.id.as_str(), shown.status.as_str()),
            (first.as_str(), "revoked")
        );
        let history = admin
            .audit(&muster_client::AuditQuery {
                agent: Some("web-01".to_owned()),
                ..Default::default()
            })
            .await
            .unwrap();
        let actions: Vec<&str> = history.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["agent.revoked", "agent.enrolled"], "{history:?}");

        // A live agent holding the name comes first.
        let (_, second) = crate::enrolled(&hub, "web-01").await;
        assert_eq!(admin.agent("web-01").await.unwrap().id, second);
        // Of two revoked ones, the latest.
        admin.revoke_agent("web-01").await.unwrap();
        assert_eq!(admin.agent("web-01").await.unwrap().id, second);

        let removed = admin.remove_agent("web-01").await.unwrap();
        assert_eq!(
            (removed.id.as_str(), removed.status.as_str()),
            (second.as_str(), "removed")
        );
        // Removed agents stay out of sight; the older revoked one is next in line.
        assert_eq!(admin.agent("web-01").await.unwrap().id, first);
        admin.remove_agent("web-01").await.unwrap();
        assert_eq!(crate::code(admin.agent("web-01").await), "not_found");
        assert_eq!(crate::code(admin.remove_agent("web-01").await), "not_found");
        hub.stop().await;
    })
    .await;
}
