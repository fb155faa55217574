//! Env-file mode (SPEC §8): every row of its behaviour.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use muster_agent::envfile::{EnvFileOptions, prepare};
use muster_testkit::{TestAgent, TestHub};

use crate::each_backend;

fn options(path: &Path, agent: &TestAgent) -> EnvFileOptions {
    EnvFileOptions {
        path: path.to_path_buf(),
        work_dir: Some(agent.root().join("work")),
        fact_sources: agent.fact_sources(),
    }
}

fn values(path: &Path) -> std::collections::BTreeMap<String, String> {
    muster_agent::envfile::EnvFile::read(path).unwrap().values()
}

#[tokio::test]
async fn a_token_enrolls_once_and_a_saved_key_skips_enrollment() {
    each_backend(|b| async move {
        let hub = TestHub::start(&b).await;
        let agent = TestAgent::new("container-1");
        let token = hub.default_token().await;
        let path = agent.root().join("agent.env");
        std::fs::write(
            &path,
            format!("# sensor\nMUSTER_HUB_URL={}\nMUSTER_ENROLL_TOKEN={token}\nMUSTER_AGENT_NAME=sensor-a\n", hub.url),
        )
        .unwrap();
        prepare(&options(&path, &agent), &agent.dir).await.unwrap();
        let saved = values(&path);
        let id = saved.get("MUSTER_AGENT_ID").cloned().unwrap();
        let key = saved.get("MUSTER_AGENT_KEY").cloned().unwrap();
        assert!(key.starts_with("mag_"));
        assert!(!saved.contains_key("MUSTER_ENROLL_TOKEN"), "the consumed token is commented out");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# sensor\n") && text.contains("# consumed by agent"), "{text}");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(hub.admin().agent(&id).await.unwrap().name, "sensor-a");

        // The container restarts: new working dir, same env file. No enrollment, no
        // token: the saved key fetches a certificate for a new key pair.
        let restarted = TestAgent::new("container-1");
        prepare(&options(&path, &restarted), &restarted.dir).await.unwrap();
        assert_eq!(values(&path).get("MUSTER_AGENT_KEY"), Some(&key), "the key stays the same");
        let creds = restarted.dir.load().unwrap().unwrap();
        assert_eq!(creds.config.agent_id, id);
        let running = restarted.run();
        hub.wait_status(&id, "online", Duration::from_secs(5)).await;
        running.stop().await.unwrap();
        assert_eq!(hub.admin().list_agents().await.unwrap().len(), 1);
        assert_eq!(hub.admin().list_tokens().await.unwrap()[0].uses, 1);
        hub.stop().await;
    })
    .await;
}

/// Makes a directory immutable (even root cannot create files in it) until dropped.
struct Immutable(PathBuf);

impl Immutable {
    fn new(dir: &Path) -> Option<Self> {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Immutable(dir.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn an_unwritable_env_file_leaves_the_agent_running_in_memory() {
    let hub = TestHub::start(&muster_testkit::Backend::Sqlite).await;
    let agent = TestAgent::new("readonly-fs");
    let token = hub.default_token().await;
    let dir = agent.root().join("ro");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("agent.env");
    let original = format!("MUSTER_HUB_URL={}\nMUSTER_ENROLL_TOKEN={token}\n", hub.url);
    std::fs::write(&path, &original).unwrap();
    let Some(_lock) = Immutable::new(&dir) else {
        panic!("chattr +i is needed for this test (ext4 or similar)");
    };
    prepare(&options(&path, &agent), &agent.dir).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        original,
        "the file could not change"
    );
    let id = agent.dir.load().unwrap().unwrap().config.agent_id;
    let running = agent.run();
    hub.wait_status(&id, "online", Duration::from_secs(5)).await;
    running.stop().await.unwrap();
    hub.stop().await;
}

#[tokio::test]
async fn the_binary_creates_the_env_file_and_refuses_clearly() {
    let hub = TestHub::start(&muster_testkit::Backend::Sqlite).await;
    let token = hub.default_token().await;
    let tmp = tempfile::tempdir().unwrap();
    let run = |file: &Path, vars: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_muster"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MUSTER_")) {
            cmd.env_remove(k);
        }
        cmd.args(["agent", "--env-file"])
            .arg(file)
            .envs(vars.iter().copied());
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    // Token and hub from the environment; the file and its parent dirs are created.
    let file = tmp.path().join("state/deep/agent.env");
    let mut child = run(
        &file,
        &[
            ("MUSTER_HUB_URL", &hub.url),
            ("MUSTER_ENROLL_TOKEN", &token),
        ],
    )
    .spawn()
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !values_of(&file).contains_key("MUSTER_AGENT_KEY") {
        assert!(std::time::Instant::now() < deadline, "env file not written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = values_of(&file).get("MUSTER_AGENT_ID").cloned().unwrap();
    hub.wait_status(&id, "online", Duration::from_secs(5)).await;
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());

    // Neither a key nor a token: a clear line, non-zero.
    let empty = tmp.path().join("empty.env");
    std::fs::write(&empty, format!("MUSTER_HUB_URL={}\n", hub.url)).unwrap();
    let out = run(&empty, &[]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("neither MUSTER_AGENT_KEY"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The hub unreachable at first enrollment: a clear line, non-zero.
    let away = tmp.path().join("away.env");
    std::fs::write(
        &away,
        format!("MUSTER_HUB_URL=https://127.0.0.1:1\nMUSTER_ENROLL_TOKEN={token}\n"),
    )
    .unwrap();
    let out = run(&away, &[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the hub"), "{err}");
    hub.stop().await;
}

fn values_of(path: &Path) -> std::collections::BTreeMap<String, String> {
    if path.exists() {
        values(path)
    } else {
        Default::default()
    }
}
