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
