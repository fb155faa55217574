//! Labels over an agent's life (SPEC §6): they survive re-enrollment and
//! replacement unless the new credential sets them, and admins edit them
//! (`POST /api/v1/agents/{id}/labels`, `muster agents label NAME k=v k-`), audited.

use std::collections::BTreeMap;
use std::time::Duration;

use muster_proto::CreateTokenRequest;
use muster_testkit::{TestAgent, TestHub};

use crate::each_backend;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn labels_survive_replacement_and_the_credential_wins_key_by_key() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let machine = TestAgent::new("web-01");
        let first_token = hub
            .token(CreateTokenRequest {
                max_uses: Some(1),
                ttl_s: Some(900),
                labels: map(&[("owner", "ops")]),
                ..Default::default()
            })
            .await
            .token;
        let mut opts = hub.enroll_options(&machine, Some(&first_token), None);
        opts.labels = map(&[("env", "prod"), ("team", "a")]);
        let id = muster_agent::enroll(&opts, &machine.dir)
            .await
            .unwrap()
            .agent_id;
        let running = machine.run();
        hub.wait_status(&id, "online", Duration::from_secs(5)).await;

        // The machine is reimaged while online: a token allowed to replace it, which
        // sets one label of its own.
        let replacing = hub
            .token(CreateTokenRequest {
                max_uses: Some(1),
                ttl_s: Some(900),
                allow_replace: true,
                labels: map(&[("env", "staging")]),
                ..Default::default()
            })
            .await
            .token;
        let reimaged = TestAgent::new("web-01");
        let r = muster_agent::enroll(
            &hub.enroll_options(&reimaged, Some(&replacing), None),
            &reimaged.dir,
        )
        .await
        .unwrap();
        assert_eq!((r.agent_id.as_str(), r.created), (id.as_str(), false));
        let _ = running.ended(Duration::from_secs(5)).await;
        let expected = map(&[("env", "staging"), ("owner", "ops"), ("team", "a")]);
        assert_eq!(hub.admin().agent(&id).await.unwrap().labels, expected);

        // A plain re-enrollment, and one with the agent's own credentials, keep them.
        let again = TestAgent::new("web-01");
        let t = hub.default_token().await;
        muster_agent::enroll(&hub.enroll_options(&again, Some(&t), None), &again.dir)
            .await
            .unwrap();
        muster_agent::enroll(&hub.enroll_options(&again, None, None), &again.dir)
            .await
            .unwrap();
        assert_eq!(hub.admin().agent(&id).await.unwrap().labels, expected);
        hub.stop().await;
    })
    .await;
}
