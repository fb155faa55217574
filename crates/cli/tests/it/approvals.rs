//! The approval queue (SPEC §7): an enrollment with no credential waits for an
//! admin, bound to the requester's enrollment id and key pair.

use std::time::Duration;

use muster_client::EnrollOutcome;
use muster_testkit::{TestAgent, TestHub};

use crate::{code, each_backend, request};

fn no_credential(hub: &TestHub, agent: &TestAgent) -> muster_agent::EnrollOptions {
    let mut opts = hub.enroll_options(agent, None, None);
    opts.ca_hash = Some(hub.ca_hash.to_string());
    opts
}

#[tokio::test]
async fn an_enrollment_without_credential_waits_for_approval() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let agent = TestAgent::new("lab-07");
        let err = muster_agent::enroll(&no_credential(&hub, &agent), &agent.dir).await.unwrap_err();
        let muster_agent::AgentError::Pending { request_id } = err else { panic!("{err}") };
        assert!(agent.dir.load().unwrap().is_none(), "nothing enrolled yet");

        let admin = hub.admin();
        let listed = admin.list_approvals().await.unwrap();
        assert_eq!(listed.len(), 1);
        let r = &listed[0];
        assert_eq!((r.id.as_str(), r.kind.as_str(), r.hostname.as_str()), (request_id.as_str(), "enroll", "lab-07"));
        assert_eq!(r.source, "127.0.0.1");
        assert_eq!(r.facts.as_ref().unwrap().os_info, "Test OS 1.0");
        // Asking again is the same request, not a second one.
        let again = muster_agent::enroll(&no_credential(&hub, &agent), &agent.dir).await.unwrap_err();
        assert!(matches!(again, muster_agent::AgentError::Pending { request_id: ref r } if *r == request_id));
        assert_eq!(admin.list_approvals().await.unwrap().len(), 1);

        admin.approve(&request_id).await.unwrap();
        let report = muster_agent::enroll(&no_credential(&hub, &agent), &agent.dir).await.unwrap();
        assert!(report.created);
        assert_eq!(report.name, "lab-07");
        assert!(admin.list_approvals().await.unwrap().is_empty());
        assert!(hub.audit_actions().await.contains(&"request.approved".to_owned()));
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn wait_completes_on_approval_and_fails_with_the_reason_on_denial() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let admin = hub.admin();
        let patient = TestAgent::new("web-41");
        let mut opts = no_credential(&hub, &patient);
        opts.wait = Some(Duration::from_secs(20));
        let dir = patient.dir.clone();
        let waiting = tokio::spawn(async move { muster_agent::enroll(&opts, &dir).await });
        let refused = TestAgent::new("db-99");
        let mut opts = no_credential(&hub, &refused);
        opts.wait = Some(Duration::from_secs(20));
        let dir = refused.dir.clone();
        let denied = tokio::spawn(async move { muster_agent::enroll(&opts, &dir).await });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while admin.list_approvals().await.unwrap().len() < 2 {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Approving by pattern takes only the matching host.
        let approved = admin.approve_matching("web-*").await.unwrap();
        assert_eq!(approved.len(), 1);
        assert_eq!(approved[0].hostname, "web-41");
        let db = admin.list_approvals().await.unwrap().remove(0);
        admin
            .deny(&db.id, Some("not in the inventory"))
            .await
            .unwrap();

        let report = waiting.await.unwrap().unwrap();
        assert_eq!(report.name, "web-41");
        let err = denied.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("not in the inventory"), "{err}");
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_queued_request_is_bound_to_its_key_and_the_queue_can_be_off() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let client = hub.anonymous();
        let (mut req, _) = request("bound", None);
        req.enrollment_id = Some("00112233445566778899aabbccddeeff".to_owned());
        let EnrollOutcome::Pending(p) = client.enroll(None, &req).await.unwrap() else {
            panic!()
        };
        hub.admin().approve(&p.request_id).await.unwrap();
        // Someone who learned the enrollment id but holds another key gets nothing.
        let (mut thief, _) = request("bound", None);
        thief.enrollment_id = req.enrollment_id.clone();
        assert_eq!(code(client.enroll(None, &thief).await), "conflict");
        // Without an enrollment id there is nothing to bind to.
        let (bare, _) = request("bare", None);
        assert_eq!(code(client.enroll(None, &bare).await), "invalid_request");
        hub.stop().await;

        let closed = TestHub::start_with(&b, |o| o.approval_queue = false).await;
        let (mut req, _) = request("closed", None);
        req.enrollment_id = Some("ffeeddccbbaa99887766554433221100".to_owned());
        assert_eq!(
            code(closed.anonymous().enroll(None, &req).await),
            "unauthorized"
        );
        closed.stop().await;
    })
    .await;
}

/// A raw credential-less request for `hostname` with an enrollment id of its own.
pub(crate) fn anonymous_request(hostname: &str) -> muster_proto::EnrollRequest {
    let (mut req, _) = request(hostname, None);
    req.enrollment_id = Some(format!("{:0>32}", hostname.replace('-', "")));
    req
}

#[tokio::test]
async fn a_flood_from_one_source_stops_at_its_share_of_the_queue() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let client = hub.anonymous();
        let (mut queued, mut refused) = (1, 0);
        let first = anonymous_request("flood-first");
        client.enroll(None, &first).await.unwrap();
        for i in 1..20 {
            match client
                .enroll(None, &anonymous_request(&format!("flood-{i}")))
                .await
            {
                Ok(EnrollOutcome::Pending(_)) => queued += 1,
                Err(e) if e.code() == Some("rate_limited") => refused += 1,
                other => panic!("{other:?}"),
            }
        }
        // 16 waiting per source (the default `--max-pending-per-source`).
        assert_eq!((queued, refused), (16, 4));
        assert_eq!(hub.admin().list_approvals().await.unwrap().len(), 16);
        // A waiting request asking again is no new request: still answered.
        assert!(matches!(
            client.enroll(None, &first).await.unwrap(),
            EnrollOutcome::Pending(_)
        ));
        // Another address has a share of its own.
        let elsewhere = crate::trust::from(&hub, "127.0.0.2", None);
        assert!(matches!(
            elsewhere
                .enroll(None, &anonymous_request("other-1"))
                .await
                .unwrap(),
            EnrollOutcome::Pending(_)
        ));
        hub.stop().await;

        // The queue as a whole has a limit too (`--max-pending`).
        let small = TestHub::start_with(&b, |o| o.max_pending_total = 3).await;
        for (i, addr) in ["127.0.0.2", "127.0.0.3", "127.0.0.4"].iter().enumerate() {
            let client = crate::trust::from(&small, addr, None);
            let req = anonymous_request(&format!("spread-{i}"));
            assert!(matches!(
                client.enroll(None, &req).await.unwrap(),
                EnrollOutcome::Pending(_)
            ));
        }
        let late = crate::trust::from(&small, "127.0.0.5", None);
        let req = anonymous_request("spread-late");
        assert_eq!(code(late.enroll(None, &req).await), "rate_limited");
        small.stop().await;
    })
    .await;
}

#[tokio::test]
async fn queued_facts_are_cut_to_a_few_kilobytes() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let mut req = anonymous_request("many-nics");
        req.interfaces = (0..150)
            .map(|i| muster_proto::Interface {
                name: format!("veth{i:04}"),
                mac: Some("02:42:ac:11:00:02".to_owned()),
                addresses: (0..6)
                    .map(|a| format!("fd00:1234:5678:{i:x}::{a:x}/64"))
                    .collect(),
                ..Default::default()
            })
            .collect();
        let sent = serde_json::to_string(&req).unwrap().len();
        assert!(sent > 40_000, "{sent}");
        let EnrollOutcome::Pending(p) = hub.anonymous().enroll(None, &req).await.unwrap() else {
            panic!("not queued")
        };
        let stored = hub
            .count("SELECT MAX(LENGTH(facts)) FROM pending_requests")
            .await;
        assert!(stored <= 8 * 1024, "{stored} bytes of facts stored");
        // What fits is kept, in order, for the admin deciding.
        let listed = hub.admin().list_approvals().await.unwrap();
        let facts = listed[0].facts.as_ref().unwrap();
        assert!(!facts.interfaces.is_empty() && facts.interfaces.len() < 150);
        assert_eq!(facts.interfaces[0].name, "veth0000");
        // Approved, the machine enrolls with every interface it reports.
        hub.admin().approve(&p.request_id).await.unwrap();
        let EnrollOutcome::Created(r) = hub.anonymous().enroll(None, &req).await.unwrap() else {
            panic!("not enrolled")
        };
        assert_eq!(
            hub.admin().agent(&r.agent_id).await.unwrap().name,
            "many-nics"
        );
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn expired_requests_are_deleted() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, |o| o.pending_ttl = Duration::from_secs(1)).await;
        let client = hub.anonymous();
        for i in 0..3 {
            client
                .enroll(None, &anonymous_request(&format!("stale-{i}")))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(hub.admin().list_approvals().await.unwrap().is_empty());
        // The next request sweeps the expired ones away.
        client
            .enroll(None, &anonymous_request("fresh-1"))
            .await
            .unwrap();
        assert_eq!(hub.count("SELECT COUNT(*) FROM pending_requests").await, 1);
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn approving_by_pattern_is_all_or_nothing() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let client = hub.anonymous();
        for host in ["web-1", "web-2", "web-3", "db-1"] {
            client.enroll(None, &anonymous_request(host)).await.unwrap();
        }
        // The database refuses to approve the last match (a fault injected behind the
        // hub's back): the matches before it must not stay approved.
        let fault = match b.name() {
            "sqlite" => "CREATE TRIGGER fault BEFORE UPDATE ON pending_requests \
                         WHEN OLD.hostname = 'web-3' BEGIN SELECT RAISE(ABORT, 'fault'); END;"
                .to_owned(),
            _ => "CREATE FUNCTION fault() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'fault'; END $$ \
                  LANGUAGE plpgsql; CREATE TRIGGER fault BEFORE UPDATE ON pending_requests \
                  FOR EACH ROW WHEN (OLD.hostname = 'web-3') EXECUTE FUNCTION fault();"
                .to_owned(),
        };
        hub.raw_sql(&fault).await;
        let admin = hub.admin();
        assert_eq!(code(admin.approve_matching("web-*").await), "internal");
        assert_eq!(admin.list_approvals().await.unwrap().len(), 4, "nothing approved");
        assert!(!hub.audit_actions().await.contains(&"request.approved".to_owned()));

        hub.raw_sql(match b.name() {
            "sqlite" => "DROP TRIGGER fault",
            _ => "DROP TRIGGER fault ON pending_requests",
        })
        .await;
        let approved = admin.approve_matching("web-*").await.unwrap();
        let mut hosts: Vec<&str> = approved.iter().map(|r| r.hostname.as_str()).collect();
        hosts.sort();
        assert_eq!(hosts, ["web-1", "web-2", "web-3"]);
        assert!(approved.iter().all(|r| r.status == "approved"));
        let remaining = admin.list_approvals().await.unwrap();
        assert_eq!(remaining.len(), 1);
        assert_eq!(remaining[0].hostname, "db-1");
        // One audit entry per request, each naming it.
        let entries = admin
            .audit(&muster_client::AuditQuery {
                action: Some("request.approved".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut targets: Vec<String> = entries.iter().map(|e| e.target.clone()).collect();
        targets.sort();
        let mut want: Vec<String> = approved.iter().map(|r| format!("request:{}", r.id)).collect();
        want.sort();
        assert_eq!(targets, want);
        hub.stop().await;
    })
    .await;
}

/// A machine that meets a full approval queue is told at once without `--wait`
/// (the hub asks for 60 s, so quick retries would only be minutes of silence), and
/// with `--wait` it keeps asking until the wait is over.
#[tokio::test]
async fn a_full_queue_is_reported_at_once_and_waited_out_with_wait() {
    let hub = TestHub::start_with(&muster_testkit::Backend::Sqlite, |o| {
        o.max_pending_per_source = 1
    })
    .await;
    hub.anonymous()
        .enroll(None, &anonymous_request("first"))
        .await
        .unwrap();
    let agent = TestAgent::new("second");
    let mut opts = hub.enroll_options(&agent, None, None);
    opts.ca_hash = Some(hub.ca_hash.to_string());

    let start = std::time::Instant::now();
    let err = muster_agent::enroll(&opts, &agent.dir)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("rate_limited"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );

    opts.wait = Some(Duration::from_secs(3));
    let start = std::time::Instant::now();
    let err = muster_agent::enroll(&opts, &agent.dir)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("rate_limited"), "{err}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "took {took:?}"
    );
    hub.stop().await;
}
