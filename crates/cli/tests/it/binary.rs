//! The built `muster` binary, run as an operator would: a hub process, the admin
//! CLI finding it with no flags on its own machine, `login`, enroll, status, and
//! the restart and wrong-secret rules. No fixed ports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::snapshot;

const BIN: &str = env!("CARGO_BIN_EXE_muster");

/// A `muster` command with no MUSTER_* settings leaking in from the environment.
pub(crate) fn muster(cwd: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("MUSTER_") {
            c.env_remove(k);
        }
    }
    c.env("XDG_CONFIG_HOME", cwd.join("xdg"));
    c
}

/// An admin command through the real binary against `hub`, as `key` (the initial
/// admin key when `None`), with `stdin` and extra environment; run off the test
/// runtime's thread, since the hub under test serves on it.
pub(crate) async fn as_admin(
    hub: &muster_testkit::TestHub,
    key: Option<&str>,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> Output {
    let (url, key, hash) = (
        hub.url.clone(),
        key.unwrap_or(&hub.admin_key).to_owned(),
        hub.ca_hash.to_string(),
    );
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let mut child = muster(dir.path())
            .args(&args)
            .envs(env)
            .env("MUSTER_HUB_URL", url)
            .env("MUSTER_API_KEY", key)
            .env("MUSTER_CA_HASH", hash)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A command that does not read stdin may have exited already.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

pub(crate) fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct HubProcess {
    child: Child,
    data: PathBuf,
}

impl HubProcess {
    fn start(cwd: &Path, secret: Option<&str>) -> Result<HubProcess, String> {
        let data = cwd.join("muster-data");
        let _ = std::fs::remove_file(data.join("hub.json"));
        let mut cmd = muster(cwd);
        cmd.args(["hub", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(s) = secret {
            cmd.env("MUSTER_SECRET", s);
        }
        #[allow(clippy::zombie_processes)] // every path below waits or hands the child on
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if data.join("hub.json").exists() {
                return Ok(HubProcess { child, data });
            }
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                return Err(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err("hub did not write hub.json in 30 s".to_owned())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.data.join("hub.json")).unwrap()).unwrap()
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("hub did not stop on SIGTERM");
    }
}

#[test]
fn an_operator_walkthrough_with_the_real_binary() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let hub = HubProcess::start(cwd, None).unwrap();
    let data = hub.data.clone();
    for f in ["hub.json", "initial-admin-key", "secret"] {
        let mode = std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let info = hub.json();
    let url = info["url"].as_str().unwrap().to_owned();
    let ca_hash = info["ca_hash"].as_str().unwrap().to_owned();

    // On the hub's machine the admin CLI needs no flags.
    let created: serde_json::Value = serde_json::from_str(&ok(muster(cwd)
        .args(["tokens", "create", "--json"])
        .output()
        .unwrap()))
    .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(created["enroll_command"].as_str().unwrap().contains(&token));

    // The ready-to-paste line works from anywhere, with nothing else.
    let elsewhere = tempfile::tempdir().unwrap();
    let agent_dir = elsewhere.path().join("agent");
    let out = muster(elsewhere.path())
        .args([
            "enroll",
            "--hub",
            &url,
            "--token",
            &token,
            "--name",
            "cli-1",
            "--config-dir",
        ])
        .arg(&agent_dir)
        .output()
        .unwrap();
    assert!(ok(out).contains("Enrolled cli-1"));
    let status: serde_json::Value = serde_json::from_str(&ok(muster(elsewhere.path())
        .args(["status", "--json", "--config-dir"])
        .arg(&agent_dir)
        .output()
        .unwrap()))
    .unwrap();
    assert_eq!(status["hub"]["agent"]["name"], "cli-1");

    // A second use of the single-use token: one line, non-zero exit.
    let out = muster(elsewhere.path())
        .args(["enroll", "--hub", &url, "--token", &token, "--config-dir"])
        .arg(elsewhere.path().join("agent2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("token_exhausted"), "{err}");

    // `muster login` saves a profile that later commands use from any directory.
    let key = std::fs::read_to_string(data.join("initial-admin-key"))
        .unwrap()
        .trim()
        .to_owned();
    ok(muster(elsewhere.path())
        .args([
            "login",
            "--hub",
            &url,
            "--api-key",
            &key,
            "--ca-hash",
            &ca_hash,
        ])
        .output()
        .unwrap());
    let listed: serde_json::Value = serde_json::from_str(&ok(muster(elsewhere.path())
        .args(["agents", "list", "--json"])
        .output()
        .unwrap()))
    .unwrap();
    assert_eq!(listed[0]["name"], "cli-1");
    let out = muster(elsewhere.path())
        .args(["agents", "show", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // SIGTERM stops the hub cleanly; a restart reuses CA, secret and admin key.
    let before = snapshot(&data)
        .into_iter()
        .filter(|(n, _)| ["ca.pem", "secret", "initial-admin-key"].contains(&n.as_str()))
        .collect::<Vec<_>>();
    assert!(hub.stop().success());
    let hub = HubProcess::start(cwd, None).unwrap();
    assert_eq!(
        hub.json()["ca_hash"],
        serde_json::Value::String(ca_hash.clone())
    );
    let after = snapshot(&data)
        .into_iter()
        .filter(|(n, _)| ["ca.pem", "secret", "initial-admin-key"].contains(&n.as_str()))
        .collect::<Vec<_>>();
    assert_eq!(before, after);
    let mut admin = muster(cwd);
    admin.args(["agents", "list", "--json"]);
    assert!(ok(admin.output().unwrap()).contains("cli-1"));
    assert!(hub.stop().success());

    // The wrong secret is refused, with one clear line, and changes nothing.
    let _ = std::fs::remove_file(data.join("hub.json"));
    let files = snapshot(&data);
    let err = HubProcess::start(cwd, Some("definitely-not-the-right-secret"))
        .err()
        .unwrap();
    assert!(err.contains("hub secret does not match"), "{err}");
    let mut now = snapshot(&data);
    now.retain(|(n, _)| !n.starts_with("muster.db"));
    let mut was = files;
    was.retain(|(n, _)| !n.starts_with("muster.db"));
    assert_eq!(now, was);
}

#[test]
fn hub_ca_hash_prints_the_pin_source() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(tmp.path(), None).unwrap();
    let expected = hub.json()["ca_hash"].as_str().unwrap().to_owned();
    let out = ok(muster(tmp.path())
        .args(["hub", "ca-hash"])
        .output()
        .unwrap());
    assert_eq!(out.trim(), expected);
    assert!(hub.stop().success());
}

fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success()
    );
}

#[tokio::test]
async fn a_frozen_agent_goes_offline_within_two_and_a_half_intervals() {
    let hub = muster_testkit::TestHub::start_with(&muster_testkit::Backend::Sqlite, |o| {
        o.heartbeat_interval = Duration::from_secs(1);
    })
    .await;
    let agent = muster_testkit::TestAgent::new("frozen");
    let token = hub.default_token().await;
    let id = muster_agent::enroll(&hub.enroll_options(&agent, Some(&token), None), &agent.dir)
        .await
        .unwrap()
        .agent_id;
    #[allow(clippy::zombie_processes)] // waited for at the end
    let mut child = muster(agent.root())
        .args(["agent", "--config-dir"])
        .arg(agent.dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    hub.wait_status(&id, "online", Duration::from_secs(5)).await;
    signal(child.id(), "STOP");
    let took = hub
        .wait_status(&id, "offline", Duration::from_secs(6))
        .await;
    // The last heartbeat came at most one interval before the freeze; the hub waits
    // 2.5 intervals of silence after it.
    assert!(
        took <= Duration::from_millis(3000),
        "offline {took:?} after the freeze"
    );
    signal(child.id(), "CONT");
    hub.wait_status(&id, "online", Duration::from_secs(8)).await;
    signal(child.id(), "TERM");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "agent exit on SIGTERM: {status}");
    hub.wait_status(&id, "offline", Duration::from_secs(2))
        .await;
    hub.stop().await;
}

#[test]
fn a_tls_cert_with_the_wrong_key_is_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = muster_ca::Authority::generate("Other CA").unwrap();
    let names = ["127.0.0.1".to_owned()];
    let (cert, _) = ca
        .issue_server_cert(&names, std::time::Duration::from_secs(3600))
        .unwrap();
    let (_, other_key) = ca
        .issue_server_cert(&names, std::time::Duration::from_secs(3600))
        .unwrap();
    std::fs::write(tmp.path().join("hub.crt"), cert).unwrap();
    std::fs::write(tmp.path().join("hub.key"), other_key).unwrap();
    let out = muster(tmp.path())
        .args([
            "hub",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "hub.crt",
            "--tls-key",
            "hub.key",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("do not make a usable pair"), "{err}");
    // Checked before anything is created.
    assert!(!tmp.path().join("muster-data").exists());
}

#[test]
fn hub_logs_to_a_pipe_carry_no_colour_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("muster-data");
    #[allow(clippy::zombie_processes)] // waited for below
    let child = muster(tmp.path())
        .args(["hub", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !data.join("hub.json").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("INFO"), "the hub logged nothing: {err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}
