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
