//! Trust rules (SPEC §7): no credential, but a matching hostname from a source
//! inside the rule's CIDRs. The source is the TCP peer (distinct loopback addresses
//! here), or a forwarded address only from a trusted proxy.

use muster_client::{ClientOptions, EnrollOutcome, HubClient, Trust};
use muster_proto::CreateTrustRule;
use muster_testkit::TestHub;

use crate::{each_backend, request};

/// A client whose requests come from `local` (a loopback address of its own), with
/// an `X-Forwarded-For` claim when given.
pub(crate) fn from(hub: &TestHub, local: &str, forwarded_for: Option<&str>) -> HubClient {
    HubClient::with_options(
        &hub.url,
        Trust::Hash(hub.ca_hash),
        ClientOptions {
            local_address: Some(local.parse().unwrap()),
            headers: forwarded_for
                .map(|f| vec![("x-forwarded-for".to_owned(), f.to_owned())])
                .unwrap_or_default(),
            ..Default::default()
        },
    )
    .unwrap()
}

async fn enroll_as(client: &HubClient, hostname: &str) -> EnrollOutcome {
    let (mut req, _) = request(hostname, None);
    req.enrollment_id = Some(format!("{:0>32}", hostname.replace('-', "")));
    client.enroll(None, &req).await.unwrap()
}

#[tokio::test]
async fn a_rule_admits_matching_hosts_from_its_networks_only() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let admin = hub.admin();
        let rule = admin
            .create_trust_rule(&CreateTrustRule {
                pattern: "sensor-*".to_owned(),
                cidrs: vec!["127.0.0.2/32".to_owned()],
                labels: [("site".to_owned(), "lab".to_owned())].into(),
                max_per_hour: Some(2),
            })
            .await
            .unwrap();
        assert_eq!(admin.list_trust_rules().await.unwrap().len(), 1);

        // Right host, right network: enrolled at once, with the rule's labels.
        let EnrollOutcome::Created(r) = enroll_as(&from(&hub, "127.0.0.2", None), "sensor-1").await
        else {
            panic!("not enrolled")
        };
        assert_eq!(
            admin
                .agent(&r.agent_id)
                .await
                .unwrap()
                .labels
                .get("site")
                .map(String::as_str),
            Some("lab")
        );
        // Right host, wrong network: it waits for an admin.
        assert!(matches!(
            enroll_as(&from(&hub, "127.0.0.3", None), "sensor-2").await,
            EnrollOutcome::Pending(_)
        ));
        // Wrong host, right network: waits too.
        assert!(matches!(
            enroll_as(&from(&hub, "127.0.0.2", None), "laptop-9").await,
            EnrollOutcome::Pending(_)
        ));
        // A forwarded address from an untrusted peer is ignored.
        let spoofing = from(&hub, "127.0.0.3", Some("127.0.0.2"));
        assert!(matches!(
            enroll_as(&spoofing, "sensor-3").await,
            EnrollOutcome::Pending(_)
        ));
        // Past the hourly allowance (2), matches wait in the queue as well.
        assert!(matches!(
            enroll_as(&from(&hub, "127.0.0.2", None), "sensor-4").await,
            EnrollOutcome::Created(_)
        ));
        assert!(matches!(
            enroll_as(&from(&hub, "127.0.0.2", None), "sensor-5").await,
            EnrollOutcome::Pending(_)
        ));

        admin.remove_trust_rule(&rule.id).await.unwrap();
        assert!(admin.list_trust_rules().await.unwrap().is_empty());
        assert!(matches!(
            enroll_as(&from(&hub, "127.0.0.2", None), "sensor-6").await,
            EnrollOutcome::Pending(_)
        ));
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_trusted_proxy_forwards_the_client_address() {
    each_backend(|b| async move {
        let hub =
            TestHub::start_with(&b, |o| o.trusted_proxies = vec!["127.0.0.4/32".to_owned()]).await;
        hub.admin()
            .create_trust_rule(&CreateTrustRule {
                pattern: "*".to_owned(),
                cidrs: vec!["10.20.0.0/16".to_owned()],
                ..Default::default()
            })
            .await
            .unwrap();
        let proxied = from(&hub, "127.0.0.4", Some("10.20.3.4"));
        assert!(matches!(
            enroll_as(&proxied, "behind-proxy").await,
            EnrollOutcome::Created(_)
        ));
        // The same header from anyone else is the client's own claim.
        let direct = from(&hub, "127.0.0.5", Some("10.20.3.4"));
        assert!(matches!(
            enroll_as(&direct, "claims-proxy").await,
            EnrollOutcome::Pending(_)
        ));
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_machine_queued_by_the_rate_limit_keeps_the_rules_labels() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let admin = hub.admin();
        admin
            .create_trust_rule(&CreateTrustRule {
                pattern: "cam-*".to_owned(),
                cidrs: vec!["127.0.0.2/32".to_owned()],
                labels: [("site".to_owned(), "dock".to_owned())].into(),
                max_per_hour: Some(1),
            })
            .await
            .unwrap();
        let client = from(&hub, "127.0.0.2", None);
        assert!(matches!(
            enroll_as(&client, "cam-1").await,
            EnrollOutcome::Created(_)
        ));
        // Over the hourly allowance: the second camera waits for an admin…
        let (mut req, _) = request("cam-2", None);
        req.enrollment_id = Some("cam2cam2cam2cam2cam2cam2cam2cam2".to_owned());
        let EnrollOutcome::Pending(p) = client.enroll(None, &req).await.unwrap() else {
            panic!("not queued")
        };
        admin.approve(&p.request_id).await.unwrap();
        // …and, approved, carries the labels the rule would have given it.
        let EnrollOutcome::Created(r) = client.enroll(None, &req).await.unwrap() else {
            panic!("not enrolled")
        };
        let agent = admin.agent(&r.agent_id).await.unwrap();
        assert_eq!(agent.labels.get("site").map(String::as_str), Some("dock"));
        hub.stop().await;
    })
    .await;
}
