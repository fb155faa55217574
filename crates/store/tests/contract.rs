//! The Store contract: every operation behaves the same on SQLite and PostgreSQL
//! (the latter when `MUSTER_TEST_POSTGRES_URL` is set; each run gets a fresh database).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use muster_store::*;

const KEY: [u8; 32] = [7; 32];
use sqlx::Connection;

/// What to remove after a test: the SQLite temp dir, or the PostgreSQL database.
enum Scratch {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Database { admin: String, name: String },
}

impl Scratch {
    async fn remove(self) {
        if let Scratch::Database { admin, name } = self {
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
}

async fn stores() -> Vec<(SqlStore, Scratch)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let mut v = vec![(
        SqlStore::connect(&url, KEY).await.unwrap(),
        Scratch::Dir(dir),
    )];
    if let Ok(admin) = std::env::var("MUSTER_TEST_POSTGRES_URL") {
        let name = format!("muster_s_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
        let store = SqlStore::connect(&format!("{base}/{name}"), KEY)
            .await
            .unwrap();
        v.push((store, Scratch::Database { admin, name }));
    }
    v
}

fn audit(action: &str) -> AuditEntry {
    AuditEntry {
        at: 1,
        actor: "test".into(),
        action: action.into(),
        target: "t".into(),
        source: "127.0.0.1".into(),
        outcome: "ok".into(),
        details: "{}".into(),
    }
}

fn token(id: &str, max_uses: Option<i64>, expires_at: Option<i64>) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        hash: format!("hash-{id}"),
        prefix: format!("met_{id}"),
        description: None,
        max_uses,
        uses: 0,
        expires_at,
        revoked_at: None,
        pattern: None,
        cidrs: vec![],
        labels: Default::default(),
        allow_replace: false,
        created_at: 0,
        created_by: "test".into(),
    }
}

fn write(
    agent_id: &str,
    name: &str,
    mode: EnrollMode,
    consume: Option<&str>,
    now: i64,
) -> EnrollWrite {
    EnrollWrite {
        agent_id: agent_id.into(),
        name: name.into(),
        facts: AgentFacts {
            hostname: name.into(),
            ..Default::default()
        },
        creds: IssuedCredentials {
            key_hash: format!("key-{agent_id}-{now}"),
            cert_serial: format!("serial-{now}"),
            cert_pubkey: "pk".into(),
            cert_expires_at: now + 1000,
        },
        mode,
        consume_token: consume.map(str::to_owned),
        consume_rule: None,
        enrollment: None,
        complete_request: None,
        audit: audit("agent.enrolled"),
        now,
    }
}

#[tokio::test]
async fn token_uses_are_consumed_atomically_and_refusals_say_why() {
    for (store, scratch) in stores().await {
        store
            .create_token(&token("one", Some(1), None), &audit("token.created"))
            .await
            .unwrap();
        store
            .create_token(&token("old", Some(5), Some(10)), &audit("token.created"))
            .await
            .unwrap();
        store
            .enroll(&write("a1", "n1", EnrollMode::New, Some("one"), 100))
            .await
            .unwrap();
        let again = store
            .enroll(&write("a2", "n2", EnrollMode::New, Some("one"), 101))
            .await;
        assert!(
            matches!(again, Err(StoreError::TokenExhausted)),
            "{again:?}"
        );
        let expired = store
            .enroll(&write("a3", "n3", EnrollMode::New, Some("old"), 100))
            .await;
        assert!(
            matches!(expired, Err(StoreError::TokenExpired)),
            "{expired:?}"
        );
        let unknown = store
            .enroll(&write("a4", "n4", EnrollMode::New, Some("nope"), 100))
            .await;
        assert!(
            matches!(unknown, Err(StoreError::TokenUnknown)),
            "{unknown:?}"
        );
        // Failed enrollments wrote nothing.
        assert!(store.get_agent("a2").await.unwrap().is_none());
        let t = store.find_token_by_hash("hash-one").await.unwrap().unwrap();
        assert_eq!((t.uses, t.state(200)), (1, TokenState::Exhausted));
        store
            .revoke_token("old", 300, &audit("token.revoked"))
            .await
            .unwrap();
        assert_eq!(
            store
                .find_token_by_hash("hash-old")
                .await
                .unwrap()
                .unwrap()
                .state(5),
            TokenState::Revoked
        );
        assert!(matches!(
            store.revoke_token("missing", 1, &audit("x")).await,
            Err(StoreError::NotFound)
        ));
        store.pool().close().await;
        scratch.remove().await;
    }
}

#[tokio::test]
async fn live_names_are_unique_and_ended_agents_free_them() {
    for (store, scratch) in stores().await {
        store
            .enroll(&write("a1", "web", EnrollMode::New, None, 1))
            .await
            .unwrap();
        let dup = store
            .enroll(&write("a2", "web", EnrollMode::New, None, 2))
            .await;
        assert!(matches!(dup, Err(StoreError::NameInUse)), "{dup:?}");
        let replaced = store
            .enroll(&write("a1", "web", EnrollMode::Replace, None, 3))
            .await
            .unwrap();
        assert_eq!(replaced.generation, 2);
        assert_eq!(replaced.key_hash.as_deref(), Some("key-a1-3"));
        assert!(
            store
                .find_agent_by_key_hash("key-a1-1")
                .await
                .unwrap()
                .is_none(),
            "old key gone"
        );

        let revoked = store
            .end_agent("a1", AgentEnd::Revoke, 4, &audit("agent.revoked"))
            .await
            .unwrap();
        assert_eq!(revoked.state, AgentState::Revoked);
        assert!(matches!(
            store
                .end_agent("a1", AgentEnd::Revoke, 5, &audit("x"))
                .await,
            Err(StoreError::NotFound)
        ));
        let gone = store
            .enroll(&write("a1", "web", EnrollMode::Replace, None, 6))
            .await;
        assert!(
            matches!(gone, Err(StoreError::NotFound)),
            "a revoked agent cannot be replaced"
        );
        store
            .enroll(&write("a2", "web", EnrollMode::New, None, 7))
            .await
            .unwrap();
        assert!(
            store
                .find_live_agent_by_name("web")
                .await
                .unwrap()
                .unwrap()
                .id
                == "a2"
        );
        store
            .end_agent("a2", AgentEnd::Remove, 8, &audit("agent.removed"))
            .await
            .unwrap();
        let visible: Vec<String> = store
            .list_agents(false)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(visible, vec!["a1".to_owned()]);
        assert_eq!(store.list_agents(true).await.unwrap().len(), 2);
        store.pool().close().await;
        scratch.remove().await;
    }
}

#[tokio::test]
async fn a_name_finds_the_live_agent_else_the_latest_revoked_never_a_removed_one() {
    for (store, scratch) in stores().await {
        let id_by_name = |name: &'static str| {
            let store = &store;
            async move { store.find_agent_by_name(name).await.unwrap().map(|a| a.id) }
        };
        for (id, at) in [("a1", 1), ("a2", 3)] {
            store
                .enroll(&write(id, "web", EnrollMode::New, None, at))
                .await
                .unwrap();
            assert_eq!(id_by_name("web").await.as_deref(), Some(id), "the live one");
            store
                .end_agent(id, AgentEnd::Revoke, at + 1, &audit("agent.revoked"))
                .await
                .unwrap();
            assert_eq!(
                id_by_name("web").await.as_deref(),
                Some(id),
                "the latest revoked"
            );
        }
        store
            .enroll(&write("a3", "web", EnrollMode::New, None, 5))
            .await
            .unwrap();
        assert_eq!(id_by_name("web").await.as_deref(), Some("a3"));
        for id in ["a3", "a2"] {
            store
                .end_agent(id, AgentEnd::Remove, 6, &audit("agent.removed"))
                .await
                .unwrap();
        }
        assert_eq!(id_by_name("web").await.as_deref(), Some("a1"));
        store
            .end_agent("a1", AgentEnd::Remove, 7, &audit("agent.removed"))
            .await
            .unwrap();
        assert_eq!(id_by_name("web").await, None);
        assert_eq!(id_by_name("nobody").await, None);
        store.pool().close().await;
        scratch.remove().await;
    }
}

#[tokio::test]
async fn fleet_pages_narrow_by_name_glob_and_label_in_sql() {
    for (store, _scratch) in stores().await {
        for (i, (name, env)) in [
            ("web-1", "prod"),
            ("Web-2", "dev"),
            ("db_1", "prod"),
            ("web%x", "a_b"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut w = write(&format!("a{i}"), name, EnrollMode::New, None, i as i64 + 1);
            w.facts.labels = [("env".to_owned(), env.to_owned())].into();
            store.enroll(&w).await.unwrap();
        }
        // Sorted here: the order of names is the database's collation.
        let names = |agents: Vec<AgentRecord>| -> Vec<String> {
            let mut v: Vec<String> = agents.into_iter().map(|a| a.name).collect();
            v.sort();
            v
        };
        let page = |glob: Option<&str>, label: Option<(&str, Option<&str>)>| AgentPageFilter {
            name_glob: glob.map(str::to_owned),
            label: label.map(|(k, v)| (k.to_owned(), v.map(str::to_owned))),
        };
        let cases: [(AgentPageFilter, &[&str]); 11] = [
            (page(None, None), &["Web-2", "db_1", "web%x", "web-1"]),
            // A literal start seeks by the lowercase name: `Web-2` is in range.
            (page(Some("web-*"), None), &["Web-2", "web-1"]),
            (page(Some("WEB-?"), None), &["Web-2", "web-1"]),
            (page(Some("Web-2"), None), &["Web-2"]),
            (page(Some("web-[12]"), None), &["Web-2", "web-1"]),
            (page(Some("we"), None), &[]),
            (page(Some("db_?"), None), &["db_1"]),
            (page(Some("web%*"), None), &["web%x"]),
            (page(None, Some(("env", Some("prod")))), &["db_1", "web-1"]),
            (page(None, Some(("env", Some("a_b")))), &["web%x"]),
            (page(Some("web-*"), Some(("env", Some("prod")))), &["web-1"]),
        ];
        for (filter, want) in cases {
            let got = names(
                store
                    .list_agents_page_where(None, &filter, 10)
                    .await
                    .unwrap(),
            );
            assert_eq!(got, want, "{filter:?}");
        }
        // Paging goes on from the cursor, still narrowed.
        let filter = page(Some("web*"), None);
        let first = store
            .list_agents_page_where(None, &filter, 1)
            .await
            .unwrap();
        let after = (first[0].name.as_str(), first[0].id.as_str());
        let mut all = names(
            store
                .list_agents_page_where(Some(after), &filter, 10)
                .await
                .unwrap(),
        );
        all.push(first[0].name.clone());
        all.sort();
        assert_eq!(all, ["Web-2", "web%x", "web-1"]);
    }
}

#[tokio::test]
async fn label_edits_apply_to_what_the_agent_holds_or_change_nothing() {
    for (store, scratch) in stores().await {
        let mut w = write("a1", "web", EnrollMode::New, None, 1);
        w.facts.labels = [("env", "prod"), ("team", "a")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        store.enroll(&w).await.unwrap();
        let entries = store.verify_audit().await.unwrap().count;
        let edit = LabelEdit {
            set: [("env".to_owned(), "staging".to_owned())].into(),
            remove: vec!["team".to_owned(), "absent".to_owned()],
            max_labels: 2,
        };
        let edited = store
            .change_labels("a1", &edit, 2, &audit("agent.labels_changed"))
            .await
            .unwrap();
        let expected: std::collections::BTreeMap<String, String> =
            [("env".to_owned(), "staging".to_owned())].into();
        assert_eq!(
            (edited.facts.labels.clone(), edited.updated_at),
            (expected.clone(), 2)
        );
        assert_eq!(store.verify_audit().await.unwrap().count, entries + 1);

        let too_many = LabelEdit {
            set: [("a", "1"), ("b", "2")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
            remove: vec![],
            max_labels: 2,
        };
        let refused = store
            .change_labels("a1", &too_many, 3, &audit("agent.labels_changed"))
            .await;
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{refused:?}"
        );
        assert_eq!(
            store.get_agent("a1").await.unwrap().unwrap().facts.labels,
            expected
        );
        assert_eq!(
            store.verify_audit().await.unwrap().count,
            entries + 1,
            "nothing written"
        );

        store
            .end_agent("a1", AgentEnd::Revoke, 4, &audit("agent.revoked"))
            .await
            .unwrap();
        for id in ["a1", "nobody"] {
            let gone = store
                .change_labels(id, &edit, 5, &audit("agent.labels_changed"))
                .await;
            assert!(matches!(gone, Err(StoreError::NotFound)), "{id}: {gone:?}");
        }
        store.pool().close().await;
        scratch.remove().await;
    }
}

#[tokio::test]
async fn update_steps_are_stored_on_the_agent_with_their_audit_entry() {
    for (store, scratch) in stores().await {
        store
            .enroll(&write("a1", "web", EnrollMode::New, None, 1))
            .await
            .unwrap();
        assert_eq!(store.get_agent("a1").await.unwrap().unwrap().update, None);
        let entries = store.verify_audit().await.unwrap().count;
        for (phase, at) in [("requested", 2), ("refused", 3)] {
            let step = AgentUpdate {
                phase: phase.to_owned(),
                version: "0.2.0".to_owned(),
                message: format!("{phase} for a reason"),
                at,
            };
            store
                .record_update("a1", &step, &audit(&format!("agent.update.{phase}")))
                .await
                .unwrap();
            let a = store.get_agent("a1").await.unwrap().unwrap();
            assert_eq!(a.update, Some(step));
        }
        assert_eq!(store.verify_audit().await.unwrap().count, entries + 2);
        let step = AgentUpdate {
            phase: "started".to_owned(),
            version: "0.2.0".to_owned(),
            message: String::new(),
            at: 4,
        };
        let gone = store
            .record_update("nobody", &step, &audit("agent.update.started"))
            .await;
        assert!(matches!(gone, Err(StoreError::NotFound)), "{gone:?}");
        assert_eq!(
            store.verify_audit().await.unwrap().count,
            entries + 2,
            "nothing written"
        );
        store.pool().close().await;
        scratch.remove().await;
    }
}

#[tokio::test]
async fn meta_is_written_once_and_enrollment_ids_are_unique() {
    for (store, scratch) in stores().await {
        assert!(store.init_meta(&[("k", "v1".into())]).await.unwrap());
        assert!(!store.init_meta(&[("k", "v2".into())]).await.unwrap());
        assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("v1"));

        let mut w = write("a1", "n1", EnrollMode::New, None, 1);
        w.enrollment = Some(EnrollmentRecord {
            enrollment_id: "e1".into(),
            agent_id: "a1".into(),
            credential: "token:x".into(),
            public_key: "pk".into(),
            created: true,
            created_at: 1,
        });
        store.enroll(&w).await.unwrap();
        let found = store.find_enrollment("e1").await.unwrap().unwrap();
        assert!(found.created && found.agent_id == "a1");
        let mut w2 = write("a2", "n2", EnrollMode::New, None, 2);
        w2.enrollment = w.enrollment.clone();
        assert!(matches!(
            store.enroll(&w2).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(
            store.get_agent("a2").await.unwrap().is_none(),
            "rolled back"
        );
        store.pool().close().await;
        scratch.remove().await;
    }
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = SqlStore::connect(&url, KEY).await.unwrap();
    sqlx::query("UPDATE muster_schema SET version = 999")
        .execute(store.pool())
        .await
        .unwrap();
    drop(store);
    let err = SqlStore::connect(&url, KEY).await.unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "{err}"
    );
}

async fn raw(store: &SqlStore, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(store.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_audit_chain_catches_edits_deletions_and_insertions() {
    for (store, scratch) in stores().await {
        for i in 0..5 {
            let mut t = token(&format!("t{i}"), Some(1), None);
            t.hash = format!("h{i}");
            store
                .create_token(&t, &audit(&format!("token.created.{i}")))
                .await
                .unwrap();
        }
        let ok = store.verify_audit().await.unwrap();
        assert_eq!((ok.count, ok.broken.clone()), (5, None));
        let listed = store
            .audit_entries(&AuditFilter {
                action: Some("token.created.3".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].seq, 4);

        // Changed: a field rewritten in place.
        raw(
            &store,
            "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3",
        )
        .await;
        let v = store.verify_audit().await.unwrap();
        assert_eq!(v.broken.as_ref().map(|b| b.0), Some(3), "{v:?}");
        assert!(v.broken.unwrap().1.contains("changed"));
        raw(&store, "UPDATE audit_log SET actor = 'test' WHERE seq = 3").await;
        assert_eq!(
            store.verify_audit().await.unwrap().broken,
            None,
            "restoring the field restores the chain"
        );

        // Deleted: a gap in the positions.
        raw(&store, "DELETE FROM audit_log WHERE seq = 2").await;
        let v = store.verify_audit().await.unwrap();
        assert_eq!(v.broken.as_ref().map(|b| b.0), Some(2), "{v:?}");
        assert!(v.broken.unwrap().1.contains("missing"));
        store.pool().close().await;
        scratch.remove().await;
    }
    for (store, scratch) in stores().await {
        for i in 0..3 {
            let mut t = token(&format!("t{i}"), Some(1), None);
            t.hash = format!("h{i}");
            store
                .create_token(&t, &audit("token.created"))
                .await
                .unwrap();
        }
        // Inserted: a forged entry at the end, with a made-up hash.
        raw(
            &store,
            "INSERT INTO audit_log (id, at, actor, action, target, source, outcome, details, seq, hash) \
             VALUES ('forged', 9, 'admin', 'agent.removed', 'agent:x', '1.2.3.4', 'ok', '{}', 4, 'deadbeef')",
        )
        .await;
        let v = store.verify_audit().await.unwrap();
        assert_eq!(v.broken.as_ref().map(|b| b.0), Some(4), "{v:?}");
        // And one outside the chain altogether.
        raw(&store, "DELETE FROM audit_log WHERE seq = 4").await;
        raw(
            &store,
            "INSERT INTO audit_log (id, at, actor, action, target, source, outcome, details) \
             VALUES ('stray', 9, 'admin', 'agent.removed', 'agent:x', '1.2.3.4', 'ok', '{}')",
        )
        .await;
        let v = store.verify_audit().await.unwrap();
        assert!(v.broken.unwrap().1.contains("outside the chain"));
        store.pool().close().await;
        scratch.remove().await;
    }
}

#[tokio::test]
async fn audit_pages_go_back_by_seq_with_their_filters() {
    for (store, scratch) in stores().await {
        for i in 0..7 {
            let mut t = token(&format!("t{i}"), Some(1), None);
            t.hash = format!("h{i}");
            let action = if i % 2 == 0 { "even" } else { "odd" };
            store.create_token(&t, &audit(action)).await.unwrap();
        }
        let seqs = |f: AuditFilter| {
            let store = &store;
            async move {
                let got = store.audit_entries(&f).await.unwrap();
                got.into_iter().map(|r| r.seq).collect::<Vec<_>>()
            }
        };
        let page = |before_seq: Option<i64>, limit: i64| AuditFilter {
            before_seq,
            limit,
            ..Default::default()
        };
        assert_eq!(seqs(page(None, 3)).await, [7, 6, 5]);
        assert_eq!(seqs(page(Some(5), 3)).await, [4, 3, 2]);
        assert_eq!(seqs(page(Some(2), 3)).await, [1]);
        assert_eq!(seqs(page(Some(1), 3)).await, Vec::<i64>::new());
        // The cursor narrows together with the other filters.
        let even = |before_seq| AuditFilter {
            action: Some("even".into()),
            ..page(before_seq, 2)
        };
        assert_eq!(seqs(even(None)).await, [7, 5]);
        assert_eq!(seqs(even(Some(5))).await, [3, 1]);
        store.pool().close().await;
        scratch.remove().await;
    }
}

/// Enrollments arriving together share transactions (group commit), and each still
/// gets the answer it would have got alone: a token's last uses go to exactly as
/// many as it allows, a name claimed twice goes to one, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enrollments_commit_in_groups_with_the_answers_of_single_ones() {
    for (store, scratch) in stores().await {
        let store = std::sync::Arc::new(store);
        store
            .create_token(&token("ten", Some(10), None), &audit("token.created"))
            .await
            .unwrap();
        store
            .create_token(&token("many", None, None), &audit("token.created"))
            .await
            .unwrap();
        let run = |writes: Vec<EnrollWrite>| {
            let store = store.clone();
            async move {
                let tasks: Vec<_> = writes
                    .into_iter()
                    .map(|w| {
                        let store = store.clone();
                        tokio::spawn(async move { store.enroll(&w).await })
                    })
                    .collect();
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.unwrap());
                }
                out
            }
        };

        // 30 machines, one token good for 10.
        let answers = run((0..30)
            .map(|i| {
                write(
                    &format!("t{i}"),
                    &format!("t{i}"),
                    EnrollMode::New,
                    Some("ten"),
                    100,
                )
            })
            .collect())
        .await;
        let ok = answers.iter().filter(|a| a.is_ok()).count();
        let exhausted = answers
            .iter()
            .filter(|a| matches!(a, Err(StoreError::TokenExhausted)))
            .count();
        assert_eq!((ok, exhausted), (10, 20), "{answers:?}");
        let t = store.find_token_by_hash("hash-ten").await.unwrap().unwrap();
        assert_eq!(t.uses, 10);

        // 120 machines, 60 names each claimed twice, plenty of uses.
        let answers = run((0..120)
            .map(|i| {
                let mut w = write(
                    &format!("n{i}"),
                    &format!("dup{}", i / 2),
                    EnrollMode::New,
                    Some("many"),
                    100,
                );
                w.enrollment = Some(EnrollmentRecord {
                    enrollment_id: format!("eid-{i:020}"),
                    agent_id: format!("n{i}"),
                    credential: "token:many".into(),
                    public_key: "pk".into(),
                    created: true,
                    created_at: 100,
                });
                w
            })
            .collect())
        .await;
        let ok: Vec<_> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        let taken = answers
            .iter()
            .filter(|a| matches!(a, Err(StoreError::NameInUse)))
            .count();
        assert_eq!((ok.len(), taken), (60, 60));
        let mut names: Vec<_> = ok.iter().map(|a| a.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 60);
        // Only the winners used the token or left an enrollment to retry.
        let t = store
            .find_token_by_hash("hash-many")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.uses, 60);
        for (i, answer) in answers.iter().enumerate() {
            let e = store
                .find_enrollment(&format!("eid-{i:020}"))
                .await
                .unwrap();
            match answer {
                Ok(agent) => assert_eq!(e.unwrap().agent_id, agent.id),
                Err(_) => assert!(e.is_none(), "a refused enrollment left {e:?}"),
            }
        }

        // 100 machines with nothing in common: the groups commit whole.
        let before = store.enroll_commits();
        let answers = run((0..100)
            .map(|i| {
                write(
                    &format!("u{i}"),
                    &format!("u{i}"),
                    EnrollMode::New,
                    Some("many"),
                    100,
                )
            })
            .collect())
        .await;
        assert!(answers.iter().all(|a| a.is_ok()), "{answers:?}");
        // Callers whose write an earlier group took still start a commit task, which
        // must find nothing to do (and not count, or run, an empty transaction).
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let commits = store.enroll_commits();
        assert!(commits.grouped - before.grouped > 0, "{commits:?}");
        assert!(
            commits.transactions - before.transactions < 100,
            "{commits:?}"
        );

        let listed = store.list_agents(false).await.unwrap();
        assert_eq!(listed.len(), 170);

        // Names already taken (u0..u9), mixed with free ones. With a used-up token
        // the taken ones are refused for the token, as they would be alone (the
        // token is checked before the name); with a good token they are answered
        // `NameInUse` and give their use back.
        store
            .create_token(&token("spent", Some(1), None), &audit("token.created"))
            .await
            .unwrap();
        store
            .enroll(&write("s0", "s0", EnrollMode::New, Some("spent"), 100))
            .await
            .unwrap();
        store
            .create_token(&token("more", None, None), &audit("token.created"))
            .await
            .unwrap();
        let answers = run((0..20)
            .map(|i| {
                if i % 2 == 0 {
                    write(
                        &format!("x{i}"),
                        &format!("u{i}"),
                        EnrollMode::New,
                        Some("spent"),
                        100,
                    )
                } else {
                    write(
                        &format!("x{i}"),
                        &format!("x{i}"),
                        EnrollMode::New,
                        Some("more"),
                        100,
                    )
                }
            })
            .collect())
        .await;
        for (i, a) in answers.iter().enumerate() {
            if i % 2 == 0 {
                assert!(matches!(a, Err(StoreError::TokenExhausted)), "{i}: {a:?}");
            } else {
                assert!(a.is_ok(), "{i}: {a:?}");
            }
        }
        let answers = run((0..20)
            .map(|i| {
                let name = if i % 2 == 0 {
                    format!("u{i}")
                } else {
                    format!("y{i}")
                };
                write(&format!("y{i}"), &name, EnrollMode::New, Some("more"), 100)
            })
            .collect())
        .await;
        for (i, a) in answers.iter().enumerate() {
            if i % 2 == 0 {
                assert!(matches!(a, Err(StoreError::NameInUse)), "{i}: {a:?}");
            } else {
                assert!(a.is_ok(), "{i}: {a:?}");
            }
        }
        let t = store
            .find_token_by_hash("hash-more")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.uses, 20, "taken names gave their uses back");

        let listed = store.list_agents(false).await.unwrap();
        assert_eq!(listed.len(), 191);
        let verdict = store.verify_audit().await.unwrap();
        assert_eq!((verdict.count, verdict.broken), (4 + 191, None));
        store.pool().close().await;
        scratch.remove().await;
    }
}

fn pending(id: &str, source: &str, now: i64, ttl: i64) -> PendingRecord {
    PendingRecord {
        id: id.into(),
        secret_hash: format!("secret-{id}"),
        kind: "enroll".into(),
        agent_id: None,
        name: id.into(),
        hostname: id.into(),
        source: source.into(),
        source_net: source.into(),
        facts: "{}".into(),
        labels: Default::default(),
        public_key: "pk".into(),
        status: "pending".into(),
        reason: None,
        created_at: now,
        expires_at: now + ttl,
        decided_at: None,
        decided_by: None,
    }
}

async fn rows(store: &SqlStore, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Queue `r` as an anonymous enrollment under `limits`.
async fn queue_limited(
    store: &SqlStore,
    limits: Option<QueueLimits>,
    r: PendingRecord,
) -> Result<PendingRecord> {
    store
        .queue_request(&r, limits, &audit("enroll.queued"))
        .await
}

#[tokio::test]
async fn the_queue_keeps_its_limits_and_sheds_expired_requests() {
    let limits = Some(QueueLimits {
        per_source: 2,
        total: 3,
    });
    for (store, scratch) in stores().await {
        let queue = |r: PendingRecord| queue_limited(&store, limits, r);
        let mut labelled = pending("a1", "10.0.0.1", 100, 1000);
        labelled.labels = [("site".to_owned(), "dock".to_owned())].into();
        assert_eq!(queue(labelled.clone()).await.unwrap(), labelled);
        queue(pending("a2", "10.0.0.1", 100, 1000)).await.unwrap();
        let full = queue(pending("a3", "10.0.0.1", 100, 1000)).await;
        assert!(
            matches!(full, Err(StoreError::QueueFull { per_source: true })),
            "{full:?}"
        );
        // A poll of a waiting request is answered whatever the limits.
        assert_eq!(
            queue(labelled.clone()).await.unwrap().labels,
            labelled.labels
        );
        queue(pending("b1", "10.0.0.2", 100, 1000)).await.unwrap();
        let full = queue(pending("c1", "10.0.0.3", 100, 1000)).await;
        assert!(
            matches!(full, Err(StoreError::QueueFull { per_source: false })),
            "{full:?}"
        );
        // Without limits (a renewal, only an agent can ask) nothing is counted.
        store
            .queue_request(
                &pending("r1", "10.0.0.1", 100, 1000),
                None,
                &audit("renew.queued"),
            )
            .await
            .unwrap();
        // Denied requests stop counting; once expired, the next request sweeps
        // waiting and denied ones away, and approved ones stay to be collected.
        store
            .decide_request(
                "a2",
                false,
                Some("no"),
                "admin",
                200,
                &audit("request.denied"),
            )
            .await
            .unwrap();
        store
            .decide_request("b1", true, None, "admin", 200, &audit("request.approved"))
            .await
            .unwrap();
        assert_eq!(rows(&store, "pending_requests").await, 4);
        queue(pending("d1", "10.0.0.1", 5000, 1000)).await.unwrap();
        let left: Vec<String> = sqlx::query_scalar("SELECT id FROM pending_requests ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(left, ["b1", "d1"]);
        // A refused request wrote nothing: one entry per queued request.
        assert_eq!(rows(&store, "audit_log").await, 5 + 2);
        store.pool().close().await;
        scratch.remove().await;
    }
}

#[tokio::test]
async fn approving_by_pattern_is_one_transaction_with_an_entry_each() {
    for (store, scratch) in stores().await {
        for (i, host) in ["web-1", "db-1", "web-2", "web-3"].iter().enumerate() {
            store
                .queue_request(
                    &pending(host, "10.0.0.1", 100 + i as i64, 1000),
                    None,
                    &audit("q"),
                )
                .await
                .unwrap();
        }
        let web = |r: &PendingRecord| r.hostname.starts_with("web-");
        // A fault on the last match (a trigger behind the store's back) rolls the
        // first ones back too.
        raw(
            &store,
            if store.backend() == "sqlite" {
                "CREATE TRIGGER fault BEFORE UPDATE ON pending_requests \
                 WHEN OLD.hostname = 'web-3' BEGIN SELECT RAISE(ABORT, 'fault'); END;"
            } else {
                "CREATE FUNCTION fault() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'fault'; \
                 END $$ LANGUAGE plpgsql; CREATE TRIGGER fault BEFORE UPDATE ON pending_requests \
                 FOR EACH ROW WHEN (OLD.hostname = 'web-3') EXECUTE FUNCTION fault();"
            },
        )
        .await;
        let mut template = audit("request.approved");
        template.target = "request".into();
        assert!(
            store
                .approve_matching(&web, "admin", 500, &template)
                .await
                .is_err()
        );
        assert_eq!(store.list_pending(500).await.unwrap().len(), 4);
        assert_eq!(rows(&store, "audit_log").await, 4);
        raw(
            &store,
            if store.backend() == "sqlite" {
                "DROP TRIGGER fault"
            } else {
                "DROP TRIGGER fault ON pending_requests"
            },
        )
        .await;

        let approved = store
            .approve_matching(&web, "admin", 500, &template)
            .await
            .unwrap();
        let ids: Vec<&str> = approved.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["web-1", "web-2", "web-3"]);
        assert!(
            approved
                .iter()
                .all(|r| r.status == "approved" && r.decided_by.as_deref() == Some("admin"))
        );
        let entries = store
            .audit_entries(&AuditFilter {
                action: Some("request.approved".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut targets: Vec<String> = entries.into_iter().map(|e| e.entry.target).collect();
        targets.sort();
        assert_eq!(targets, ["request:web-1", "request:web-2", "request:web-3"]);
        // Nothing left to match: nothing approved, nothing written.
        assert!(
            store
                .approve_matching(&web, "admin", 600, &template)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(rows(&store, "audit_log").await, 7);
        assert_eq!(store.verify_audit().await.unwrap().broken, None);
        store.pool().close().await;
        scratch.remove().await;
    }
}

#[tokio::test]
async fn revoking_a_revoked_token_writes_nothing() {
    for (store, scratch) in stores().await {
        store
            .create_token(&token("once", None, None), &audit("token.created"))
            .await
            .unwrap();
        let first = store
            .revoke_token("once", 10, &audit("token.revoked"))
            .await
            .unwrap();
        assert_eq!(first.revoked_at, Some(10));
        let again = store
            .revoke_token("once", 20, &audit("token.revoked"))
            .await
            .unwrap();
        assert_eq!(again.revoked_at, Some(10), "the first revocation stands");
        assert_eq!(rows(&store, "audit_log").await, 2);
        store.pool().close().await;
        scratch.remove().await;
    }
}

#[tokio::test]
async fn a_refused_request_still_sheds_expired_ones() {
    let limits = Some(QueueLimits {
        per_source: 1,
        total: 10,
    });
    for (store, scratch) in stores().await {
        let queue = |r: PendingRecord| queue_limited(&store, limits, r);
        // One that will have expired, from elsewhere; one that fills 10.0.0.1.
        queue(pending("old", "10.0.0.9", 100, 1000)).await.unwrap();
        queue(pending("f1", "10.0.0.1", 2000, 9000)).await.unwrap();
        let full = queue(pending("f2", "10.0.0.1", 5000, 9000)).await;
        assert!(
            matches!(full, Err(StoreError::QueueFull { per_source: true })),
            "{full:?}"
        );
        let left: Vec<String> = sqlx::query_scalar("SELECT id FROM pending_requests ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(
            left,
            ["f1"],
            "the refusal kept the sweep of the expired request"
        );
        store.pool().close().await;
        scratch.remove().await;
    }
}

fn session(id: &str, agent: &str, hub: &str, at: i64) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        agent_id: agent.into(),
        hub: hub.into(),
        address: format!("10.0.0.{}", at % 200),
        connected_at: at,
        disconnected_at: None,
        reason: None,
    }
}

#[tokio::test]
async fn session_history_is_newest_first_bounded_and_a_crashed_hub_closes_its_own() {
    for (store, scratch) in stores().await {
        let keep = |not_before| SessionRetention {
            per_agent: 3,
            not_before,
        };
        store
            .enroll(&write("a1", "web", EnrollMode::New, None, 1))
            .await
            .unwrap();
        for i in 0..5 {
            let at = 1000 + i * 10;
            let close = SessionWrite::Close {
                id: format!("s{i}"),
                at: at + 5,
                reason: "closed by the agent".into(),
            };
            let open = SessionWrite::Open(session(&format!("s{i}"), "a1", "hub-a", at));
            // One at a time, and the last two in one batch.
            if i < 3 {
                store.record_sessions(&[open], keep(0)).await.unwrap();
                store.record_sessions(&[close], keep(0)).await.unwrap();
            } else {
                store
                    .record_sessions(&[open, close], keep(0))
                    .await
                    .unwrap();
            }
        }
        let rows = store.agent_sessions("a1", 10).await.unwrap();
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["s4", "s3", "s2"], "newest three, newest first");
        assert_eq!(rows[0].disconnected_at, Some(1045));
        assert_eq!(rows[0].reason.as_deref(), Some("closed by the agent"));
        assert_eq!(rows[0].address, "10.0.0.40");
        // Closing twice keeps the first end.
        let again = SessionWrite::Close {
            id: "s4".into(),
            at: 9999,
            reason: "again".into(),
        };
        store.record_sessions(&[again], keep(0)).await.unwrap();
        assert_eq!(
            store.agent_sessions("a1", 1).await.unwrap()[0].disconnected_at,
            Some(1045)
        );

        // Open rows of two hubs; hub-a "crashed": only its rows are closed, at the
        // agent's last heartbeat.
        store
            .record_sessions(
                &[SessionWrite::Open(session("open-a", "a1", "hub-a", 2000))],
                keep(0),
            )
            .await
            .unwrap();
        store
            .enroll(&write("a2", "db", EnrollMode::New, None, 1))
            .await
            .unwrap();
        store
            .record_sessions(
                &[SessionWrite::Open(session("open-b", "a2", "hub-b", 2000))],
                keep(0),
            )
            .await
            .unwrap();
        store
            .record_last_seen(&[("a1".to_owned(), 2500)])
            .await
            .unwrap();
        assert_eq!(
            store
                .close_open_sessions("hub-a", "hub stopped")
                .await
                .unwrap(),
            1
        );
        let a = &store.agent_sessions("a1", 1).await.unwrap()[0];
        assert_eq!(
            (a.id.as_str(), a.disconnected_at, a.reason.as_deref()),
            ("open-a", Some(2500), Some("hub stopped"))
        );
        assert_eq!(
            store.agent_sessions("a2", 1).await.unwrap()[0].disconnected_at,
            None
        );

        // Age: an insert drops this agent's old rows; a prune drops everyone's.
        store
            .record_sessions(
                &[SessionWrite::Open(session("late", "a1", "hub-a", 5000))],
                keep(2001),
            )
            .await
            .unwrap();
        let ids: Vec<String> = store
            .agent_sessions("a1", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["late"]);
        assert_eq!(store.prune_sessions(2001).await.unwrap(), 1);
        assert!(store.agent_sessions("a2", 10).await.unwrap().is_empty());
        store.pool().close().await;
        scratch.remove().await;
    }
}

#[tokio::test]
async fn agents_are_counted_by_stored_state_with_waiting_requests() {
    for (store, scratch) in stores().await {
        assert_eq!(store.agent_counts(0).await.unwrap(), AgentCounts::default());
        for (id, name) in [
            ("a1", "one"),
            ("a2", "two"),
            ("a3", "three"),
            ("a4", "four"),
        ] {
            store
                .enroll(&write(id, name, EnrollMode::New, None, 1))
                .await
                .unwrap();
        }
        store
            .end_agent("a2", AgentEnd::Revoke, 2, &audit("agent.revoked"))
            .await
            .unwrap();
        store
            .end_agent("a3", AgentEnd::Remove, 2, &audit("agent.removed"))
            .await
            .unwrap();
        let event = CloneEvent {
            agent_id: "a4".into(),
            at: 3,
            source: "10.0.0.1".into(),
            presented: 1,
            expected: 2,
            via: "session".into(),
        };
        store
            .mark_cloned(&event, &audit("agent.cloned"))
            .await
            .unwrap();
        store
            .queue_request(&pending("p1", "10.0.0.1", 10, 100), None, &audit("q"))
            .await
            .unwrap();
        store
            .queue_request(&pending("p2", "10.0.0.2", 10, 5), None, &audit("q"))
            .await
            .unwrap();
        assert_eq!(
            store.agent_counts(50).await.unwrap(),
            AgentCounts {
                active: 1,
                cloned: 1,
                revoked: 1,
                pending: 1,
            }
        );
        store.pool().close().await;
        scratch.remove().await;
    }
}

fn lease(id: &str, at: i64, online: i64) -> HubLease {
    HubLease {
        id: id.into(),
        address: format!("https://{id}:8443"),
        version: "0.1.0".into(),
        started_at: 1,
        renewed_at: at,
        expires_at: at + 10_000,
        online,
        degraded: 0,
    }
}

fn connect(agent: &str, hub: &str, session: &str, at: i64) -> PresenceWrite {
    PresenceWrite::Connected {
        agent_id: agent.into(),
        hub: hub.into(),
        session: session.into(),
        health: muster_proto::AgentHealth::Ok,
        problems: vec![],
        at,
    }
}

#[tokio::test]
async fn hub_leases_renew_stop_and_are_forgotten() {
    for (s, scratch) in stores().await {
        s.renew_hub_lease(&lease("b", 1_000, 3)).await.unwrap();
        s.renew_hub_lease(&lease("a", 1_000, 0)).await.unwrap();
        s.renew_hub_lease(&lease("b", 2_000, 5)).await.unwrap();
        let hubs = s.list_hubs().await.unwrap();
        assert_eq!(hubs.len(), 2);
        assert_eq!(hubs[0].lease.id, "a", "by address");
        assert_eq!(hubs[1].lease, lease("b", 2_000, 5));
        assert!(hubs[1].is_live(11_999) && !hubs[1].is_live(12_000));

        // A graceful stop: not live from then on, its sessions disconnected.
        s.record_presence(&[connect("x", "b", "s1", 2_100)], 2_100)
            .await
            .unwrap();
        s.release_hub_lease("b", 3_000).await.unwrap();
        let b = s.list_hubs().await.unwrap().remove(1);
        assert_eq!(b.stopped_at, Some(3_000));
        assert!(!b.is_live(3_001));
        let rows = s.presence_after((0, ""), 10).await.unwrap();
        assert!(!rows[0].connected);
        // Renewing again (it restarted) clears the stop.
        s.renew_hub_lease(&lease("b", 4_000, 0)).await.unwrap();
        assert_eq!(s.list_hubs().await.unwrap()[1].stopped_at, None);

        assert_eq!(
            s.forget_hubs(12_000).await.unwrap(),
            1,
            "a expired at 11,000"
        );
        assert_eq!(s.list_hubs().await.unwrap().len(), 1);
        scratch.remove().await;
    }
}

#[tokio::test]
async fn presence_follows_the_newest_session_whatever_order_writes_land_in() {
    for (s, scratch) in stores().await {
        use muster_proto::AgentHealth;
        s.record_presence(
            &[
                connect("x", "a", "s1", 100),
                PresenceWrite::Health {
                    agent_id: "x".into(),
                    session: "s1".into(),
                    health: AgentHealth::Degraded,
                    problems: vec!["disk full".into()],
                    at: 110,
                },
            ],
            110,
        )
        .await
        .unwrap();
        let row = &s.presence_after((0, ""), 10).await.unwrap()[0];
        assert_eq!((row.hub.as_str(), row.connected), ("a", true));
        assert_eq!(row.health, AgentHealth::Degraded);
        assert_eq!(row.problems, vec!["disk full".to_owned()]);

        // The agent moved to hub b; hub a's late writes for the old session
        // (a connect flushed late, then its close) change nothing.
        // Rows are stamped when written (what followers read by), not when the
        // session opened.
        s.record_presence(&[connect("x", "b", "s2", 200)], 250)
            .await
            .unwrap();
        s.record_presence(
            &[
                connect("x", "a", "s1", 150),
                PresenceWrite::Disconnected {
                    agent_id: "x".into(),
                    session: "s1".into(),
                    at: 210,
                },
            ],
            220,
        )
        .await
        .unwrap();
        let row = &s.presence_after((0, ""), 10).await.unwrap()[0];
        assert_eq!((row.hub.as_str(), row.session.as_str()), ("b", "s2"));
        assert!(row.connected);
        assert_eq!((row.health, row.changed_at), (AgentHealth::Ok, 250));

        // Its own close does end it.
        s.record_presence(
            &[PresenceWrite::Disconnected {
                agent_id: "x".into(),
                session: "s2".into(),
                at: 300,
            }],
            300,
        )
        .await
        .unwrap();
        assert!(!s.presence_after((0, ""), 10).await.unwrap()[0].connected);
        scratch.remove().await;
    }
}

#[tokio::test]
async fn presence_is_read_in_pages_by_change_and_a_dead_hubs_rows_end() {
    for (s, scratch) in stores().await {
        let writes: Vec<PresenceWrite> = (0..5)
            .map(|i| {
                connect(
                    &format!("agent-{i}"),
                    if i < 3 { "dead" } else { "live" },
                    &format!("s{i}"),
                    1_000,
                )
            })
            .collect();
        s.record_presence(&writes, 1000).await.unwrap();
        // Five rows at the same instant, read two at a time: each once, in order.
        let mut seen = Vec::new();
        let mut after = (0i64, String::new());
        loop {
            let page = s.presence_after((after.0, &after.1), 2).await.unwrap();
            if page.is_empty() {
                break;
            }
            let last = page.last().unwrap();
            after = (last.changed_at, last.agent_id.clone());
            seen.extend(page.into_iter().map(|r| r.agent_id));
        }
        assert_eq!(
            seen,
            (0..5).map(|i| format!("agent-{i}")).collect::<Vec<_>>()
        );

        assert_eq!(s.end_hub_presence("dead", 2_000).await.unwrap(), 3);
        assert_eq!(s.end_hub_presence("dead", 2_001).await.unwrap(), 0);
        let changed = s.presence_after((1_999, ""), 10).await.unwrap();
        assert_eq!(changed.len(), 3);
        assert!(
            changed
                .iter()
                .all(|r| !r.connected && r.changed_at == 2_000)
        );
        // An agent of the dead hub that reconnected elsewhere before its row was
        // ended, written after: the row says connected there (ending a dead hub's
        // rows does not make them newer than a session that opened meanwhile).
        s.record_presence(&[connect("agent-0", "live", "s9", 1_500)], 2_100)
            .await
            .unwrap();
        let back = s.presence_after((2_050, ""), 10).await.unwrap();
        assert_eq!(back.len(), 1);
        assert!(back[0].connected && back[0].hub == "live");
        scratch.remove().await;
    }
}

// --- Single sign-on (SPEC §14) ---

const ISSUER: &str = "https://idp.example";

/// How many audit entries carry `action`.
async fn audited(store: &SqlStore, action: &str) -> usize {
    store
        .audit_entries(&AuditFilter {
            action: Some(action.into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

/// The client secret's ciphertext as `hub_meta` holds it.
async fn stored_secret(store: &SqlStore) -> Option<String> {
    sqlx::query_scalar("SELECT value FROM hub_meta WHERE key = $1")
        .bind(SSO_CLIENT_SECRET_KEY)
        .fetch_optional(store.pool())
        .await
        .unwrap()
}

fn settings(issuer: &str, secret: Option<&str>, at: i64) -> SsoSettingsRecord {
    SsoSettingsRecord {
        issuer: issuer.into(),
        client_id: format!("client-{at}"),
        client_secret: secret.map(str::to_owned),
        display_name: Some("Example IdP".into()),
        groups_claim: Some("roles".into()),
        scopes: vec!["openid".into(), "email".into(), "groups".into()],
        updated_at: at,
    }
}

fn sso_group(id: &str, name: &str, role: &str, at: i64) -> SsoGroupRecord {
    SsoGroupRecord {
        id: id.into(),
        name: name.into(),
        role: role.into(),
        created_at: at,
    }
}

/// A user as a first single sign-on makes one: no password, no granted role.
fn sso_user(id: &str, name: &str, subject: &str, now: i64) -> UserRecord {
    UserRecord {
        granted_role: None,
        display_name: Some(format!("{name} (idp)")),
        sso_issuer: Some(ISSUER.into()),
        sso_subject: Some(subject.into()),
        groups: vec!["ops".into()],
        last_login_at: Some(now),
        ..UserRecord::new(id.into(), name.into(), "member".into(), String::new(), now)
    }
}

#[tokio::test]
async fn sso_settings_are_one_row_with_the_secret_in_hub_meta_and_clear_together() {
    for (store, scratch) in stores().await {
        assert_eq!(store.sso_settings().await.unwrap(), None);
        let meta_before = rows(&store, "hub_meta").await;

        let first = settings(ISSUER, Some("ciphertext-1"), 10);
        store
            .set_sso_settings(Some(&first), &audit("sso.set"))
            .await
            .unwrap();
        assert_eq!(store.sso_settings().await.unwrap().as_ref(), Some(&first));
        assert_eq!(stored_secret(&store).await.as_deref(), Some("ciphertext-1"));
        assert_eq!(audited(&store, "sso.set").await, 1);

        // Set again: replaced, still one row, the new secret.
        let second = SsoSettingsRecord {
            display_name: None,
            groups_claim: None,
            scopes: vec![],
            ..settings("https://other.example", Some("ciphertext-2"), 20)
        };
        store
            .set_sso_settings(Some(&second), &audit("sso.set"))
            .await
            .unwrap();
        assert_eq!(store.sso_settings().await.unwrap().as_ref(), Some(&second));
        assert_eq!(rows(&store, "sso_settings").await, 1);
        assert_eq!(stored_secret(&store).await.as_deref(), Some("ciphertext-2"));

        // Set without a secret: the old one goes.
        let no_secret = SsoSettingsRecord {
            client_secret: None,
            ..settings(ISSUER, None, 30)
        };
        store
            .set_sso_settings(Some(&no_secret), &audit("sso.set"))
            .await
            .unwrap();
        assert_eq!(
            store.sso_settings().await.unwrap().as_ref(),
            Some(&no_secret)
        );
        assert_eq!(stored_secret(&store).await, None);
        assert_eq!(rows(&store, "sso_settings").await, 1);

        // Cleared: the row and the secret, nothing else in hub_meta.
        store
            .set_sso_settings(Some(&first), &audit("sso.set"))
            .await
            .unwrap();
        assert_eq!(rows(&store, "hub_meta").await, meta_before + 1);
        store
            .set_sso_settings(None, &audit("sso.cleared"))
            .await
            .unwrap();
        assert_eq!(store.sso_settings().await.unwrap(), None);
        assert_eq!(rows(&store, "sso_settings").await, 0);
        assert_eq!(stored_secret(&store).await, None);
        assert_eq!(rows(&store, "hub_meta").await, meta_before);

        // Every write appended its entry, and the chain holds.
        assert_eq!(audited(&store, "sso.set").await, 4);
        assert_eq!(audited(&store, "sso.cleared").await, 1);
        let v = store.verify_audit().await.unwrap();
        assert_eq!((v.count, v.broken), (5, None));
        store.pool().close().await;
        scratch.remove().await;
    }
}

#[tokio::test]
async fn sso_groups_list_by_name_refuse_a_taken_id_and_are_removed_once() {
    for (store, scratch) in stores().await {
        assert!(store.list_sso_groups().await.unwrap().is_empty());
        let g3 = sso_group("g3", "Alpha", "admin", 1);
        let g1 = sso_group("g1", "Beta", "member", 2);
        let g2 = sso_group("g2", "Alpha", "member", 3);
        for g in [&g3, &g1, &g2] {
            store
                .create_sso_group(g, &audit("sso.group.added"))
                .await
                .unwrap();
        }
        assert_eq!(
            store.list_sso_groups().await.unwrap(),
            [g2.clone(), g3.clone(), g1.clone()],
            "by name, then id"
        );

        let dup = store
            .create_sso_group(
                &sso_group("g1", "Gamma", "admin", 4),
                &audit("sso.group.added"),
            )
            .await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        assert_eq!(store.list_sso_groups().await.unwrap().len(), 3);
        assert_eq!(
            audited(&store, "sso.group.added").await,
            3,
            "a refused group writes no entry"
        );

        let removed = store
            .remove_sso_group("g3", &audit("sso.group.removed"))
            .await
            .unwrap();
        assert_eq!(removed, g3);
        assert_eq!(store.list_sso_groups().await.unwrap(), [g2, g1]);
        let again = store
            .remove_sso_group("g3", &audit("sso.group.removed"))
            .await;
        assert!(matches!(again, Err(StoreError::NotFound)), "{again:?}");
        assert_eq!(audited(&store, "sso.group.removed").await, 1);
        assert_eq!(store.verify_audit().await.unwrap().broken, None);
        store.pool().close().await;
        scratch.remove().await;
    }
}

#[tokio::test]
async fn a_first_sso_login_inserts_the_user_and_its_session_together_or_neither() {
    for (store, scratch) in stores().await {
        let alice = sso_user("u-alice", "alice", "sub-a", 100);
        store
            .record_sso_login(&alice, true, "s-alice", 1_000, &audit("user.login"))
            .await
            .unwrap();
        assert_eq!(
            store.find_user_session("s-alice", 200).await.unwrap(),
            Some(alice.clone())
        );
        assert_eq!(
            store.find_user_session("s-alice", 1_000).await.unwrap(),
            None,
            "expired"
        );
        assert_eq!(
            store.find_user_by_subject(ISSUER, "sub-a").await.unwrap(),
            Some(alice.clone())
        );
        assert_eq!(
            store
                .find_user_by_subject("https://other.example", "sub-a")
                .await
                .unwrap(),
            None,
            "a subject is only unique at its provider"
        );
        assert_eq!(store.find_user("alice").await.unwrap(), Some(alice.clone()));

        // Another new user with the name taken: refused, and no session either.
        let twin = sso_user("u-twin", "alice", "sub-twin", 110);
        let err = store
            .record_sso_login(&twin, true, "s-twin", 1_000, &audit("user.login"))
            .await;
        assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
        assert_eq!(store.find_user_session("s-twin", 200).await.unwrap(), None);
        assert_eq!(
            store
                .find_user_by_subject(ISSUER, "sub-twin")
                .await
                .unwrap(),
            None
        );

        // Another new user with the identity taken: refused the same way.
        let clone = sso_user("u-clone", "clone", "sub-a", 120);
        let err = store
            .record_sso_login(&clone, true, "s-clone", 1_000, &audit("user.login"))
            .await;
        assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
        assert_eq!(store.find_user_session("s-clone", 200).await.unwrap(), None);
        assert_eq!(store.find_user("clone").await.unwrap(), None);

        // The same subject at another provider is another identity.
        let elsewhere = UserRecord {
            sso_issuer: Some("https://other.example".into()),
            ..sso_user("u-else", "elsewhere", "sub-a", 130)
        };
        store
            .record_sso_login(&elsewhere, true, "s-else", 1_000, &audit("user.login"))
            .await
            .unwrap();
        assert_eq!(
            store
                .find_user_by_subject("https://other.example", "sub-a")
                .await
                .unwrap(),
            Some(elsewhere.clone())
        );

        assert_eq!(
            audited(&store, "user.login").await,
            2,
            "refusals write none"
        );
        assert_eq!(rows(&store, "user_sessions").await, 2);
        assert_eq!(rows(&store, "users").await, 2);
        assert_eq!(store.verify_audit().await.unwrap().broken, None);
        store.pool().close().await;
        scratch.remove().await;
    }
}

#[tokio::test]
async fn an_sso_login_updates_a_user_only_while_enabled_and_linked_to_that_identity_or_none() {
    for (store, scratch) in stores().await {
        let bob = UserRecord::new(
            "u-bob".into(),
            "bob".into(),
            "admin".into(),
            "phc".into(),
            5,
        );
        store
            .create_user(&bob, &audit("user.created"))
            .await
            .unwrap();
        let carol = UserRecord::new(
            "u-carol".into(),
            "carol".into(),
            "member".into(),
            "phc".into(),
            6,
        );
        store
            .create_user(&carol, &audit("user.created"))
            .await
            .unwrap();

        // The first login links the unlinked user and records what it brought; the
        // granted role, password and creation stay.
        let login = |now: i64, subject: &str, role: &str, groups: &[&str]| UserRecord {
            role: role.into(),
            display_name: Some(format!("Bob at {now}")),
            sso_issuer: Some(ISSUER.into()),
            sso_subject: Some(subject.into()),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            last_login_at: Some(now),
            ..bob.clone()
        };
        let first = login(50, "sub-b", "member", &["ops", "dev"]);
        store
            .record_sso_login(&first, false, "s-b1", 1_000, &audit("user.login"))
            .await
            .unwrap();
        let stored = store.find_user("bob").await.unwrap().unwrap();
        assert_eq!(stored, first);
        assert_eq!(
            (
                stored.granted_role.as_deref(),
                stored.password_hash.as_str(),
                stored.created_at
            ),
            (Some("admin"), "phc", 5)
        );
        assert_eq!(
            store.find_user_session("s-b1", 60).await.unwrap(),
            Some(first.clone())
        );
        assert_eq!(
            store.find_user_by_subject(ISSUER, "sub-b").await.unwrap(),
            Some(first.clone())
        );

        // A later login through the same identity updates again.
        let second = login(70, "sub-b", "admin", &[]);
        store
            .record_sso_login(&second, false, "s-b2", 1_000, &audit("user.login"))
            .await
            .unwrap();
        assert_eq!(store.find_user("bob").await.unwrap(), Some(second.clone()));
        assert_eq!(
            store.find_user_session("s-b2", 80).await.unwrap(),
            Some(second.clone())
        );

        // Linked to another identity meanwhile: nothing written.
        let other = login(75, "sub-x", "admin", &["ops"]);
        let err = store
            .record_sso_login(&other, false, "s-b3", 1_000, &audit("user.login"))
            .await;
        assert!(matches!(err, Err(StoreError::NotFound)), "{err:?}");
        assert_eq!(store.find_user_session("s-b3", 80).await.unwrap(), None);
        assert_eq!(store.find_user("bob").await.unwrap(), Some(second.clone()));

        // Another user cannot take an identity that is linked already.
        let taken = UserRecord {
            sso_issuer: Some(ISSUER.into()),
            sso_subject: Some("sub-b".into()),
            last_login_at: Some(76),
            ..carol.clone()
        };
        let err = store
            .record_sso_login(&taken, false, "s-c1", 1_000, &audit("user.login"))
            .await;
        assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
        assert_eq!(store.find_user_session("s-c1", 80).await.unwrap(), None);
        assert_eq!(store.find_user("carol").await.unwrap(), Some(carol.clone()));

        // Disabled meanwhile: nothing written; enabled again, it signs in.
        store
            .change_user("bob", UserChange::Disable, 78, &audit("user.disabled"))
            .await
            .unwrap();
        let err = store
            .record_sso_login(
                &login(79, "sub-b", "member", &["ops"]),
                false,
                "s-b4",
                1_000,
                &audit("user.login"),
            )
            .await;
        assert!(matches!(err, Err(StoreError::NotFound)), "{err:?}");
        assert_eq!(store.find_user_session("s-b4", 80).await.unwrap(), None);
        let disabled = store.find_user("bob").await.unwrap().unwrap();
        assert_eq!(
            disabled,
            UserRecord {
                disabled_at: Some(78),
                ..second.clone()
            }
        );
        store
            .change_user("bob", UserChange::Enable, 80, &audit("user.enabled"))
            .await
            .unwrap();
        let third = login(81, "sub-b", "member", &["ops"]);
        store
            .record_sso_login(&third, false, "s-b5", 1_000, &audit("user.login"))
            .await
            .unwrap();
        assert_eq!(store.find_user("bob").await.unwrap(), Some(third.clone()));

        // Removed meanwhile: not brought back, no session.
        store
            .change_user("bob", UserChange::Remove, 82, &audit("user.removed"))
            .await
            .unwrap();
        let err = store
            .record_sso_login(
                &login(83, "sub-b", "member", &["ops"]),
                false,
                "s-b6",
                1_000,
                &audit("user.login"),
            )
            .await;
        assert!(matches!(err, Err(StoreError::NotFound)), "{err:?}");
        assert_eq!(store.find_user_session("s-b6", 84).await.unwrap(), None);
        assert_eq!(store.find_user("bob").await.unwrap(), None);
        assert_eq!(
            store.find_user_by_subject(ISSUER, "sub-b").await.unwrap(),
            None
        );

        // Its identity is free again: carol may take it now.
        store
            .record_sso_login(&taken, false, "s-c2", 1_000, &audit("user.login"))
            .await
            .unwrap();
        assert_eq!(
            store.find_user_by_subject(ISSUER, "sub-b").await.unwrap(),
            Some(taken.clone())
        );

        assert_eq!(
            audited(&store, "user.login").await,
            4,
            "refusals write none"
        );
        assert_eq!(
            rows(&store, "user_sessions").await,
            1,
            "bob's went with him"
        );
        assert_eq!(store.verify_audit().await.unwrap().broken, None);
        store.pool().close().await;
        scratch.remove().await;
    }
}

#[tokio::test]
async fn users_made_by_name_keep_their_sso_fields_and_many_may_have_no_identity() {
    for (store, scratch) in stores().await {
        let plain = UserRecord::new("u1".into(), "zed".into(), "admin".into(), "phc".into(), 5);
        // Single sign-on only: no password.
        let no_password =
            UserRecord::new("u2".into(), "amy".into(), "member".into(), String::new(), 6);
        // Every new field set.
        let full = UserRecord {
            granted_role: None,
            display_name: Some("Max M".into()),
            sso_issuer: Some(ISSUER.into()),
            sso_subject: Some("sub-m".into()),
            groups: vec!["ops".into(), "dev".into()],
            last_login_at: Some(9),
            ..UserRecord::new("u3".into(), "max".into(), "member".into(), String::new(), 7)
        };
        assert_eq!(plain.granted_role.as_deref(), Some("admin"));
        for u in [&plain, &no_password, &full] {
            store.create_user(u, &audit("user.created")).await.unwrap();
        }
        assert_eq!(
            store.list_users().await.unwrap(),
            [no_password.clone(), full.clone(), plain.clone()],
            "by name, every field as written"
        );
        assert_eq!(store.find_user("zed").await.unwrap(), Some(plain));

        // Another user with the identity taken: refused.
        let twin = UserRecord {
            sso_issuer: Some(ISSUER.into()),
            sso_subject: Some("sub-m".into()),
            ..UserRecord::new(
                "u4".into(),
                "twin".into(),
                "member".into(),
                String::new(),
                8,
            )
        };
        let err = store.create_user(&twin, &audit("user.created")).await;
        assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
        // A name taken: refused.
        let err = store
            .create_user(
                &UserRecord::new("u5".into(), "amy".into(), "member".into(), "x".into(), 8),
                &audit("user.created"),
            )
            .await;
        assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
        assert_eq!(store.list_users().await.unwrap().len(), 3);
        assert_eq!(audited(&store, "user.created").await, 3);
        store.pool().close().await;
        scratch.remove().await;
    }
}

fn integration(name: &str, secret: Option<&str>, at: i64) -> IntegrationRecord {
    IntegrationRecord {
        name: name.into(),
        kind: "http".into(),
        url: format!("https://{name}.example.com/api"),
        auth: if secret.is_some() { "bearer" } else { "none" }.into(),
        header_name: None,
        secret: secret.map(str::to_owned),
        status: "untested".into(),
        last_error: None,
        last_tested_at: None,
        created_at: at,
        updated_at: at,
    }
}

#[tokio::test]
async fn integrations_refuse_a_taken_name_record_tests_and_are_removed_once() {
    for (store, scratch) in stores().await {
        assert!(store.list_integrations().await.unwrap().is_empty());
        let b = integration("beta", Some("v1:ciphertext"), 1);
        let a = integration("alpha", None, 2);
        for i in [&b, &a] {
            store
                .create_integration(i, &audit("integration.created"))
                .await
                .unwrap();
        }
        assert_eq!(
            store.list_integrations().await.unwrap(),
            [a.clone(), b.clone()],
            "by name"
        );
        assert_eq!(
            store.get_integration("beta").await.unwrap().as_ref(),
            Some(&b)
        );
        assert_eq!(store.get_integration("gamma").await.unwrap(), None);

        let dup = store
            .create_integration(&integration("beta", None, 3), &audit("integration.created"))
            .await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        assert_eq!(
            store.get_integration("beta").await.unwrap().as_ref(),
            Some(&b),
            "the first one stays as it was"
        );
        assert_eq!(
            audited(&store, "integration.created").await,
            2,
            "a refused create writes no entry"
        );

        let failed = IntegrationTest {
            status: "error".into(),
            last_error: Some("HTTP 401".into()),
            tested_at: 10,
        };
        let tested = store
            .record_integration_test("beta", &failed, &audit("integration.tested"))
            .await
            .unwrap();
        assert_eq!(
            (
                tested.status.as_str(),
                tested.last_error.as_deref(),
                tested.last_tested_at,
                tested.updated_at
            ),
            ("error", Some("HTTP 401"), Some(10), 10)
        );
        assert_eq!(tested.secret, b.secret, "a test leaves the secret alone");
        let connected = IntegrationTest {
            status: "connected".into(),
            last_error: None,
            tested_at: 11,
        };
        let tested = store
            .record_integration_test("beta", &connected, &audit("integration.tested"))
            .await
            .unwrap();
        assert_eq!(
            (tested.status.as_str(), tested.last_error.as_deref()),
            ("connected", None)
        );
        assert_eq!(store.get_integration("beta").await.unwrap(), Some(tested));
        let missing = store
            .record_integration_test("gamma", &connected, &audit("integration.tested"))
            .await;
        assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");

        let removed = store
            .remove_integration("alpha", &audit("integration.removed"))
            .await
            .unwrap();
        assert_eq!(removed, a);
        let again = store
            .remove_integration("alpha", &audit("integration.removed"))
            .await;
        assert!(matches!(again, Err(StoreError::NotFound)), "{again:?}");
        assert_eq!(store.list_integrations().await.unwrap().len(), 1);

        assert_eq!(audited(&store, "integration.tested").await, 2);
        assert_eq!(audited(&store, "integration.removed").await, 1);
        let v = store.verify_audit().await.unwrap();
        assert_eq!((v.count, v.broken), (5, None));
        store.pool().close().await;
        scratch.remove().await;
    }
}

/// Lookups by many ids run in chunks (one `IN` list per 500): every id across the
/// chunk edges is found once, and an unknown one is skipped, not an error.
#[tokio::test]
async fn lookups_by_many_ids_find_each_across_chunks() {
    for (store, scratch) in stores().await {
        let mut ids: Vec<String> = Vec::new();
        for i in 0..1001 {
            let id = format!("agent-{i:04}");
            store
                .enroll(&write(
                    &id,
                    &format!("host-{i:04}"),
                    EnrollMode::New,
                    None,
                    i,
                ))
                .await
                .unwrap();
            ids.push(id);
        }
        ids.insert(500, "no-such-agent".to_owned());
        let mut found: Vec<String> = store
            .get_agents(&ids)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        found.sort();
        assert_eq!(found.len(), 1001);
        assert_eq!(found.first().map(String::as_str), Some("agent-0000"));
        assert_eq!(found.last().map(String::as_str), Some("agent-1000"));
        found.dedup();
        assert_eq!(found.len(), 1001);
        let names = store.agent_names(&ids).await.unwrap();
        assert_eq!(names.len(), 1001);
        assert!(names.contains(&("agent-0777".to_owned(), "host-0777".to_owned())));
        let (catalogs, decisions) = store.agents_packs(&ids).await.unwrap();
        assert!(
            catalogs.is_empty() && decisions.is_empty(),
            "no agent said hello"
        );
        scratch.remove().await;
    }
}
