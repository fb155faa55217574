//! Self-updates (SPEC §10 "Updates") with real agent processes: the test build of
//! `muster`, copied into a temp dir (the cargo-built binary is never touched), runs
//! `muster agent` against an in-process hub over real TLS. "A newer release" is a
//! small sh stand-in that runs another copy of the same binary as another version
//! (`MUSTER_TEST_VERSION`, honoured by debug builds only), signed with a key the
//! agent trusts through `MUSTER_TEST_RELEASE_PUBKEY` (debug builds only).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use muster_proto::{AgentInfo, UpdatePhase, UpdateRequest};
use muster_release::{ReleaseDir, SigningKey, this_arch, this_os};
use muster_testkit::{Backend, TestAgent, TestHub};

use crate::enrolled;

const BIN: &str = env!("CARGO_BIN_EXE_muster");
const RUNNING: &str = env!("CARGO_PKG_VERSION");

async fn hub() -> TestHub {
    TestHub::start_with(&Backend::Sqlite, |o| {
        o.heartbeat_interval = Duration::from_secs(1);
    })
    .await
}

/// One machine: its own copy of the binary, enrolled, running `muster agent`.
struct Machine {
    tmp: tempfile::TempDir,
    exe: PathBuf,
    agent: TestAgent,
    id: String,
    /// The release key it trusts (`MUSTER_TEST_RELEASE_PUBKEY`), if any.
    key: Option<String>,
    child: Option<Child>,
}

impl Machine {
    /// Enroll `name` and start its agent; `key` is the release key it trusts
    /// (`None`: a build without one).
    async fn start(hub: &TestHub, name: &str, key: Option<&SigningKey>) -> Machine {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("bin")).unwrap();
        std::fs::create_dir_all(tmp.path().join("real")).unwrap();
        let exe = tmp.path().join("bin/muster");
        std::fs::copy(BIN, &exe).unwrap();
        // What the stand-ins run: another copy, so a swapped `exe` is never their target.
        std::fs::copy(BIN, tmp.path().join("real/muster")).unwrap();
        let (agent, id) = enrolled(hub, name).await;
        let mut m = Machine {
            tmp,
            exe,
            agent,
            id,
            key: key.map(|k| k.public_key().to_string()),
            child: None,
        };
        m.spawn();
        m.wait(hub, "agent online", |a| a.status == "online").await;
        m
    }

    /// Start `muster agent` (again), logging to `agent.log`.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join("agent.log"))
            .unwrap();
        let mut cmd = Command::new(&self.exe);
        for (k, _) in std::env::vars() {
            if k.starts_with("MUSTER_") {
                cmd.env_remove(k);
            }
        }
        let root = self.agent.root();
        cmd.args(["agent", "--config-dir"])
            .arg(self.agent.dir.path())
            .env("MUSTER_HOST_HOSTNAME_FILE", root.join("hostname"))
            .env("MUSTER_HOST_OS_RELEASE_FILE", root.join("os-release"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(k) = &self.key {
            cmd.env("MUSTER_TEST_RELEASE_PUBKEY", k);
        }
        self.child = Some(cmd.spawn().unwrap());
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// A stand-in release: a script that runs the real binary as `version`.
    fn stand_in(&self, version: &str) -> PathBuf {
        let real = self.tmp.path().join("real/muster");
        self.script(
            &format!("standin-{version}"),
            &format!(
                "#!/bin/sh\nMUSTER_TEST_VERSION={version} exec {} \"$@\"\n",
                real.display()
            ),
        )
    }

    fn script(&self, name: &str, text: &str) -> PathBuf {
        let path = self.tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    async fn wait(&self, hub: &TestHub, what: &str, ok: impl Fn(&AgentInfo) -> bool) -> AgentInfo {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let a = hub.admin().agent(&self.id).await.unwrap();
            if ok(&a) {
                return a;
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.tmp.path().join("agent.log")).unwrap_or_default();
                panic!("waited 30 s for {what}; agent is {a:?}\nagent log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait for the update to end; its final phase and message.
    async fn outcome(&self, hub: &TestHub, version: &str) -> (UpdatePhase, String) {
        let a = self
            .wait(hub, "a final update report", |a| {
                a.update
                    .as_ref()
                    .is_some_and(|u| u.phase.is_final() && u.version == version)
            })
            .await;
        let u = a.update.unwrap();
        (u.phase, u.message)
    }

    fn exe_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.exe).unwrap()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sign `file` as `version` for this platform with `key` and publish it on `hub`
/// (the route `muster release publish` uses).
async fn publish(hub: &TestHub, key: &SigningKey, file: &Path, version: &str) {
    let m = key
        .sign_file(file, version, this_os(), this_arch())
        .unwrap();
    hub.admin()
        .publish_release(
            version,
            this_os(),
            this_arch(),
            &serde_json::to_string(&m).unwrap(),
            std::fs::read(file).unwrap(),
        )
        .await
        .unwrap();
}

fn order(version: Option<&str>, allow_downgrade: bool, deadline_s: u64) -> UpdateRequest {
    UpdateRequest {
        version: version.map(str::to_owned),
        allow_downgrade,
        deadline_s: Some(deadline_s),
    }
}

fn update_actions(actions: &[String]) -> Vec<&str> {
    actions
        .iter()
        .map(String::as_str)
        .filter(|a| a.starts_with("agent.update."))
        .collect()
}

#[tokio::test]
async fn an_agent_updates_itself_and_comes_back_as_the_new_version() {
    let hub = hub().await;
    let (key, _) = SigningKey::generate().unwrap();
    let mut m = Machine::start(&hub, "upd-ok", Some(&key)).await;
    let original = m.exe_bytes();
    let stand_in = m.stand_in("0.2.0");
    publish(&hub, &key, &stand_in, "0.2.0").await;
    assert!(hub.admin().agent(&m.id).await.unwrap().outdated);

    let sent = hub
        .admin()
        .update_agent(&m.id, &order(None, false, 30))
        .await
        .unwrap();
    assert_eq!(
        (sent.from_version.as_str(), sent.version.as_str()),
        (RUNNING, "0.2.0")
    );
    let (phase, message) = m.outcome(&hub, "0.2.0").await;
    assert_eq!(phase, UpdatePhase::Completed, "{message}");
    let a = m
        .wait(&hub, "online as 0.2.0", |a| {
            a.status == "online" && a.agent_version == "0.2.0"
        })
        .await;
    assert!(!a.outdated);
    assert_eq!(m.exe_bytes(), std::fs::read(&stand_in).unwrap());
    assert_eq!(
        std::fs::read(m.exe.with_file_name("muster.previous")).unwrap(),
        original,
        "the previous binary is kept beside the new one"
    );
    // Same process, replaced in place (exec): the PID a service manager tracks.
    assert!(m.child.as_mut().unwrap().try_wait().unwrap().is_none());
    let actions = hub.audit_actions().await;
    assert_eq!(
        update_actions(&actions),
        [
            "agent.update.requested",
            "agent.update.started",
            "agent.update.verified",
            "agent.update.installed",
            "agent.update.completed"
        ],
        "{actions:?}"
    );
    // Asking again for the version it runs: nothing to do, no exec loop.
    hub.admin()
        .update_agent(&m.id, &order(Some("0.2.0"), false, 30))
        .await
        .unwrap();
    let (phase, _) = m.outcome(&hub, "0.2.0").await;
    assert_eq!(phase, UpdatePhase::Skipped);
    hub.stop().await;
}

#[tokio::test]
async fn bad_signatures_missing_keys_and_downgrades_are_refused_with_nothing_changed() {
    let hub = hub().await;
    let (key, _) = SigningKey::generate().unwrap();
    let (other, _) = SigningKey::generate().unwrap();
    let m = Machine::start(&hub, "upd-refuse", Some(&key)).await;
    let keyless = Machine::start(&hub, "upd-nokey", None).await;
    let original = m.exe_bytes();

    // Signed by a key the agent does not trust.
    publish(&hub, &other, &m.stand_in("0.3.0"), "0.3.0").await;
    hub.admin()
        .update_agent(&m.id, &order(Some("0.3.0"), false, 30))
        .await
        .unwrap();
    let (phase, why) = m.outcome(&hub, "0.3.0").await;
    assert_eq!(phase, UpdatePhase::Refused);
    assert!(why.contains("does not verify"), "{why}");
    assert_eq!(m.exe_bytes(), original);

    // A build without a release key refuses every update (fail closed).
    hub.admin()
        .update_agent(&keyless.id, &order(Some("0.3.0"), false, 30))
        .await
        .unwrap();
    let (phase, why) = keyless.outcome(&hub, "0.3.0").await;
    assert_eq!(phase, UpdatePhase::Refused);
    assert!(why.contains("without a release key"), "{why}");
    assert_eq!(keyless.exe_bytes(), original);

    // Older than the running version: refused unless allowed.
    let old = m.stand_in("0.0.1");
    publish(&hub, &key, &old, "0.0.1").await;
    hub.admin()
        .update_agent(&m.id, &order(Some("0.0.1"), false, 30))
        .await
        .unwrap();
    let (phase, why) = m.outcome(&hub, "0.0.1").await;
    assert_eq!(phase, UpdatePhase::Refused);
    assert!(why.contains("--allow-downgrade"), "{why}");
    assert_eq!(m.exe_bytes(), original);
    hub.admin()
        .update_agent(&m.id, &order(Some("0.0.1"), true, 30))
        .await
        .unwrap();
    let (phase, why) = m.outcome(&hub, "0.0.1").await;
    assert_eq!(phase, UpdatePhase::Completed, "{why}");
    m.wait(&hub, "online as 0.0.1", |a| a.agent_version == "0.0.1")
        .await;

    let actions = hub.audit_actions().await;
    assert_eq!(
        update_actions(&actions)
            .iter()
            .filter(|a| **a == "agent.update.refused")
            .count(),
        3,
        "{actions:?}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_new_binary_that_never_reaches_the_hub_is_rolled_back() {
    let hub = hub().await;
    let (key, _) = SigningKey::generate().unwrap();
    let m = Machine::start(&hub, "upd-rollback", Some(&key)).await;
    let original = m.exe_bytes();
    let dud = m.script("dud", "#!/bin/sh\nexec sleep 600\n");
    publish(&hub, &key, &dud, "0.2.0").await;
    hub.admin()
        .update_agent(&m.id, &order(None, false, 3))
        .await
        .unwrap();
    let (phase, why) = m.outcome(&hub, "0.2.0").await;
    assert_eq!(phase, UpdatePhase::RolledBack);
    assert!(why.contains("deadline"), "{why}");
    assert_eq!(m.exe_bytes(), original, "the original binary is back");
    let a = m.wait(&hub, "back online", |a| a.status == "online").await;
    assert_eq!(a.agent_version, RUNNING);
    let actions = hub.audit_actions().await;
    assert!(
        update_actions(&actions).contains(&"agent.update.rolled_back"),
        "{actions:?}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn an_agent_stopped_during_the_trial_comes_back_on_the_previous_binary() {
    let hub = hub().await;
    let (key, _) = SigningKey::generate().unwrap();
    let mut m = Machine::start(&hub, "upd-stopped", Some(&key)).await;
    let original = m.exe_bytes();
    let dud = m.script("dud", "#!/bin/sh\nexec sleep 600\n");
    publish(&hub, &key, &dud, "0.2.0").await;
    hub.admin()
        .update_agent(&m.id, &order(None, false, 60))
        .await
        .unwrap();
    m.wait(&hub, "the trial", |a| {
        a.update
            .as_ref()
            .is_some_and(|u| u.phase == UpdatePhase::Installed)
    })
    .await;
    assert_eq!(m.exe_bytes(), std::fs::read(&dud).unwrap());
    // What a service manager's stop does.
    let pid = m.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut child = m.child.take().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(m.exe_bytes(), original, "the previous binary is back");

    m.spawn();
    let (phase, why) = m.outcome(&hub, "0.2.0").await;
    assert_eq!(phase, UpdatePhase::RolledBack);
    assert!(why.contains("stopped during the trial"), "{why}");
    let a = m.wait(&hub, "back online", |a| a.status == "online").await;
    assert_eq!(a.agent_version, RUNNING);
    hub.stop().await;
}

#[tokio::test]
async fn a_rollout_stops_after_a_failing_wave() {
    let hub = hub().await;
    let (key, _) = SigningKey::generate().unwrap();
    // Waves go in name order: the keyless one fails first.
    let first = Machine::start(&hub, "wave-a", None).await;
    let second = Machine::start(&hub, "wave-b", Some(&key)).await;
    publish(&hub, &key, &second.stand_in("0.2.0"), "0.2.0").await;
    let cli = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(["agents", "update"])
            .args(args)
            .args(["--deadline", "20s", "--hub", &hub.url, "--api-key"])
            .arg(&hub.admin_key)
            .args(["--ca-hash", &hub.ca_hash.to_string()])
            .env("XDG_CONFIG_HOME", first.tmp.path().join("xdg"))
            .current_dir(first.tmp.path());
        // The hub runs on this test's runtime: wait for the CLI off it.
        tokio::task::spawn_blocking(move || c.output().unwrap())
    };
    let out = cli(&["--all", "--max-parallel", "1", "--json"])
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("1 agent(s) left untouched"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcomes"][0]["name"], "wave-a");
    assert_eq!(report["outcomes"][0]["outcome"], "refused");
    assert_eq!(report["untouched"], serde_json::json!(["wave-b"]));
    let b = hub.admin().agent(&second.id).await.unwrap();
    assert!(b.update.is_none(), "{b:?}");

    // An agent with no session is reported, and the command fails.
    let _asleep = enrolled(&hub, "wave-c").await;
    let out = cli(&["wave-c"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stdout.contains("offline"), "{stdout}");
    assert!(stderr.contains("1 agent(s) were offline"), "{stderr}");
    hub.stop().await;
}

#[tokio::test]
async fn muster_update_on_the_machine_checks_and_installs_what_the_hub_offers() {
    let hub = hub().await;
    let (key, _) = SigningKey::generate().unwrap();
    let m = Machine::start(&hub, "upd-local", Some(&key)).await;
    let original = m.exe_bytes();
    let run = |args: &[&str]| {
        let mut c = Command::new(&m.exe);
        for (k, _) in std::env::vars() {
            if k.starts_with("MUSTER_") {
                c.env_remove(k);
            }
        }
        c.arg("update")
            .args(args)
            .arg("--config-dir")
            .arg(m.agent.dir.path())
            .env("MUSTER_TEST_RELEASE_PUBKEY", key.public_key().to_string());
        // The hub runs on this test's runtime: wait for the command off it.
        tokio::task::spawn_blocking(move || c.output().unwrap())
    };
    // Nothing published: the hub offers its own unsigned binary, which is no update.
    let out = run(&["--check"]).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unsigned"),
        "{out:?}"
    );

    let stand_in = m.stand_in("0.2.0");
    publish(&hub, &key, &stand_in, "0.2.0").await;
    let out = run(&["--check", "--json"]).await.unwrap();
    assert_eq!(out.status.code(), Some(10), "{out:?}");
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(check["available"], "0.2.0");
    assert_eq!(check["signed"], true);
    assert_eq!(check["running"], RUNNING);
    assert_eq!(m.exe_bytes(), original, "--check changes nothing");

    let out = run(&[]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("restart the agent"), "{stdout}");
    assert_eq!(m.exe_bytes(), std::fs::read(&stand_in).unwrap());
    assert_eq!(
        std::fs::read(m.exe.with_file_name("muster.previous")).unwrap(),
        original
    );
    let actions = hub.audit_actions().await;
    assert_eq!(
        update_actions(&actions),
        [
            "agent.update.started",
            "agent.update.verified",
            "agent.update.installed"
        ],
        "{actions:?}"
    );
    let a = hub.admin().agent(&m.id).await.unwrap();
    assert_eq!(a.update.unwrap().phase, UpdatePhase::Installed);
    hub.stop().await;
}

#[tokio::test]
async fn the_hub_refuses_orders_it_cannot_carry_out_and_reports_it_cannot_store() {
    let hub = hub().await;
    let (agent, id) = enrolled(&hub, "upd-hub").await;
    let admin = hub.admin();
    // Nothing published for its platform.
    let e = admin.update_agent(&id, &order(None, false, 30)).await;
    assert_eq!(crate::code(e), "no_release");
    let (key, _) = SigningKey::generate().unwrap();
    let file = agent.root().join("release");
    std::fs::write(&file, b"#!/bin/sh\n").unwrap();
    publish(&hub, &key, &file, "0.2.0").await;
    let e = admin
        .update_agent(&id, &order(Some("0.3.0"), false, 30))
        .await;
    assert_eq!(crate::code(e), "no_release");
    // Published, but the agent has no session here.
    let e = admin.update_agent(&id, &order(None, false, 30)).await;
    assert_eq!(crate::code(e), "agent_offline");
    let e = admin.update_agent(&id, &order(None, false, 0)).await;
    assert_eq!(crate::code(e), "invalid_request");
    let e = admin.update_agent("nobody", &order(None, false, 30)).await;
    assert_eq!(crate::code(e), "not_found");
    // An unsigned release is never offered: agents would refuse it anyway.
    let unsigned = muster_release::Manifest {
        signature: String::new(),
        ..key
            .sign_file(&file, "0.4.0", this_os(), this_arch())
            .unwrap()
    };
    // Straight into the directory: the publish route refuses unsigned releases.
    ReleaseDir::new(hub.data_dir.join("releases"))
        .publish(&unsigned, &file)
        .unwrap();
    let e = admin
        .update_agent(&id, &order(Some("0.4.0"), false, 30))
        .await;
    assert_eq!(crate::code(e), "no_release");

    // What the agent may report for itself.
    let me = agent.client();
    let report = |phase, version: &str, message: &str| muster_proto::UpdateReport {
        phase,
        version: version.to_owned(),
        message: message.to_owned(),
    };
    for bad in [
        report(UpdatePhase::Requested, "0.2.0", ""),
        report(UpdatePhase::Started, "0.2.0\u{202E}", ""),
        report(UpdatePhase::Started, "", ""),
    ] {
        let e = me.report_update(&bad).await;
        assert_eq!(crate::code(e), "invalid_request", "{bad:?}");
    }
    me.report_update(&report(UpdatePhase::Failed, "0.2.0", "disk\nfull"))
        .await
        .unwrap();
    let u = admin.agent(&id).await.unwrap().update.unwrap();
    assert_eq!(u.phase, UpdatePhase::Failed);
    assert!(u.message.contains("dropped"), "{u:?}");
    hub.stop().await;
}
