//! Access control (SPEC §11): API keys and the role every route needs, proven by
//! walking the whole route table with each kind of caller.

use std::time::Duration;

use muster_client::{HubClient, Trust};
use muster_hub::Role;
use muster_proto::CreateKeyRequest;
use muster_testkit::{TestAgent, TestHub};

use crate::{code, each_backend};

fn key(name: &str, role: &str) -> CreateKeyRequest {
    CreateKeyRequest {
        name: name.to_owned(),
        role: role.parse().unwrap(),
        ..Default::default()
    }
}

fn client(hub: &TestHub, bearer: Option<&str>) -> HubClient {
    let c = HubClient::new(&hub.url, Trust::Hash(hub.ca_hash)).unwrap();
    match bearer {
        Some(b) => c.with_bearer(b.to_owned()),
        None => c,
    }
}

#[tokio::test]
async fn every_route_admits_exactly_the_role_it_declares() {
    let hub = TestHub::start(&muster_testkit::Backend::Sqlite).await;
    let member = hub
        .admin()
        .create_key(&key("viewer", "member"))
        .await
        .unwrap()
        .key;
    let agent = TestAgent::new("walker");
    let t = hub.default_token().await;
    muster_agent::enroll(&hub.enroll_options(&agent, Some(&t), None), &agent.dir)
        .await
        .unwrap();
    let agent_key = agent.dir.load().unwrap().unwrap().config.agent_key;
    // The agent calls as a real agent does: its key and its client certificate.
    // (Its last route, unenroll, revokes it: later routes expect it refused anyway.)
    let as_agent = agent.client();
    let callers: [(&str, Option<&str>, Option<Role>); 4] = [
        ("no key", None, None),
        ("agent key", Some(&agent_key), Some(Role::Agent)),
        ("member key", Some(&member), Some(Role::Member)),
        ("admin key", Some(&hub.admin_key), Some(Role::Admin)),
    ];
    let routes = muster_hub::route_table();
    assert!(routes.len() > 20);
    for (access, method, path) in routes {
        let path = path.replace("{id}", "00000000-0000-4000-8000-000000000000");
        for (who, bearer, role) in &callers {
            let caller = if *role == Some(Role::Agent) {
                as_agent.clone()
            } else {
                client(&hub, *bearer)
            };
            let status = caller.status_of(method.as_str(), &path).await.unwrap();
            let allowed = match (access, role) {
                (None, _) => true,
                (Some(Role::Agent), r) => *r == Some(Role::Agent),
                (Some(Role::Member), r) => matches!(r, Some(Role::Member | Role::Admin)),
                (Some(Role::Admin), r) => *r == Some(Role::Admin),
                (Some(Role::Hub), _) => false,
            };
            let denied = status == 401 || status == 403;
            assert_eq!(
                !denied, allowed,
                "{method} {path} with {who}: HTTP {status} (route needs {access:?})"
            );
        }
    }
    hub.stop().await;
}

#[tokio::test]
async fn api_keys_rotate_revoke_expire_and_scope_members() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, |o| o.heartbeat_interval = Duration::from_secs(1)).await;
        let admin = hub.admin();
        for name in ["web-1", "web-2", "db-1"] {
            let agent = TestAgent::new(name);
            let t = hub.default_token().await;
            muster_agent::enroll(&hub.enroll_options(&agent, Some(&t), None), &agent.dir)
                .await
                .unwrap();
        }
        let scoped = admin
            .create_key(&CreateKeyRequest {
                agents: Some("web-*".into()),
                ..key("web-team", "member")
            })
            .await
            .unwrap();
        assert!(scoped.key.starts_with("mak_"));
        let web = client(&hub, Some(&scoped.key));
        let names: Vec<String> = web
            .list_agents()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, vec!["web-1", "web-2"]);
        assert_eq!(
            code(web.agent("db-1").await),
            "not_found",
            "outside the scope looks absent"
        );
        assert_eq!(code(web.revoke_agent("web-1").await), "forbidden");
        assert_eq!(code(web.list_tokens().await), "forbidden");

        // Rotation: the old value is dead at once, the new one works.
        let rotated = admin.rotate_key(&scoped.info.id).await.unwrap();
        assert_eq!(code(web.list_agents().await), "key_invalid");
        assert_eq!(
            client(&hub, Some(&rotated.key))
                .list_agents()
                .await
                .unwrap()
                .len(),
            2
        );
        admin.revoke_key(&scoped.info.id).await.unwrap();
        assert_eq!(
            code(client(&hub, Some(&rotated.key)).list_agents().await),
            "key_invalid"
        );

        // Expiry says so.
        let short = admin
            .create_key(&CreateKeyRequest {
                expires_s: Some(1),
                ..key("short", "member")
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let err = client(&hub, Some(&short.key))
            .list_agents()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("key_invalid"));
        assert!(err.to_string().contains("expired"), "{err}");

        // last_used_at is tracked (written in batches).
        let listed = admin.list_keys().await.unwrap();
        let states: Vec<(&str, &str)> = listed
            .iter()
            .map(|k| (k.name.as_str(), k.state.as_str()))
            .collect();
        assert!(
            states.contains(&("web-team", "revoked")) && states.contains(&("short", "expired")),
            "{states:?}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(6);
        loop {
            let keys = admin.list_keys().await.unwrap();
            if keys
                .iter()
                .any(|k| k.name == "initial-admin" && k.last_used_at.is_some())
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "last_used_at never written"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let actions = hub.audit_actions().await;
        for a in ["key.created", "key.rotated", "key.revoked"] {
            assert!(
                actions.contains(&a.to_owned()),
                "{a} missing from {actions:?}"
            );
        }
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_fleet_is_listed_a_page_at_a_time() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let token = hub
            .token(muster_proto::CreateTokenRequest {
                max_uses: Some(10),
                ttl_s: Some(600),
                ..Default::default()
            })
            .await
            .token;
        for name in ["e", "a", "d", "b", "c"] {
            let (req, _) = crate::request(name, None);
            hub.anonymous().enroll(Some(&token), &req).await.unwrap();
        }
        let admin = hub.admin();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = admin.agents_page(2, after.as_deref()).await.unwrap();
            pages += 1;
            assert!(page.agents.len() <= 2);
            seen.extend(page.agents.into_iter().map(|a| a.name));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, vec!["a", "b", "c", "d", "e"]);
        assert_eq!(pages, 3);
        // A member's scope applies across pages.
        let member = admin
            .create_key(&CreateKeyRequest {
                agents: Some("[bd]".into()),
                ..key("bd", "member")
            })
            .await
            .unwrap()
            .key;
        let page = client(&hub, Some(&member))
            .agents_page(1, None)
            .await
            .unwrap();
        assert_eq!(page.agents[0].name, "b");
        let rest = client(&hub, Some(&member))
            .agents_page(5, page.next.as_deref())
            .await
            .unwrap();
        let names: Vec<String> = rest.agents.into_iter().map(|a| a.name).collect();
        assert_eq!(names, vec!["d"]);
        assert!(rest.next.is_none());
        assert_eq!(
            code(admin.agents_page(2, Some("!!not-a-cursor")).await),
            "invalid_request"
        );
        hub.stop().await;
    })
    .await;
}
