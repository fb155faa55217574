//! What the dashboard's pages are built on (SPEC §13): live events over SSE that
//! follow agents within a second, coalesced and bounded; the fleet counted by
//! status; each agent's session history.

use std::time::{Duration, Instant};

use muster_testkit::{RawTls, TestHub};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{each_backend, enrolled};

fn fast(o: &mut muster_hub::HubOptions) {
    o.heartbeat_interval = Duration::from_secs(1);
}

const PASSWORD: &str = "correct horse battery staple";

/// A server-sent event stream read off a raw TLS connection (HTTP/1.1, chunked).
struct EventStream {
    tls: RawTls,
    /// Bytes read and not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked body not yet parsed into events.
    body: String,
}

/// `GET /api/v1/events` with `header` (an `Authorization` or `Cookie` line, or
/// none); the status and the stream.
async fn open(hub: &TestHub, header: Option<String>) -> (u16, EventStream) {
    let mut tls = hub
        .raw_tls("127.0.0.1".parse().unwrap(), &[b"http/1.1"])
        .await
        .unwrap();
    let extra = header.map(|h| format!("{h}\r\n")).unwrap_or_default();
    let request = format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: hub\r\nAccept: text/event-stream\r\n{extra}\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let head_end = loop {
        let mut buf = [0u8; 4096];
        let n = tls.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the response head");
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    raw.drain(..head_end);
    (
        status,
        EventStream {
            tls,
            raw,
            body: String::new(),
        },
    )
}

impl EventStream {
    /// Move whole chunks from `raw` to `body`.
    fn dechunk(&mut self) {
        loop {
            let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..eol]).to_string();
            let size = usize::from_str_radix(size_text.trim(), 16).unwrap();
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            let data = self.raw[eol + 2..eol + 2 + size].to_vec();
            self.body.push_str(std::str::from_utf8(&data).unwrap());
            self.raw.drain(..eol + 2 + size + 2);
        }
    }

    /// The next event (name, data), or `None` if none comes within `within`.
    async fn next(&mut self, within: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + within;
        self.dechunk();
        loop {
            while let Some(end) = self.body.find("\n\n") {
                let block: String = self.body.drain(..end + 2).collect();
                let mut name = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                // Keep-alive comments carry no event.
                if let (Some(name), Some(data)) = (name, data) {
                    return Some((name, data));
                }
            }
            let mut buf = [0u8; 16384];
            // None on a timeout, and at the stream's end (a stopping hub ends it).
            let n = match tokio::time::timeout_at(deadline, self.tls.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return None,
            };
            self.raw.extend_from_slice(&buf[..n]);
            self.dechunk();
        }
    }

    /// Read events until one says `agent` has `status`; how long it took.
    async fn until_status(&mut self, agent: &str, status: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let left = within.saturating_sub(start.elapsed());
            let Some((name, data)) = self.next(left).await else {
                panic!("no {status} event for {agent} within {within:?}");
            };
            if name == "agents"
                && data["agents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a["id"] == agent && a["status"] == status)
            {
                return start.elapsed();
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn bearer(hub: &TestHub) -> Option<String> {
    Some(format!("Authorization: Bearer {}", hub.admin_key))
}

async fn metric(hub: &TestHub, name: &str) -> u64 {
    hub.metric(name)
        .await
        .unwrap_or_else(|| panic!("no metric {name}")) as u64
}

#[tokio::test]
async fn events_follow_agents_within_a_second_and_bursts_are_coalesced() {
    let b = muster_testkit::Backend::Sqlite;
    let hub = TestHub::start_with(&b, |o| {
        fast(o);
        o.admin_user = Some(("root".into(), PASSWORD.into()));
    })
    .await;

    // No credential: refused. A login cookie (no CSRF header: it is a GET) works.
    assert_eq!(open(&hub, None).await.0, 401);
    let (_, cookie) = hub.anonymous().login("root", PASSWORD).await.unwrap();
    let pair = cookie.split(';').next().unwrap().to_owned();
    let (status, mut by_cookie) = open(&hub, Some(format!("Cookie: {pair}"))).await;
    assert_eq!(status, 200);
    let (name, first) = by_cookie.next(Duration::from_secs(2)).await.unwrap();
    assert_eq!(name, "agents");
    assert_eq!(first["counts"]["online"], 0);
    drop(by_cookie);

    let (status, mut events) = open(&hub, bearer(&hub)).await;
    assert_eq!(status, 200);
    let (name, first) = events.next(Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        (name.as_str(), &first["agents"]),
        ("agents", &serde_json::json!([]))
    );
    let (name, approvals) = events.next(Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        (name.as_str(), &approvals["pending"]),
        ("approvals", &serde_json::json!(0))
    );

    let (agent, id) = enrolled(&hub, "watched-01").await;
    events
        .until_status(&id, "offline", Duration::from_secs(2))
        .await;
    let running = agent.run();
    // The hub sees the session open, then the event follows within a flush.
    let seen = hub.wait_status(&id, "online", Duration::from_secs(5)).await;
    let pushed = events
        .until_status(&id, "online", Duration::from_secs(5))
        .await;
    eprintln!("online: hub after {seen:?}, event {pushed:?} later");
    assert!(pushed < Duration::from_secs(1), "event after {pushed:?}");
    running.stop().await.unwrap();
    let took = events
        .until_status(&id, "offline", Duration::from_secs(3))
        .await;
    assert!(
        took < Duration::from_secs(1),
        "offline event after {took:?}"
    );

    // 200 changes in a burst: a few messages, the last one right.
    let admin = hub.admin();
    let start = Instant::now();
    for i in 0..200 {
        let mut change = muster_proto::ChangeLabelsRequest::default();
        change.set.insert("n".into(), i.to_string());
        admin.change_labels(&id, &change).await.unwrap();
    }
    let burst = start.elapsed();
    let mut messages = 0;
    let mut last = None;
    while let Some((name, data)) = events.next(Duration::from_millis(1500)).await {
        assert_eq!(name, "agents");
        messages += 1;
        last = data["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .map(|a| a["labels"]["n"].clone());
        assert!(data["counts"]["offline"] == 1, "{data}");
    }
    eprintln!("200 changes in {burst:?} arrived as {messages} messages");
    assert_eq!(last, Some(serde_json::json!("199")));
    assert!(
        messages <= (burst.as_millis() / 250) as usize + 3,
        "{messages} messages for 200 changes in {burst:?}"
    );
    assert!(messages < 50, "{messages} messages for 200 changes");
    assert!(metric(&hub, "muster_event_notes_total").await >= 200);
    // An open stream does not hold up the hub's shutdown.
    let stopping = Instant::now();
    hub.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        stopping.elapsed()
    );
    assert!(events.next(Duration::from_secs(1)).await.is_none());
}

#[tokio::test]
async fn a_watcher_that_never_reads_costs_a_bounded_budget() {
    let b = muster_testkit::Backend::Sqlite;
    let hub = TestHub::start_with(&b, fast).await;
    let admin = hub.admin();
    // Notes with many long labels make large frames, so a stalled reader's socket
    // buffers fill and the hub's own queue for it is reached.
    let mut agents = Vec::new();
    for i in 0..40 {
        let (_, id) = enrolled(&hub, &format!("bulk-{i:02}")).await;
        agents.push(id);
    }
    // Never a read.
    let (status, stalled) = open(&hub, bearer(&hub)).await;
    assert_eq!(status, 200);
    let value = "v".repeat(60);
    let mut round = 0;
    while metric(&hub, "muster_event_resyncs_total").await == 0 {
        round += 1;
        assert!(round <= 150, "no resync after {round} rounds");
        let mut edits = tokio::task::JoinSet::new();
        for id in &agents {
            let mut change = muster_proto::ChangeLabelsRequest::default();
            for k in 0..48 {
                change
                    .set
                    .insert(format!("k{k:02}"), format!("{value}{round}"));
            }
            let admin = admin.clone();
            let id = id.clone();
            edits.spawn(async move { admin.change_labels(&id, &change).await.unwrap() });
        }
        edits.join_all().await;
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    eprintln!("resync after {round} rounds");
    // It is still one watcher, and a reader now gets the resync first.
    assert_eq!(metric(&hub, "muster_event_watchers").await, 1);
    let mut stalled = stalled;
    let mut saw_resync = false;
    while let Some((name, _)) = stalled.next(Duration::from_secs(2)).await {
        if name == "resync" {
            saw_resync = true;
            break;
        }
    }
    assert!(saw_resync);
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.stop().await;
}

#[tokio::test]
async fn the_fleet_is_counted_by_status_and_sessions_are_recorded() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, fast).await;
        let admin = hub.admin();
        let s = admin.fleet_summary().await.unwrap();
        assert_eq!((s.total, s.counts.online), (0, 0));

        let (agent, id) = enrolled(&hub, "counted-01").await;
        let (_, revoked) = enrolled(&hub, "counted-02").await;
        let (_, _offline) = enrolled(&hub, "counted-03").await;
        admin.revoke_agent(&revoked).await.unwrap();

        // Two sessions, each with its address and why it ended.
        for _ in 0..2 {
            let running = agent.run();
            hub.wait_status(&id, "online", Duration::from_secs(5)).await;
            let s = admin.fleet_summary().await.unwrap();
            assert_eq!(
                (s.total, s.counts.online, s.counts.offline, s.counts.revoked),
                (3, 1, 1, 1),
                "{s:?}"
            );
            running.stop().await.unwrap();
            hub.wait_status(&id, "offline", Duration::from_secs(3))
                .await;
        }
        let s = admin.fleet_summary().await.unwrap();
        assert_eq!((s.counts.online, s.counts.offline), (0, 2), "{s:?}");

        // The approval queue's count is the admins': an unscoped member key gets 0.
        let queued = crate::approvals::anonymous_request("waiting-01");
        let outcome = hub.anonymous().enroll(None, &queued).await.unwrap();
        assert!(matches!(outcome, muster_client::EnrollOutcome::Pending(_)));
        assert_eq!(admin.fleet_summary().await.unwrap().counts.pending, 1);
        let reader = admin
            .create_key(&muster_proto::CreateKeyRequest {
                name: "reader".into(),
                role: muster_proto::Role::Member,
                agents: None,
                probes: Vec::new(),
                expires_s: None,
            })
            .await
            .unwrap();
        let s = hub
            .anonymous()
            .with_bearer(reader.key)
            .fleet_summary()
            .await
            .unwrap();
        assert_eq!((s.total, s.counts.pending), (3, 0), "{s:?}");

        // A member key scoped to some agents counts those only.
        let scoped = admin
            .create_key(&muster_proto::CreateKeyRequest {
                name: "two-team".into(),
                role: muster_proto::Role::Member,
                agents: Some("counted-0[23]".into()),
                probes: Vec::new(),
                expires_s: None,
            })
            .await
            .unwrap();
        let member = hub.anonymous().with_bearer(scoped.key);
        let s = member.fleet_summary().await.unwrap();
        assert_eq!(
            (
                s.total,
                s.counts.offline,
                s.counts.revoked,
                s.counts.pending
            ),
            (2, 1, 1, 0),
            "{s:?}"
        );
        assert_eq!(
            crate::code(member.agent_sessions("counted-01").await),
            "not_found"
        );

        // The close is written just after the registry entry goes: wait for it.
        let deadline = Instant::now() + Duration::from_secs(3);
        let history = loop {
            let h = admin.agent_sessions("counted-01").await.unwrap();
            if h.sessions.iter().all(|s| s.disconnected_at.is_some()) || Instant::now() > deadline {
                break h;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(history.sessions.len(), 2, "{history:?}");
        for s in &history.sessions {
            assert_eq!(s.address, "127.0.0.1");
            assert!(s.disconnected_at.is_some(), "{s:?}");
            assert_eq!(s.reason.as_deref(), Some("closed by the agent"));
        }
        assert!(history.sessions[0].connected_at >= history.sessions[1].connected_at);
        assert_eq!(
            crate::code(admin.agent_sessions("no-such-agent").await),
            "not_found"
        );
        // `agents show` lists them under the agent.
        let mut args = crate::command_line::strings(&["agents", "show", "counted-01"]);
        args.extend(crate::command_line::admin_flags(&hub));
        let out = crate::command_line::run(args).await;
        let shown = String::from_utf8(out.stdout).unwrap();
        assert!(shown.contains("Recent sessions:"), "{shown}");
        assert_eq!(shown.matches("from 127.0.0.1  until").count(), 2, "{shown}");

        // Retention: at most 50 per agent, the oldest dropped as new ones open.
        let hour_ago = now_ms() - 3_600_000;
        for i in 0..55 {
            hub.raw_sql(&format!(
                "INSERT INTO agent_sessions (id, agent_id, hub, address, connected_at, \
                 disconnected_at, reason) VALUES ('old-{i}', '{id}', 'elsewhere', '10.0.0.9', \
                 {}, {}, 'closed by the agent')",
                hour_ago + i,
                hour_ago + 100 + i
            ))
            .await;
        }
        let running = agent.run();
        hub.wait_status(&id, "online", Duration::from_secs(5)).await;
        running.stop().await.unwrap();
        let history = admin.agent_sessions(&id).await.unwrap();
        assert_eq!(history.sessions.len(), 50);
        assert_eq!(history.sessions[0].address, "127.0.0.1");
        let kept = hub
            .count(&format!(
                "SELECT COUNT(*) FROM agent_sessions WHERE agent_id = '{id}'"
            ))
            .await;
        assert_eq!(kept, 50);
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_hub_that_stopped_without_closing_its_sessions_closes_them_at_start() {
    let b = muster_testkit::Backend::Sqlite;
    let mut hub = TestHub::start_with(&b, fast).await;
    let (_, id) = enrolled(&hub, "orphan").await;
    let hub_id = std::fs::read_to_string(hub.data_dir.join("hub-id")).unwrap();
    let at = now_ms() - 60_000;
    hub.raw_sql(&format!(
        "INSERT INTO agent_sessions (id, agent_id, hub, address, connected_at) \
         VALUES ('left-open', '{id}', '{}', '10.0.0.7', {at})",
        hub_id.trim()
    ))
    .await;
    hub.raw_sql(&format!(
        "INSERT INTO agent_sessions (id, agent_id, hub, address, connected_at) \
         VALUES ('other-hub', '{id}', 'another', '10.0.0.8', {})",
        at - 1
    ))
    .await;
    hub.restart().await;
    let sessions = hub.admin().agent_sessions(&id).await.unwrap().sessions;
    let left = &sessions[0];
    assert_eq!(left.address, "10.0.0.7");
    assert!(left.disconnected_at.is_some());
    assert!(left.reason.as_deref().unwrap().starts_with("unknown end"));
    assert!(sessions[1].disconnected_at.is_none(), "another hub's row");
    hub.stop().await;
}

#[tokio::test]
async fn a_stream_is_not_an_idle_connection() {
    let b = muster_testkit::Backend::Sqlite;
    let hub = TestHub::start_with(&b, |o| {
        fast(o);
        o.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let (status, mut events) = open(&hub, bearer(&hub)).await;
    assert_eq!(status, 200);
    assert!(events.next(Duration::from_secs(2)).await.is_some());
    // Past the idle timeout with nothing to send, the stream still carries changes.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, id) = enrolled(&hub, "late-comer").await;
    events
        .until_status(&id, "offline", Duration::from_secs(3))
        .await;
    hub.stop().await;
}
