//! Bad input gets a 4xx JSON error, never a panic, and changes nothing.

use muster_proto::ApiError;
use muster_testkit::{TestAgent, TestHub};

use crate::command_line::{admin_flags, run, strings};
use crate::{code, each_backend, request, snapshot};

fn error_code(status: u16, body: &[u8]) -> (u16, String) {
    let e: ApiError = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not a JSON error: {}", String::from_utf8_lossy(body)));
    (status, e.error.code)
}

#[tokio::test]
async fn malformed_requests_get_json_errors_and_consume_nothing() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let client = hub.anonymous();
        let token = hub.default_token().await;

        let (s, body) = client.post_raw("/api/v1/enroll", b"{not json".to_vec(), Some(&token)).await.unwrap();
        assert_eq!(error_code(s, &body), (400, "invalid_request".to_owned()));

        let big = vec![b' '; 70 * 1024];
        let (s, body) = client.post_raw("/api/v1/enroll", big, Some(&token)).await.unwrap();
        assert_eq!(error_code(s, &body), (413, "payload_too_large".to_owned()));

        let (mut req, _) = request("bad-csr", None);
        req.csr_pem = "-----BEGIN CERTIFICATE REQUEST-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE REQUEST-----\n".to_owned();
        assert_eq!(code(client.enroll(Some(&token), &req).await), "invalid_csr");

        let (mut req, _) = request("tampered", None);
        let mut pem: Vec<char> = req.csr_pem.chars().collect();
        let i = pem.len() - 40;
        pem[i] = if pem[i] == 'A' { 'B' } else { 'A' };
        req.csr_pem = pem.into_iter().collect();
        assert_eq!(code(client.enroll(Some(&token), &req).await), "invalid_csr");

        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let csr = rcgen::CertificateParams::default().serialize_request(&p384).unwrap().pem().unwrap();
        let (mut req, _) = request("p384", None);
        req.csr_pem = csr;
        assert_eq!(code(client.enroll(Some(&token), &req).await), "invalid_csr");

        let (req, _) = request("long", Some(&"n".repeat(300)));
        assert_eq!(code(client.enroll(Some(&token), &req).await), "invalid_request");
        let (req, _) = request("ctl\u{7}", None);
        assert_eq!(code(client.enroll(Some(&token), &req).await), "invalid_request");

        let (s, body) = client
            .post_raw("/api/v1/enroll", br#"{"hostname":"x","csr_pem":"y","surprise":1}"#.to_vec(), Some(&token))
            .await
            .unwrap();
        assert_eq!(error_code(s, &body).0, 400);

        let t = &hub.admin().list_tokens().await.unwrap()[0];
        assert_eq!((t.uses, t.state.as_str()), (0, "active"), "bad requests consumed the token");
        assert!(hub.admin().list_agents().await.unwrap().is_empty());
        // The hub still answers after all of it.
        client.enroll(Some(&token), &request("good", None).0).await.unwrap();
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn unauthenticated_and_wrong_role_calls_are_refused() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        assert_eq!(code(hub.anonymous().list_agents().await), "unauthorized");
        let bogus = hub
            .anonymous()
            .with_bearer(format!("mak_{}", "x".repeat(43)));
        assert_eq!(code(bogus.list_tokens().await), "key_invalid");
        let machine = TestAgent::new("agent-role");
        let t = hub.default_token().await;
        muster_agent::enroll(&hub.enroll_options(&machine, Some(&t), None), &machine.dir)
            .await
            .unwrap();
        // An agent key is not an API key.
        assert_eq!(code(machine.client().list_agents().await), "key_invalid");
        assert_eq!(code(hub.admin().agent_me().await), "key_invalid");
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_failed_enrollment_leaves_the_earlier_config_dir_untouched() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let machine = TestAgent::new("keeper");
        let t = hub.default_token().await;
        muster_agent::enroll(&hub.enroll_options(&machine, Some(&t), None), &machine.dir)
            .await
            .unwrap();
        let before = snapshot(machine.dir.path());
        // Re-enrolling under a name another live agent holds: refused, and nothing
        // on disk changes.
        crate::enrolled(&hub, "other").await;
        let err = muster_agent::enroll(
            &hub.enroll_options(&machine, None, Some("other")),
            &machine.dir,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("name_in_use"), "{err}");
        assert_eq!(snapshot(machine.dir.path()), before);
        // An unreachable hub: also nothing changes but the pending enrollment marker.
        let mut opts = hub.enroll_options(&machine, None, None);
        opts.hub_urls = vec!["https://127.0.0.1:1".to_owned()];
        assert!(muster_agent::enroll(&opts, &machine.dir).await.is_err());
        let after: Vec<_> = snapshot(machine.dir.path())
            .into_iter()
            .filter(|(n, _)| n != "pending-enrollment.json")
            .collect();
        assert_eq!(after, before);
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_burst_beyond_the_hubs_capacity_is_told_to_come_back_and_does() {
    let hub = TestHub::start_with(&muster_testkit::Backend::Sqlite, |o| {
        o.max_enrollments_in_flight = 1
    })
    .await;
    let token = hub
        .token(muster_proto::CreateTokenRequest {
            max_uses: Some(100),
            ttl_s: Some(600),
            ..Default::default()
        })
        .await
        .token;
    // Raw requests see the 429 and consume nothing.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (client, token) = (hub.anonymous(), token.clone());
        tasks.push(tokio::spawn(async move {
            client
                .enroll(Some(&token), &request(&format!("burst-{i}"), None).0)
                .await
        }));
    }
    let (mut ok, mut throttled) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Some("rate_limited"), "{e}");
                throttled += 1;
            }
        }
    }
    assert!(throttled > 0, "no 429 with one slot and 24 at once");
    assert_eq!(hub.admin().list_tokens().await.unwrap()[0].uses, ok);
    // Real agents retry after a random delay and all get in.
    let mut agents = Vec::new();
    for i in 0..8 {
        let agent = TestAgent::new(&format!("patient-{i}"));
        let opts = hub.enroll_options(&agent, Some(&token), None);
        agents.push(tokio::spawn(async move {
            muster_agent::enroll(&opts, &agent.dir).await.map(|_| ())
        }));
    }
    for a in agents {
        a.await.unwrap().unwrap();
    }
    hub.stop().await;
}

/// Terminal escapes and invisible characters in what an agent sends are refused on
/// entry (every fact, not just the name), and whatever the database holds anyway
/// reaches an admin's terminal escaped.
#[tokio::test]
async fn facts_with_terminal_escapes_are_refused_and_never_printed_raw() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let client = hub.anonymous();
        let token = hub.default_token().await;
        let iface = |name: &str, mac: Option<&str>, addr: &str| muster_proto::Interface {
            name: name.to_owned(),
            mac: mac.map(str::to_owned),
            addresses: vec![addr.to_owned()],
            ..Default::default()
        };
        for bad in [
            iface("eth0\u{1b}]0;owned\u{7}", None, "10.0.0.5"),
            iface("eth0", Some("52:54:00:ab:cd:\u{1b}["), "10.0.0.5"),
            iface("eth0", None, "10.0.0.5\u{1b}[2J"),
            iface("eth\u{0}0", None, "10.0.0.5"),
        ] {
            let (mut req, _) = request("facts", None);
            req.interfaces = vec![bad];
            assert_eq!(
                code(client.enroll(Some(&token), &req).await),
                "invalid_request"
            );
        }
        for name in ["web\u{202e}10-bew", "web\u{200b}01"] {
            let (req, _) = request("web-01", Some(name));
            assert_eq!(
                code(client.enroll(Some(&token), &req).await),
                "invalid_request",
                "{name:?}"
            );
            let (req, _) = request(name, None);
            assert_eq!(
                code(client.enroll(Some(&token), &req).await),
                "invalid_request",
                "{name:?}"
            );
        }
        let (mut req, _) = request("web-01", None);
        req.interfaces = vec![iface("eth0", Some("52:54:00:ab:cd:ef"), "10.0.0.5")];
        let muster_client::EnrollOutcome::Created(enrolled) =
            client.enroll(Some(&token), &req).await.unwrap()
        else {
            panic!("not created")
        };

        // A row written behind the hub's back (an old version, a restore) still
        // cannot drive the terminal.
        let chr = match b {
            muster_testkit::Backend::Sqlite => "char",
            muster_testkit::Backend::Postgres(_) => "chr",
        };
        hub.raw_sql(&format!(
            "UPDATE agents SET hostname = 'evil' || {chr}(27) || ']0;owned' || {chr}(7), \
             os_info = 'x' || {chr}(8206) || 'y'"
        ))
        .await;
        let mut args = strings(&["agents", "show", &enrolled.agent_id]);
        args.extend(admin_flags(&hub));
        let out = run(args).await;
        let shown = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\u{7}') && !shown.contains('\u{200e}'),
            "{shown:?}"
        );
        assert!(shown.contains("evil\\u001b]0;owned\\u0007"), "{shown}");
        hub.stop().await;
    })
    .await;
}
