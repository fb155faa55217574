//! Audit checkpoints (SPEC §11): the chain alone cannot show that its newest
//! entries were deleted; a signed checkpoint of its head, written outside the
//! database (a file beside the secret, syslog, a webhook), can.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use muster_proto::AuditCheckpoint;
use muster_testkit::TestHub;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::binary::as_admin;
use crate::each_backend;

fn read(path: &std::path::Path) -> Option<AuditCheckpoint> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The chain's newest entry, as the hub lists it.
async fn head(hub: &TestHub) -> i64 {
    let list = hub
        .admin()
        .audit(&muster_client::AuditQuery::default())
        .await
        .unwrap();
    list[0].seq
}

/// Wait until the checkpoint file names entry `seq`.
async fn checkpoint_at(path: &std::path::Path, seq: i64) -> AuditCheckpoint {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(c) = read(path).filter(|c| c.seq == seq) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint of entry {seq}: {:?}",
            read(path)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn verify(hub: &TestHub, file: &std::path::Path) -> (bool, String) {
    let out = as_admin(
        hub,
        None,
        &[
            "audit",
            "verify",
            "--checkpoint",
            &file.display().to_string(),
        ],
        "",
        &[],
    )
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A one-shot HTTP server taking POSTed bodies: what the webhook received.
async fn webhook() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/checkpoints", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = conn.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]);
                        let _ = tx.send(body.into_owned());
                        break;
                    }
                }
            }
            let _ = conn
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (url, rx)
}

#[tokio::test]
async fn a_checkpoint_outside_the_database_shows_entries_cut_off_behind_it() {
    each_backend(|b| async move {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("log.sock");
        let syslog = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
        syslog.set_nonblocking(true).unwrap();
        let (url, mut posted) = webhook().await;
        let hub = TestHub::start_with(&b, |o| {
            o.audit_checkpoint_every = Duration::from_millis(200);
            o.audit_syslog = Some(socket.clone());
            o.audit_webhook = Some(url.clone());
        })
        .await;
        let file = hub.data_dir.join("audit-checkpoint.json");
        for _ in 0..4 {
            hub.default_token().await;
        }
        let seq = head(&hub).await;
        let written = checkpoint_at(&file, seq).await;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "beside the secret, as private");

        // The same checkpoint went to syslog and to the webhook.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut logged = Vec::new();
        while !logged.iter().any(|l: &String| l.contains(&written.mac)) {
            let mut buf = [0u8; 4096];
            match syslog.recv(&mut buf) {
                Ok(n) => logged.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            assert!(Instant::now() < deadline, "syslog got {logged:?}");
        }
        let line = logged.iter().find(|l| l.contains(&written.mac)).unwrap();
        assert!(line.starts_with("<86>muster-hub["), "{line}");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let body = tokio::time::timeout(Duration::from_secs(5), posted.recv())
                .await
                .unwrap()
                .unwrap();
            let c: AuditCheckpoint = serde_json::from_str(&body).unwrap();
            if c == written {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the webhook never got {written:?}"
            );
        }

        let (ok, out) = verify(&hub, &file).await;
        assert!(ok, "{out}");
        assert!(out.contains(&format!("still holds entry {seq}")), "{out}");

        // Someone with the database deletes the newest entries: the chain alone
        // still verifies; the checkpoint shows the cut.
        let evidence = dir.path().join("kept.json");
        std::fs::copy(&file, &evidence).unwrap();
        hub.raw_sql(&format!("DELETE FROM audit_log WHERE seq > {}", seq - 2))
            .await;
        let plain = as_admin(&hub, None, &["audit", "verify"], "", &[]).await;
        assert!(plain.status.success(), "{plain:?}");
        let (ok, out) = verify(&hub, &evidence).await;
        assert!(!ok);
        assert_eq!(out.trim().lines().count(), 1, "{out}");
        assert!(
            out.contains("cut off") && out.contains(&format!("saw entry {seq}")),
            "{out}"
        );

        // The hub keeps the file it can no longer reach as evidence, though the
        // chain moves on.
        hub.default_token().await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(read(&file), Some(written.clone()), "the evidence was kept");

        // A checkpoint altered (to hide the cut) no longer verifies.
        let forged = AuditCheckpoint {
            seq: seq - 2,
            ..written.clone()
        };
        std::fs::write(&evidence, serde_json::to_string(&forged).unwrap()).unwrap();
        let (ok, out) = verify(&hub, &evidence).await;
        assert!(!ok);
        assert!(out.contains("signature does not verify"), "{out}");
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_hub_writes_a_last_checkpoint_when_it_stops() {
    each_backend(|b| async move {
        let hub = TestHub::start_with(&b, |o| {
            o.audit_checkpoint_every = Duration::from_secs(3600);
            o.audit_syslog = None;
        })
        .await;
        let file = hub.data_dir.join("audit-checkpoint.json");
        let first = checkpoint_at(&file, head(&hub).await).await;
        for _ in 0..3 {
            hub.default_token().await;
        }
        let seq = head(&hub).await;
        assert!(seq > first.seq);
        let (options, pg, tmp) = hub.stop_keeping_data().await;
        let last = read(&file).unwrap();
        assert_eq!(last.seq, seq, "the stop wrote the head");
        // Started again on the same data, the hub verifies against its own file.
        let mut again = TestHub::start_on(options).await.unwrap();
        again.adopt(pg, tmp);
        let (ok, out) = verify(&again, &file).await;
        assert!(ok, "{out}");
        again.stop().await;
    })
    .await;
}
