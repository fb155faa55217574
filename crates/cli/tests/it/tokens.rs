//! Token rules (SPEC §4): every refusal has its code, and no refusal consumes a use.

use std::time::Duration;

use muster_proto::CreateTokenRequest;
use muster_testkit::TestHub;

use crate::{code, each_backend, request};

#[tokio::test]
async fn refused_tokens_say_why() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let admin = hub.admin();
        let client = hub.anonymous();

        let unknown = format!("met_{}.{}", "A".repeat(43), hub.ca_hash.pin());
        assert_eq!(
            code(client.enroll(Some(&unknown), &request("h1", None).0).await),
            "token_unknown"
        );

        let short = hub
            .token(CreateTokenRequest {
                max_uses: Some(1),
                ttl_s: Some(1),
                ..Default::default()
            })
            .await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            code(
                client
                    .enroll(Some(&short.token), &request("h2", None).0)
                    .await
            ),
            "token_expired"
        );

        let used = hub.default_token().await;
        client
            .enroll(Some(&used), &request("h3", None).0)
            .await
            .unwrap();
        assert_eq!(
            code(client.enroll(Some(&used), &request("h4", None).0).await),
            "token_exhausted"
        );

        let revoked = hub
            .token(CreateTokenRequest {
                max_uses: None,
                ttl_s: None,
                ..Default::default()
            })
            .await;
        // Used once first, so the hub has read it recently: revoking still counts at once.
        client
            .enroll(Some(&revoked.token), &request("h5", None).0)
            .await
            .unwrap();
        admin.revoke_token(&revoked.id).await.unwrap();
        assert_eq!(
            code(
                client
                    .enroll(Some(&revoked.token), &request("h6", None).0)
                    .await
            ),
            "token_revoked"
        );

        let states: Vec<(String, String)> = admin
            .list_tokens()
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.id, t.state.to_string()))
            .collect();
        assert!(states.contains(&(short.id.clone(), "expired".to_owned())));
        assert!(states.contains(&(revoked.id.clone(), "revoked".to_owned())));
        assert_eq!(admin.list_agents().await.unwrap().len(), 2);
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn pattern_and_cidr_refusals_consume_no_use() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let client = hub.anonymous();
        let patterned = hub
            .token(CreateTokenRequest {
                max_uses: Some(1),
                ttl_s: Some(600),
                pattern: Some("web-*".to_owned()),
                ..Default::default()
            })
            .await;
        assert_eq!(
            code(
                client
                    .enroll(Some(&patterned.token), &request("db-01", None).0)
                    .await
            ),
            "hostname_not_allowed"
        );
        let fenced = hub
            .token(CreateTokenRequest {
                max_uses: Some(1),
                ttl_s: Some(600),
                cidrs: vec!["10.0.0.0/8".to_owned()],
                ..Default::default()
            })
            .await;
        assert_eq!(
            code(
                client
                    .enroll(Some(&fenced.token), &request("web-01", None).0)
                    .await
            ),
            "source_not_allowed"
        );
        for t in hub.admin().list_tokens().await.unwrap() {
            assert_eq!(
                (t.uses, t.state.as_str()),
                (0, "active"),
                "refusals consumed a use"
            );
        }
        // The same single-use token still enrolls a machine that fits.
        client
            .enroll(Some(&patterned.token), &request("web-01", None).0)
            .await
            .unwrap();
        let allowed = hub
            .token(CreateTokenRequest {
                max_uses: Some(1),
                ttl_s: Some(600),
                cidrs: vec!["127.0.0.0/8".to_owned()],
                labels: [("env".to_owned(), "lab".to_owned())].into(),
                ..Default::default()
            })
            .await;
        client
            .enroll(Some(&allowed.token), &request("web-02", None).0)
            .await
            .unwrap();
        let agent = hub.admin().agent("web-02").await.unwrap();
        assert_eq!(
            agent.labels.get("env").map(String::as_str),
            Some("lab"),
            "token labels applied"
        );
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn token_creation_validates_its_rules() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let admin = hub.admin();
        for bad in [
            CreateTokenRequest {
                max_uses: Some(0),
                ..Default::default()
            },
            CreateTokenRequest {
                cidrs: vec!["10.0.0.0/99".to_owned()],
                ..Default::default()
            },
            CreateTokenRequest {
                pattern: Some("[".to_owned()),
                ..Default::default()
            },
            CreateTokenRequest {
                labels: [("bad key!".to_owned(), "v".to_owned())].into(),
                ..Default::default()
            },
        ] {
            assert_eq!(code(admin.create_token(&bad).await), "invalid_request");
        }
        let t = hub
            .token(CreateTokenRequest {
                max_uses: None,
                ttl_s: None,
                ..Default::default()
            })
            .await;
        assert!(t.expires_at.is_none() && t.max_uses.is_none());
        assert!(t.enroll_command.contains(&hub.url) && t.enroll_command.contains(&t.token));
        let (secret, pin) = t.token.split_once('.').unwrap();
        assert_eq!(secret.len(), 4 + 43);
        assert_eq!(pin, hub.ca_hash.pin());
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn revoking_a_revoked_token_changes_nothing() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let admin = hub.admin();
        let t = hub.token(CreateTokenRequest::default()).await;
        let first = admin.revoke_token(&t.id).await.unwrap();
        assert_eq!(first.state, "revoked");
        // Asked again: 200 with the token as it is, and no second audit entry.
        let again = admin.revoke_token(&t.id).await.unwrap();
        assert_eq!(again.state, "revoked");
        assert_eq!(again.id, first.id);
        let revocations = admin
            .audit(&muster_client::AuditQuery {
                action: Some("token.revoked".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(revocations.len(), 1);
        assert_eq!(code(admin.revoke_token("no-such-token").await), "not_found");
        hub.stop().await;
    })
    .await;
}
