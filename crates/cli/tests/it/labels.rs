//! Labels over an agent's life (SPEC §6): they survive re-enrollment and
//! replacement unless the new credential sets them, and admins edit them
//! (`POST /api/v1/agents/{id}/labels`, `muster agents label NAME k=v k-`), audited.

use std::collections::BTreeMap;
use std::time::Duration;

use muster_proto::{ChangeLabelsRequest, CreateKeyRequest, CreateTokenRequest};
use muster_testkit::{Backend, TestAgent, TestHub};

use crate::binary::{muster, ok};
use crate::command_line::{admin_flags, run, strings};
use crate::{code, each_backend};

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

#[tokio::test]
async fn admins_edit_labels_in_one_audited_change() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let admin = hub.admin();
        let machine = TestAgent::new("db-01");
        let t = hub.default_token().await;
        let mut opts = hub.enroll_options(&machine, Some(&t), None);
        opts.labels = map(&[("env", "prod"), ("team", "a")]);
        let id = muster_agent::enroll(&opts, &machine.dir)
            .await
            .unwrap()
            .agent_id;

        let change = ChangeLabelsRequest {
            set: map(&[("env", "staging"), ("tier", "db")]),
            remove: vec!["team".to_owned(), "absent".to_owned()],
        };
        let changed = admin.change_labels("db-01", &change).await.unwrap();
        let expected = map(&[("env", "staging"), ("tier", "db")]);
        assert_eq!(
            (changed.id.as_str(), &changed.labels),
            (id.as_str(), &expected)
        );
        assert_eq!(admin.agent(&id).await.unwrap().labels, expected);
        let entry = admin
            .audit(&muster_client::AuditQuery {
                action: Some("agent.labels_changed".to_owned()),
                ..Default::default()
            })
            .await
            .unwrap()
            .remove(0);
        assert_eq!(entry.target, format!("agent:{id}"));
        assert_eq!(entry.details["set"]["tier"], "db", "{entry:?}");
        assert_eq!(entry.details["remove"][0], "team", "{entry:?}");

        // Checked like every label, all or nothing.
        let bad = ChangeLabelsRequest {
            set: map(&[("ok", "1"), ("bad key!", "x")]),
            remove: vec![],
        };
        assert_eq!(
            code(admin.change_labels(&id, &bad).await),
            "invalid_request"
        );
        let bad = ChangeLabelsRequest {
            set: map(&[("both", "1")]),
            remove: vec!["both".to_owned()],
        };
        assert_eq!(
            code(admin.change_labels(&id, &bad).await),
            "invalid_request"
        );
        let too_many = ChangeLabelsRequest {
            set: (0..63).map(|i| (format!("k{i}"), "v".to_owned())).collect(),
            remove: vec![],
        };
        assert_eq!(
            code(admin.change_labels(&id, &too_many).await),
            "invalid_request"
        );
        assert_eq!(admin.agent(&id).await.unwrap().labels, expected);
        assert_eq!(
            code(admin.change_labels("nobody", &change).await),
            "not_found"
        );
        // Members look; only admins edit.
        let member = admin
            .create_key(&CreateKeyRequest {
                name: "viewer".to_owned(),
                role: muster_proto::Role::Member,
                ..Default::default()
            })
            .await
            .unwrap()
            .key;
        let as_member = hub.anonymous().with_bearer(member);
        assert_eq!(
            code(as_member.change_labels(&id, &change).await),
            "forbidden"
        );

        // The machine re-enrolling keeps what the admin set.
        muster_agent::enroll(&hub.enroll_options(&machine, None, None), &machine.dir)
            .await
            .unwrap();
        assert_eq!(admin.agent(&id).await.unwrap().labels, expected);
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn agents_label_sets_and_removes_from_the_command_line() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let machine = TestAgent::new("cache-01");
    let t = hub.default_token().await;
    let mut opts = hub.enroll_options(&machine, Some(&t), None);
    opts.labels = map(&[("team", "a")]);
    let id = muster_agent::enroll(&opts, &machine.dir)
        .await
        .unwrap()
        .agent_id;
    let mut args = strings(&[
        "agents", "label", "cache-01", "env=prod", "note=a=b", "team-",
    ]);
    args.extend(admin_flags(&hub));
    let out = run(args).await;
    let printed = ok(out);
    assert!(printed.contains("env=prod,note=a=b"), "{printed}");
    assert!(!printed.contains("team"), "{printed}");
    assert_eq!(
        hub.admin().agent(&id).await.unwrap().labels,
        map(&[("env", "prod"), ("note", "a=b")])
    );

    // A word that is neither k=v nor k- is refused before anything is sent.
    let out = tokio::task::spawn_blocking(|| {
        let cwd = tempfile::tempdir().unwrap();
        muster(cwd.path())
            .args(["agents", "label", "cache-01", "oops"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    hub.stop().await;
}
