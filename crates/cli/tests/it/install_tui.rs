//! `muster install` as an operator meets it: at a real terminal (a tmux pane,
//! driven key by key and read back from the screen), unattended from flags, and
//! stopped early. Whatever happens before the confirmation enrolls nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use muster_testkit::{Backend, TestHub};

use crate::binary::muster;

const BIN: &str = env!("CARGO_BIN_EXE_muster");
const TMUX: &str = "/usr/bin/tmux";

/// Runs `muster ARGS` with stdin closed (no terminal), off the async runtime so the
/// in-process hub answers.
async fn unattended(cwd: &Path, args: Vec<String>) -> Output {
    let cwd = cwd.to_path_buf();
    tokio::task::spawn_blocking(move || {
        muster(&cwd)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// One tmux server of our own (its own socket), so no other session's environment
/// or settings leak in; killed when dropped.
struct Pane {
    socket: String,
}

impl Pane {
    /// `muster ARGS` in a 120×40 pane, with a clean environment whose PATH starts
    /// with `bin` (fake programs for the detection to find).
    async fn start(tmp: &Path, bin: &Path, args: &[String]) -> Pane {
        let socket = format!("muster-install-{}", uuid::Uuid::new_v4().simple());
        let path = format!("{}:/usr/bin:/bin", bin.display());
        let mut line = format!(
            "env -i PATH={path} HOME={home} TERM=xterm {BIN} install",
            home = tmp.display()
        );
        for a in args {
            line.push(' ');
            line.push_str(a);
        }
        // Keep the pane after the command ends, so its last screen can be read.
        line.push_str("; echo EXIT=$?; sleep 600");
        let pane = Pane { socket };
        pane.tmux(&[
            "new-session",
            "-d",
            "-s",
            "install",
            "-x",
            "120",
            "-y",
            "40",
            &line,
        ])
        .await;
        pane
    }

    async fn tmux(&self, args: &[&str]) -> String {
        let mut full = vec![
            "-L".to_owned(),
            self.socket.clone(),
            "-f".to_owned(),
            "/dev/null".to_owned(),
        ];
        full.extend(args.iter().map(|a| (*a).to_owned()));
        let out =
            tokio::task::spawn_blocking(move || Command::new(TMUX).args(&full).output().unwrap())
                .await
                .unwrap();
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "install"]).await
    }

    /// The screen once it shows `text`, within 30 s.
    async fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen().await;
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} on the screen within 30 s:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` and Enter.
    async fn answer(&self, text: &str) {
        if !text.is_empty() {
            self.tmux(&["send-keys", "-t", "install", "-l", text]).await;
        }
        self.tmux(&["send-keys", "-t", "install", "Enter"]).await;
    }

    async fn keys(&self, key: &str) {
        self.tmux(&["send-keys", "-t", "install", key]).await;
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new(TMUX)
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// A directory with a fake `nginx` and `docker` program.
fn fake_programs(tmp: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = tmp.join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for p in ["nginx", "docker"] {
        std::fs::write(bin.join(p), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(bin.join(p), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn tmux_available() -> bool {
    let there = Path::new(TMUX).exists();
    if !there {
        eprintln!("skipped: {TMUX} is missing (scripts/test-tools installs it)");
    }
    there
}

fn config(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

/// The whole walk at a terminal: hub URL accepted, token typed unseen, name given,
/// the detected software shown with the probes covering it, packs chosen by number,
/// confirmed; the agent is then enrolled with its packs in its config.
#[tokio::test]
async fn a_person_at_a_terminal_is_walked_through_and_enrolled() {
    if !tmux_available() {
        return;
    }
    let hub = TestHub::start(&Backend::Sqlite).await;
    let token = hub.default_token().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    let bin = fake_programs(tmp.path());
    let pane = Pane::start(
        tmp.path(),
        &bin,
        &[
            "--hub".to_owned(),
            hub.url.clone(),
            "--config-dir".to_owned(),
            dir.display().to_string(),
            "--no-service".to_owned(),
        ],
    )
    .await;

    pane.wait_for(&format!("Hub URL [{}]:", hub.url)).await;
    pane.answer("").await;
    pane.wait_for("Enrollment token").await;
    pane.answer(&token).await;
    pane.wait_for("Agent name [").await;
    pane.answer("tui-01").await;
    let screen = pane.wait_for("Packs to enable").await;
    assert!(!screen.contains(&token), "the token was echoed:\n{screen}");
    // The fake programs are found, each with the probes that watch it (with
    // systemd its unit, without it its processes and ports).
    for what in ["nginx", "docker"] {
        let found = format!("found {}", bin.join(what).display());
        assert!(screen.contains(&found), "{screen}");
    }
    assert!(
        screen.contains("system.service unit=nginx") || screen.contains("No systemd here"),
        "{screen}"
    );
    assert!(screen.contains("1) system: info load"), "{screen}");
    pane.answer("1").await;
    pane.wait_for("Go ahead? [Y/n]").await;
    // Nothing is enrolled before the confirmation.
    assert!(hub.admin().agent("tui-01").await.is_err());
    assert!(!dir.join("config.json").exists());
    pane.answer("").await;
    let screen = pane.wait_for("EXIT=").await;
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(screen.contains("Installed: tui-01"), "{screen}");
    assert!(screen.contains("muster status --config-dir"), "{screen}");
    println!("{screen}");

    let agent = hub.admin().agent("tui-01").await.unwrap();
    assert_eq!(agent.name, "tui-01");
    // Every built-in pack chosen: stored as "all", so packs a later version adds
    // are announced too.
    assert!(config(&dir).get("packs").is_none(), "{}", config(&dir));
}

/// Ctrl-D at the token prompt: nothing was changed, nothing enrolled.
#[tokio::test]
async fn the_end_of_input_at_the_token_prompt_changes_nothing() {
    if !tmux_available() {
        return;
    }
    let hub = TestHub::start(&Backend::Sqlite).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    let bin = fake_programs(tmp.path());
    let pane = Pane::start(
        tmp.path(),
        &bin,
        &[
            "--hub".to_owned(),
            hub.url.clone(),
            "--name".to_owned(),
            "eof-01".to_owned(),
            "--config-dir".to_owned(),
            dir.display().to_string(),
            "--no-service".to_owned(),
        ],
    )
    .await;
    pane.wait_for("Hub URL").await;
    pane.answer("").await;
    pane.wait_for("Enrollment token").await;
    pane.keys("C-d").await;
    let screen = pane.wait_for("EXIT=").await;
    assert!(screen.contains("nothing was changed"), "{screen}");
    assert!(!screen.contains("EXIT=0"), "{screen}");
    assert!(hub.admin().agent("eof-01").await.is_err());
    assert!(!dir.join("config.json").exists());
}

/// Ctrl-C at a question: the same, said on the way out.
#[tokio::test]
async fn ctrl_c_at_a_question_changes_nothing() {
    if !tmux_available() {
        return;
    }
    let hub = TestHub::start(&Backend::Sqlite).await;
    let token = hub.default_token().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    let bin = fake_programs(tmp.path());
    let pane = Pane::start(
        tmp.path(),
        &bin,
        &[
            "--hub".to_owned(),
            hub.url.clone(),
            "--token".to_owned(),
            token,
            "--name".to_owned(),
            "intr-01".to_owned(),
            "--config-dir".to_owned(),
            dir.display().to_string(),
        ],
    )
    .await;
    pane.wait_for("Hub URL").await;
    pane.answer("").await;
    pane.wait_for("Agent name").await;
    pane.answer("").await;
    pane.wait_for("Packs to enable").await;
    pane.keys("C-c").await;
    let screen = pane.wait_for("EXIT=").await;
    assert!(screen.contains("nothing was changed"), "{screen}");
    assert!(screen.contains("EXIT=130"), "{screen}");
    assert!(hub.admin().agent("intr-01").await.is_err());
    assert!(!dir.join("config.json").exists());
}

/// With flags and `--yes` and no terminal, nothing is asked and the agent enrolls.
#[tokio::test]
async fn flags_and_yes_install_unattended() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let token = hub.default_token().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    let out = unattended(
        tmp.path(),
        vec![
            "install".into(),
            "--hub".into(),
            hub.url.clone(),
            "--token".into(),
            token,
            "--name".into(),
            "auto-01".into(),
            "--label".into(),
            "role=web".into(),
            "--packs".into(),
            "system".into(),
            "--config-dir".into(),
            dir.display().to_string(),
            "--no-service".into(),
            "--yes".into(),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("Installed: auto-01"), "{stdout}");
    assert!(
        !stdout.contains('\x1b'),
        "colour codes without a terminal: {stdout}"
    );
    let agent = hub.admin().agent("auto-01").await.unwrap();
    assert_eq!(agent.labels.get("role").map(String::as_str), Some("web"));
    // Every built-in pack chosen: stored as "all", so packs a later version adds
    // are announced too.
    assert!(config(&dir).get("packs").is_none(), "{}", config(&dir));
}

/// Unattended without a token: one line saying what is missing and how to get it,
/// a failure status, and nothing enrolled.
#[tokio::test]
async fn unattended_without_a_token_fails_in_one_line() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    let out = unattended(
        tmp.path(),
        vec![
            "install".into(),
            "--hub".into(),
            hub.url.clone(),
            "--name".into(),
            "notoken-01".into(),
            "--config-dir".into(),
            dir.display().to_string(),
            "--no-service".into(),
        ],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--token") && err.contains("muster tokens create"),
        "{err}"
    );
    assert!(hub.admin().agent("notoken-01").await.is_err());
    assert!(!dir.join("config.json").exists());
}
