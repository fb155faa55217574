//! Users and login (SPEC §11): argon2id passwords, secure session cookies, a
//! disabled user refused at the next request, and throttled failed logins that do
//! not tell a wrong user from a wrong password.

use muster_client::{ClientOptions, HubClient, Trust};
use muster_proto::CreateUserRequest;
use muster_testkit::TestHub;

use crate::{code, each_backend};

const PASSWORD: &str = "correct horse battery staple";

fn with_cookie(hub: &TestHub, cookie: &str, csrf: bool) -> HubClient {
    let pair = cookie.split(';').next().unwrap().to_owned();
    let mut headers = vec![("cookie".to_owned(), pair)];
    if csrf {
        headers.push(("x-muster-csrf".to_owned(), "1".to_owned()));
    }
    HubClient::with_options(
        &hub.url,
        Trust::Hash(hub.ca_hash),
        ClientOptions {
            headers,
            ..Default::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn login_sessions_follow_the_users_state() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, |o| {
            o.admin_user = Some(("root".into(), PASSWORD.into()))
        })
        .await;
        let anon = hub.anonymous();
        let (me, cookie) = anon.login("root", PASSWORD).await.unwrap();
        assert_eq!((me.name.as_str(), me.role.as_str()), ("root", "admin"));
        for flag in ["HttpOnly", "Secure", "SameSite=Strict", "muster_session="] {
            assert!(cookie.contains(flag), "{flag} missing from {cookie}");
        }
        let root = with_cookie(&hub, &cookie, true);
        root.create_user(&CreateUserRequest {
            name: "ann".into(),
            role: muster_proto::Role::Member,
            password: Some(PASSWORD.into()),
        })
        .await
        .unwrap();
        // Without the CSRF header a cookie cannot change anything.
        let no_csrf = with_cookie(&hub, &cookie, false);
        assert_eq!(
            code(no_csrf.create_token(&Default::default()).await),
            "forbidden"
        );

        let (_, ann_cookie) = anon.login("ann", PASSWORD).await.unwrap();
        let ann = with_cookie(&hub, &ann_cookie, true);
        assert!(ann.list_agents().await.is_ok());
        assert_eq!(
            code(ann.list_tokens().await),
            "forbidden",
            "members manage nothing"
        );
        // Disabled: refused at the very next request, not just at the next login.
        root.change_user("ann", "disable").await.unwrap();
        assert_eq!(code(ann.list_agents().await), "unauthorized");
        assert_eq!(code(anon.login("ann", PASSWORD).await), "unauthorized");
        root.change_user("ann", "enable").await.unwrap();
        let users: Vec<String> = root
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(users, vec!["ann", "root"]);
        root.change_user("ann", "remove").await.unwrap();
        let actions = hub.audit_actions().await;
        for a in [
            "user.created",
            "user.login",
            "user.login_failed",
            "user.disabled",
            "user.removed",
        ] {
            assert!(actions.contains(&a.to_owned()), "{a} missing");
        }
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn failed_logins_look_alike_and_are_throttled() {
    let hub = TestHub::start_with(&muster_testkit::Backend::Sqlite, |o| {
        o.admin_user = Some(("root".into(), PASSWORD.into()))
    })
    .await;
    let anon = hub.anonymous();
    let wrong_password = anon
        .login("root", "not the password at all")
        .await
        .unwrap_err()
        .to_string();
    let wrong_user = anon
        .login("nobody", "not the password at all")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        wrong_password, wrong_user,
        "a wrong user and a wrong password must look alike"
    );
    let mut last = String::new();
    for _ in 0..12 {
        match anon.login("root", "still wrong!!").await {
            Err(e) => last = e.code().unwrap_or_default().to_owned(),
            Ok(_) => panic!("logged in with a wrong password"),
        }
        if last == "rate_limited" {
            break;
        }
    }
    assert_eq!(last, "rate_limited");
    // Refused even with the right password while throttled.
    assert_eq!(code(anon.login("root", PASSWORD).await), "rate_limited");
    hub.stop().await;
}
