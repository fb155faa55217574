//! The agent-side commands as the built binary runs them on a machine: `status` next
//! to other muster processes, and the lines an operator reads when something is
//! wrong. (`agent install-service` is in `services.rs`.)

use std::path::Path;
use std::process::Output;

use muster_testkit::{Backend, TestHub};

use crate::binary::{muster, ok};
use crate::enrolled;

const BIN: &str = env!("CARGO_BIN_EXE_muster");

/// Runs `muster ARGS` in `cwd`, off the async runtime so an in-process hub answers.
async fn run_in(cwd: &Path, args: Vec<String>) -> Output {
    let cwd = cwd.to_path_buf();
    tokio::task::spawn_blocking(move || muster(&cwd).args(&args).output().unwrap())
        .await
        .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn one_error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

/// `muster status` while another process holds the config dir's lock to write: it
/// deletes none of that write in progress and still reports what the dir holds.
#[tokio::test]
async fn status_deletes_nothing_another_process_is_writing() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let (agent, _) = enrolled(&hub, "locked-01").await;
    let dir = agent.dir.path().to_path_buf();
    let writer = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(".lock"))
        .unwrap();
    writer.lock().unwrap();
    std::fs::create_dir(dir.join(".staging")).unwrap();
    std::fs::write(dir.join(".staging/key.pem"), "half written").unwrap();
    std::fs::write(dir.join(".config.json.tmp-writer"), "half written").unwrap();

    let out = run_in(
        agent.root(),
        strings(&["status", "--json", "--config-dir", &path(&dir)]),
    )
    .await;
    let status: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(status["name"], "locked-01");
    assert_eq!(status["hub"]["agent"]["name"], "locked-01");
    assert!(
        dir.join(".staging/key.pem").exists(),
        "the write in progress"
    );
    assert!(dir.join(".config.json.tmp-writer").exists());
    drop(writer);
    hub.stop().await;
}

/// SPEC §8: an unreachable hub is reported, not an error; a hub that revoked this
/// agent is reported too, and `status` then exits like `muster agent` does (3).
#[tokio::test]
async fn status_exits_3_for_a_revoked_agent_and_0_for_an_unreachable_hub() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let (agent, id) = enrolled(&hub, "gone-01").await;
    let dir = path(agent.dir.path());
    let status = |json: bool| {
        let mut args = strings(&["status", "--config-dir", &dir]);
        if json {
            args.push("--json".to_owned());
        }
        run_in(agent.root(), args)
    };
    assert!(ok(status(false).await).contains("Hub view:     offline"));

    hub.admin().revoke_agent(&id).await.unwrap();
    let out = status(false).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Name:         gone-01"), "{text}");
    assert!(text.contains("agent_revoked"), "{text}");
    let err = one_error_line(&out);
    assert!(err.contains("agent_revoked"), "{err}");
    let out = status(true).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["hub"]["error_code"], "agent_revoked");

    let url = hub.url.clone();
    hub.stop().await;
    let text = ok(status(false).await);
    let config = agent.dir.path().join("config.json");
    assert!(
        text.contains(&format!(
            "Hub view:     unreachable: cannot reach the hub at {url}: connection refused \
             (is the hub running and listening there? check hub_url in {})",
            config.display()
        )),
        "{text}"
    );
}

/// `muster agent` says where it connected, once per session, at its default level;
/// and while it runs, `muster status` is not kept waiting for the config dir.
#[tokio::test]
async fn the_agent_logs_the_hub_it_connects_to_and_leaves_the_dir_to_status() {
    use std::io::BufRead as _;
    let hub = TestHub::start(&Backend::Sqlite).await;
    let (agent, id) = enrolled(&hub, "web-01").await;
    #[allow(clippy::zombie_processes)] // waited for at the end
    let mut child = muster(agent.root())
        .args(["agent", "--config-dir"])
        .arg(agent.dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let expected = format!("connected to {} as web-01 ({id})", hub.url);
    // Off the runtime: the hub the agent talks to runs on it.
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let mut seen = Vec::new();
        while !seen.iter().any(|l: &String| l.contains(&expected)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => panic!("no {expected:?} in {seen:#?}"),
            }
        }
    })
    .await
    .unwrap();
    hub.wait_status(&id, "online", std::time::Duration::from_secs(5))
        .await;

    let started = std::time::Instant::now();
    let out = run_in(
        agent.root(),
        strings(&["status", "--json", "--config-dir", &path(agent.dir.path())]),
    )
    .await;
    let status: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(status["hub"]["agent"]["status"], "online");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "status waited {:?} for the running agent",
        started.elapsed()
    );

    assert!(
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "{exit}");
    hub.stop().await;
}

/// A token that lost its end is called truncated, before anything is sent or written.
#[tokio::test]
async fn a_truncated_token_is_named_before_anything_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("agent");
    let secret = "A".repeat(43);
    let pin = "B".repeat(22);
    for token in [
        format!("met_{}", &secret[..30]),
        format!("met_{secret}.{}", &pin[..12]),
    ] {
        // Nothing listens on port 1: had the token been used, this would say so.
        let out = run_in(
            tmp.path(),
            strings(&[
                "enroll",
                "--hub",
                "https://127.0.0.1:1",
                "--token",
                &token,
                "--config-dir",
                &path(&config),
            ]),
        )
        .await;
        let err = one_error_line(&out);
        assert_eq!(
            err,
            "error: the token looks truncated (expected met_ + 43 characters + . + 22 \
             characters); copy it again from `muster tokens create`"
        );
        assert!(!config.exists(), "nothing written");
    }
}

/// Connection refused names the URL and what to check, once, on one line: for an
/// enrollment and for an admin command alike.
#[tokio::test]
async fn a_refused_connection_names_the_url_and_what_to_check() {
    let tmp = tempfile::tempdir().unwrap();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("https://127.0.0.1:{port}");
    let token = format!("met_{}.{}", "A".repeat(43), "B".repeat(22));
    let hash = format!("sha256:{}", "a".repeat(64));
    let expected = format!(
        "error: cannot reach the hub at {url}: connection refused (is the hub running and \
         listening there? check --hub / the address in hub.json)"
    );
    for args in [
        vec![
            "enroll",
            "--hub",
            &url,
            "--token",
            &token,
            "--config-dir",
            "agent",
        ],
        vec![
            "tokens",
            "list",
            "--hub",
            &url,
            "--api-key",
            "mak_x",
            "--ca-hash",
            &hash,
        ],
    ] {
        let err = one_error_line(&run_in(tmp.path(), strings(&args)).await);
        assert_eq!(err, expected, "{args:?}");
    }
}

/// The hint printed for a queued enrollment works as printed: the admin's approve
/// command, then the machine's command to pick the request up (config dir, name,
/// labels and the way to verify the hub included).
#[tokio::test]
async fn the_queued_request_hint_works_as_printed() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("my agent");
    let out = run_in(
        tmp.path(),
        strings(&[
            "enroll",
            "--hub",
            &hub.url,
            "--ca-hash",
            &hub.ca_hash.to_string(),
            "--config-dir",
            "my agent",
            "--name",
            "queued-01",
            "--label",
            "env=lab",
        ]),
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let line = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(line.lines().count(), 1, "{line}");
    let commands: Vec<&str> = line.split('`').skip(1).step_by(2).collect();
    let [approve, resume] = commands[..] else {
        panic!("two commands in {line}")
    };
    assert!(approve.starts_with("muster approvals approve "), "{line}");
    assert!(resume.starts_with("muster enroll "), "{line}");

    // The admin's command, on a machine with the admin connection in its environment.
    let words: Vec<String> = approve.split(' ').skip(1).map(str::to_owned).collect();
    let (url, key, hash) = (
        hub.url.clone(),
        hub.admin_key.clone(),
        hub.ca_hash.to_string(),
    );
    let admin_dir = tempfile::tempdir().unwrap();
    let admin_cwd = admin_dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        muster(&admin_cwd)
            .args(&words)
            .env("MUSTER_HUB_URL", url)
            .env("MUSTER_API_KEY", key)
            .env("MUSTER_CA_HASH", hash)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    ok(out);

    // The machine's command, through a shell, from another directory.
    let script = format!("'{BIN}'{}", resume.strip_prefix("muster").unwrap());
    let elsewhere = tempfile::tempdir().unwrap();
    let cwd = elsewhere.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let mut sh = std::process::Command::new("sh");
        sh.args(["-c", &script]).current_dir(&cwd);
        for (k, _) in std::env::vars() {
            if k.starts_with("MUSTER_") {
                sh.env_remove(k);
            }
        }
        sh.output().unwrap()
    })
    .await
    .unwrap();
    assert!(ok(out).contains("Enrolled queued-01"));
    let creds = muster_agent::configdir::ConfigDir::new(&config)
        .load()
        .unwrap()
        .unwrap();
    let agent = hub.admin().agent(&creds.config.agent_id).await.unwrap();
    assert_eq!(agent.name, "queued-01");
    assert_eq!(agent.labels.get("env").map(String::as_str), Some("lab"));
    hub.stop().await;
}
