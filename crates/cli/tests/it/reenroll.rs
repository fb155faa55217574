//! A machine that already holds credentials (SPEC §6): `muster enroll` there keeps
//! its identity (its name changes only with `--name`, a token passed is not
//! used), `--force` is what makes it a new agent and unenrolls the old one, and a
//! cloned identity gets no new credentials by any route.

use muster_proto::CreateTokenRequest;
use muster_testkit::{TestAgent, TestHub};

use crate::{code, each_backend, enrolled};

/// A single-use token: (its id, its value).
async fn token(hub: &TestHub) -> (String, String) {
    let t = hub
        .token(CreateTokenRequest {
            max_uses: Some(1),
            ttl_s: Some(900),
            ..Default::default()
        })
        .await;
    (t.id, t.token)
}

/// How many uses of token `id` are consumed.
async fn uses(hub: &TestHub, id: &str) -> u32 {
    let tokens = hub.admin().list_tokens().await.unwrap();
    tokens.iter().find(|t| t.id == id).unwrap().uses
}

#[tokio::test]
async fn a_renamed_host_keeps_its_name_and_a_token_passed_is_not_used() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let (mut machine, id) = enrolled(&hub, "db-01").await;

        // The host is renamed; `muster enroll` with what the config dir holds.
        machine.rename_host("db-01.new.example");
        let again = muster_agent::enroll(&hub.enroll_options(&machine, None, None), &machine.dir)
            .await
            .unwrap();
        assert_eq!(
            (again.agent_id.as_str(), again.created),
            (id.as_str(), false)
        );
        let a = hub.admin().agent(&id).await.unwrap();
        assert_eq!(
            (a.name.as_str(), a.hostname.as_str()),
            ("db-01", "db-01.new.example"),
            "the name changes only with --name; the hostname is a fact"
        );

        // The same, with a token on the command line: the credentials in the config
        // dir are used and the token is left alone.
        machine.rename_host("db-01.newer.example");
        let (t_id, t) = token(&hub).await;
        let again =
            muster_agent::enroll(&hub.enroll_options(&machine, Some(&t), None), &machine.dir)
                .await
                .unwrap();
        assert_eq!(
            (again.agent_id.as_str(), again.name.as_str()),
            (id.as_str(), "db-01")
        );
        assert_eq!(uses(&hub, &t_id).await, 0, "the token was not consumed");
        let a = hub.admin().agent(&id).await.unwrap();
        assert_eq!(a.hostname, "db-01.newer.example");
        assert_eq!(hub.admin().list_agents().await.unwrap().len(), 1);
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn enrolling_again_with_a_new_token_and_name_renames_instead_of_leaving_a_ghost() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let (machine, id) = enrolled(&hub, "web-01").await;
        let (t_id, t) = token(&hub).await;
        let again = muster_agent::enroll(
            &hub.enroll_options(&machine, Some(&t), Some("web-02")),
            &machine.dir,
        )
        .await
        .unwrap();
        assert_eq!(again.agent_id, id, "the machine stays itself");
        assert!(!again.created);
        assert_eq!(again.name, "web-02");
        assert_eq!(uses(&hub, &t_id).await, 0);
        let agents = hub.admin().list_agents().await.unwrap();
        assert_eq!(agents.len(), 1, "no ghost: {agents:?}");
        assert_eq!(agents[0].name, "web-02");
        assert_eq!(machine.client().agent_me().await.unwrap().name, "web-02");

        // Credentials the hub no longer honours are no identity to keep: the token
        // given then enrolls a new agent.
        hub.admin().revoke_agent(&id).await.unwrap();
        let (t_id, t) = token(&hub).await;
        let fresh =
            muster_agent::enroll(&hub.enroll_options(&machine, Some(&t), None), &machine.dir)
                .await
                .unwrap();
        assert!(fresh.created);
        assert_ne!(fresh.agent_id, id);
        assert_eq!(uses(&hub, &t_id).await, 1);
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn force_makes_a_new_agent_and_unenrolls_the_old_identity() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let (machine, old_id) = enrolled(&hub, "web-01").await;
        let old_client = machine.client();
        let (t_id, t) = token(&hub).await;
        let mut opts = hub.enroll_options(&machine, Some(&t), Some("web-02"));
        opts.force = true;
        let report = muster_agent::enroll(&opts, &machine.dir).await.unwrap();
        assert!(report.created);
        assert_ne!(report.agent_id, old_id);
        assert_eq!(report.unenrolled.as_deref(), Some(old_id.as_str()));
        assert_eq!(report.name, "web-02");
        assert_eq!(uses(&hub, &t_id).await, 1);

        let old = hub.admin().agent(&old_id).await.unwrap();
        assert_eq!(old.status, "revoked", "the old identity is no ghost");
        assert_eq!(code(old_client.agent_me().await), "agent_revoked");
        assert!(
            hub.audit_actions()
                .await
                .contains(&"agent.unenrolled".to_owned())
        );
        assert_eq!(
            machine.client().agent_me().await.unwrap().id,
            report.agent_id
        );

        // Under the same name too: the revoked UUID never comes back.
        let (_, t) = token(&hub).await;
        let mut opts = hub.enroll_options(&machine, Some(&t), None);
        opts.force = true;
        let again = muster_agent::enroll(&opts, &machine.dir).await.unwrap();
        assert!(again.created);
        assert_ne!(again.agent_id, report.agent_id);
        assert_eq!(
            hub.admin().agent(&report.agent_id).await.unwrap().status,
            "revoked"
        );

        // A used-up token after the old identity went: the error says it went.
        let mut opts = hub.enroll_options(&machine, Some(&t), None);
        opts.force = true;
        let err = muster_agent::enroll(&opts, &machine.dir)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("token_exhausted") && err.contains("was already unenrolled"),
            "{err}"
        );
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn force_without_a_credential_waits_for_approval_and_a_plain_enroll_collects_it() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let (machine, old_id) = enrolled(&hub, "lab-01").await;
        let mut opts = hub.enroll_options(&machine, None, None);
        opts.force = true;
        let err = muster_agent::enroll(&opts, &machine.dir).await.unwrap_err();
        let muster_agent::AgentError::Pending { request_id } = err else {
            panic!("{err}")
        };
        assert_eq!(hub.admin().agent(&old_id).await.unwrap().status, "revoked");

        // Once approved, `muster enroll` (as the CLI's hint says) finishes the
        // waiting request rather than trying the old, revoked credentials.
        hub.admin().approve(&request_id).await.unwrap();
        let report = muster_agent::enroll(&hub.enroll_options(&machine, None, None), &machine.dir)
            .await
            .unwrap();
        assert!(report.created);
        assert_ne!(report.agent_id, old_id);
        assert_eq!(
            machine.client().agent_me().await.unwrap().id,
            report.agent_id
        );
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn another_hub_needs_force_and_an_unreachable_old_hub_leaves_the_credentials() {
    each_backend(|b| async move {
        let old_hub = TestHub::start(&b).await;
        let (machine, _) = enrolled(&old_hub, "mover").await;
        let new_hub = TestHub::start(&b).await;
        let before = crate::snapshot(machine.dir.path());

        // Without --force: refused before anything is sent, nothing changed.
        let (t_id, t) = token(&new_hub).await;
        let err = muster_agent::enroll(
            &new_hub.enroll_options(&machine, Some(&t), None),
            &machine.dir,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(crate::snapshot(machine.dir.path()), before);

        // With --force but the old hub gone: it says so and keeps the credentials.
        old_hub.stop().await;
        let mut opts = new_hub.enroll_options(&machine, Some(&t), None);
        opts.force = true;
        let err = muster_agent::enroll(&opts, &machine.dir).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("unenroll") && msg.contains("left in place"),
            "{msg}"
        );
        assert_eq!(crate::snapshot(machine.dir.path()), before);
        assert_eq!(uses(&new_hub, &t_id).await, 0);
        assert!(new_hub.admin().list_agents().await.unwrap().is_empty());
        new_hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_cloned_identity_gets_no_new_credentials() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let (machine, id) = enrolled(&hub, "twin").await;
        hub.raw_sql(&format!(
            "UPDATE agents SET cloned_at = 1 WHERE id = '{id}'"
        ))
        .await;

        // With its own credentials.
        let err = muster_agent::enroll(&hub.enroll_options(&machine, None, None), &machine.dir)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("agent_cloned"), "{err}");

        // By name, with a token or an admin key, from a fresh machine.
        let other = TestAgent::new("twin");
        let (t_id, t) = token(&hub).await;
        let err = muster_agent::enroll(&hub.enroll_options(&other, Some(&t), None), &other.dir)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("agent_cloned"), "{err}");
        assert_eq!(uses(&hub, &t_id).await, 0);
        let (req, _) = crate::request("twin", None);
        assert_eq!(
            code(hub.anonymous().enroll(Some(&hub.admin_key), &req).await),
            "agent_cloned"
        );
        let shown = hub.admin().agent(&id).await.unwrap();
        assert_eq!((shown.status.as_str(), shown.generation), ("cloned", 1));

        // Revoking resolves it: the name is free for a new identity.
        hub.admin().revoke_agent(&id).await.unwrap();
        let (_, t) = token(&hub).await;
        let fresh = muster_agent::enroll(&hub.enroll_options(&other, Some(&t), None), &other.dir)
            .await
            .unwrap();
        assert!(fresh.created);
        hub.stop().await;
    })
    .await;
}

#[test]
fn enroll_help_says_what_force_does() {
    let cwd = tempfile::tempdir().unwrap();
    let out = crate::binary::muster(cwd.path())
        .args(["enroll", "--help"])
        .output()
        .unwrap();
    let help = crate::binary::ok(out);
    assert!(
        help.contains("--force") && help.contains("unenrolled at its hub first"),
        "{help}"
    );
}
