//! The one-liner (SPEC §10), run as an operator would paste it: the exact sh line
//! the hub printed for a token, under `dash`, installing into a fake root
//! (`MUSTER_ROOT`) from a test hub over real TLS that serves the test build of
//! `muster` as its own binary. Also: the scripts pass shellcheck, dash and busybox;
//! the script under busybox sh with GNU wget; the `release` commands round-trip;
//! the cloud-init and Ansible examples.
//!
//! Needs `dash`, `curl`, `shellcheck` and `busybox` (`scripts/test-tools`, or
//! `apt-get install dash curl shellcheck busybox`): a missing one fails the test
//! with that hint. `sudo` is not under test: when absent, a shim that runs its
//! arguments stands in (the tests run as whoever runs them, in a fake root).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use muster_hub::HubOptions;
use muster_proto::CreateTokenRequest;
use muster_testkit::{Backend, TestHub};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_muster");

/// A tool the tests need, or a failure that says how to get it.
pub(crate) fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: run scripts/test-tools, or apt-get install -y {name}"
            )
        })
}

/// A hub serving the test build of `muster` as the agent for its own platform.
pub(crate) async fn hub_with(tune: impl FnOnce(&mut HubOptions)) -> TestHub {
    TestHub::start_with(&Backend::Sqlite, |o| {
        o.agent_binary = Some(PathBuf::from(BIN));
        tune(o);
    })
    .await
}

/// A fake root the script installs into; stops the agent it started, when dropped.
struct FakeRoot {
    dir: tempfile::TempDir,
    /// PATH for the script: a `sudo` shim first when the machine has none.
    path: String,
}

impl FakeRoot {
    fn new() -> FakeRoot {
        let dir = tempfile::tempdir().unwrap();
        let mut path = std::env::var("PATH").unwrap_or_default();
        if Command::new("sh")
            .args(["-c", "command -v sudo"])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            use std::os::unix::fs::PermissionsExt;
            let shim = dir.path().join("shim");
            std::fs::create_dir(&shim).unwrap();
            std::fs::write(shim.join("sudo"), "#!/bin/sh\nexec \"$@\"\n").unwrap();
            std::fs::set_permissions(shim.join("sudo"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            path = format!("{}:{path}", shim.display());
        }
        std::fs::create_dir(dir.path().join("root")).unwrap();
        FakeRoot { dir, path }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn installed(&self) -> PathBuf {
        self.root().join("usr/local/bin/muster")
    }

    /// Run `line` (plus `extra`) under dash, as a user pastes it.
    fn run(&self, line: &str, extra: &str) -> Output {
        let mut cmd = Command::new(tool("dash"));
        cmd.arg("-c")
            .arg(format!("{line} {extra}"))
            .current_dir(self.dir.path())
            .env("PATH", &self.path)
            .env("MUSTER_ROOT", self.root())
            .env("TMPDIR", self.dir.path())
            .stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("MUSTER_") && k != "MUSTER_ROOT" {
                cmd.env_remove(k);
            }
        }
        cmd.output().unwrap()
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        let pid_file = self.root().join("var/lib/muster-agent.pid");
        if let Ok(pid) = std::fs::read_to_string(pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn sh_line(hub: &TestHub) -> String {
    sh_line_for(hub, 1).await
}

async fn sh_line_for(hub: &TestHub, uses: u32) -> String {
    let t = hub
        .token(CreateTokenRequest {
            max_uses: Some(uses),
            ttl_s: Some(900),
            ..Default::default()
        })
        .await;
    let line = t.install.expect("the hub prints install lines").sh;
    assert!(!line.contains('\n') && !line.contains('|'), "{line}");
    assert!(
        !line.contains(" -k") && !line.contains("insecure"),
        "{line}"
    );
    line
}

/// `muster_agent_downloads_total{result="started"}` from the hub's /metrics.
pub(crate) async fn downloads_started(hub: &TestHub) -> u64 {
    hub.metric("muster_agent_downloads_total{result=\"started\"}")
        .await
        .expect("the download counter is on /metrics") as u64
}

fn agent_id_in(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("muster-install: online: "))
        .unwrap_or_else(|| panic!("no online line in:\n{stdout}"));
    line.rsplit_once('(')
        .and_then(|(_, id)| id.strip_suffix(')'))
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_printed_line_installs_enrolls_and_a_rerun_keeps_the_identity() {
    tool("curl");
    let hub = hub_with(|_| {}).await;
    // Two uses: the first enrollment, and the one after --force.
    let line = sh_line_for(&hub, 2).await;
    let root = FakeRoot::new();

    let first = root.run(&line, "--name web-1 --label env=prod");
    assert!(first.status.success(), "{}", text(&first));
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        stdout.contains("muster-install: online: web-1 ("),
        "{stdout}"
    );
    let id = agent_id_in(&stdout);
    let agent = hub.admin().agent(&id).await.unwrap();
    assert_eq!(agent.name, "web-1");
    assert_eq!(agent.status.to_string(), "online");
    assert_eq!(agent.labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(
        std::fs::read(root.installed()).unwrap(),
        std::fs::read(BIN).unwrap()
    );
    assert_eq!(downloads_started(&hub).await, 1);
    // The service for the target system, naming its own paths (this machine runs no
    // systemd, so the agent also runs in the background for now).
    let unit = std::fs::read_to_string(root.root().join("etc/systemd/system/muster-agent.service"))
        .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/muster agent --config-dir /var/lib/muster-agent\n"),
        "{unit}"
    );
    assert!(stdout.contains("installed the agent service"), "{stdout}");

    // Again, on the enrolled machine: same identity, nothing downloaded again, and
    // the agent started before is replaced (its pid file names the new one).
    let old_pid = std::fs::read_to_string(root.root().join("var/lib/muster-agent.pid")).unwrap();
    let second = root.run(&line, "--name web-1 --label env=prod");
    assert!(second.status.success(), "{}", text(&second));
    let stdout = String::from_utf8_lossy(&second.stdout).into_owned();
    assert_eq!(agent_id_in(&stdout), id, "{stdout}");
    assert!(stdout.contains("is already installed"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "stopped the background agent (pid {})",
            old_pid.trim()
        )),
        "{stdout}"
    );
    assert_eq!(downloads_started(&hub).await, 1);
    assert_eq!(hub.admin().list_agents().await.unwrap().len(), 1);

    // --force starts over: a new agent, the old one unenrolled.
    let third = root.run(&line, "--name web-1 --force");
    assert!(third.status.success(), "{}", text(&third));
    let new_id = agent_id_in(&String::from_utf8_lossy(&third.stdout));
    assert_ne!(new_id, id);
    assert_eq!(
        hub.admin().agent(&id).await.unwrap().status.to_string(),
        "revoked"
    );
    drop(root);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_line_carrying_another_hubs_ca_fetches_nothing() {
    tool("curl");
    let hub = hub_with(|_| {}).await;
    let other = hub_with(|_| {}).await;
    // The other hub's line (its CA), pointed at this hub's address.
    let line = sh_line(&other).await.replace(&other.url, &hub.url);
    assert!(line.contains(&hub.url));
    let root = FakeRoot::new();
    let out = root.run(&line, "");
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("curl"), "{}", text(&out));
    assert!(!root.installed().exists());
    assert!(!root.root().join("usr").exists(), "{}", text(&out));
    assert_eq!(downloads_started(&hub).await, 0);
    other.stop().await;
    hub.stop().await;
}

/// Run the built binary; (success, stdout, stderr).
fn muster(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn release_commands_round_trip_and_a_tampered_binary_is_not_installed() {
    use std::os::unix::fs::PermissionsExt;
    let hub = hub_with(|_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| tmp.path().join(n).display().to_string();

    let (ok, out, err) = muster(&["release", "keygen", "--out", &dir("keys")]);
    assert!(ok, "{err}");
    let pubkey = std::fs::read_to_string(tmp.path().join("keys/release.pub")).unwrap();
    assert!(out.contains(&format!(
        "MUSTER_RELEASE_PUBKEY={} cargo build --release",
        pubkey.trim()
    )));
    let mode = std::fs::metadata(tmp.path().join("keys/release.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second keygen into the same place would lose the first key: refused.
    assert!(!muster(&["release", "keygen", "--out", &dir("keys")]).0);

    // A stand-in binary (it never runs: the script must refuse it first).
    let file = tmp.path().join("muster-9.0.0");
    std::fs::write(&file, vec![7u8; 4096]).unwrap();
    let f = file.display().to_string();
    let (ok, _, err) = muster(&[
        "release",
        "sign",
        "--key",
        &dir("keys/release.key"),
        "--version",
        "9.0.0",
        "--os",
        "linux",
        "--arch",
        "x86_64",
        &f,
    ]);
    assert!(ok, "{err}");
    let manifest = format!("{f}.manifest.json");
    let (ok, out, err) = muster(&[
        "release",
        "verify",
        &f,
        "--manifest",
        &manifest,
        "--pubkey-file",
        &dir("keys/release.pub"),
    ]);
    assert!(ok && out.starts_with("OK: "), "{out}{err}");
    assert!(muster(&["release", "keygen", "--out", &dir("other")]).0);
    let (ok, _, err) = muster(&[
        "release",
        "verify",
        &f,
        "--manifest",
        &manifest,
        "--pubkey-file",
        &dir("other/release.pub"),
    ]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("signature"), "{err}");

    let data = hub.data_dir.display().to_string();
    let (ok, _, err) = muster(&[
        "release",
        "publish",
        &f,
        "--manifest",
        &manifest,
        "--data-dir",
        &data,
    ]);
    assert!(ok, "{err}");
    let (ok, out, _) = muster(&["release", "list", "--data-dir", &data]);
    assert!(
        ok && out.contains("9.0.0") && out.contains("linux/x86_64"),
        "{out}"
    );
    let latest = hub
        .anonymous()
        .release_for("linux", "x86_64", None)
        .await
        .unwrap();
    let signed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(latest.version, "9.0.0");
    assert_eq!(latest.signature, signed["signature"].as_str().unwrap());
    assert!(latest.url.starts_with(&hub.url));

    // One byte of the stored binary flipped: the script downloads it, finds the
    // SHA-256 wrong and installs nothing.
    let stored = hub.data_dir.join("releases/9.0.0/linux-x86_64/muster");
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&stored, bytes).unwrap();
    let root = FakeRoot::new();
    let out = root.run(&sh_line(&hub).await, "");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SHA-256 mismatch"),
        "{}",
        text(&out)
    );
    assert_eq!(downloads_started(&hub).await, 1, "{}", text(&out));
    let bin_dir = root.root().join("usr/local/bin");
    assert!(
        !bin_dir.exists() || std::fs::read_dir(&bin_dir).unwrap().next().is_none(),
        "something was installed"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scripts_pass_shellcheck_dash_and_busybox() {
    let hub = hub_with(|_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let script_for = |query: &'static str| {
        let c = hub.anonymous();
        async move {
            let (status, body) = c.get_raw(&format!("/bootstrap{query}")).await.unwrap();
            (status, String::from_utf8(body).unwrap())
        }
    };
    let (status, sh) = script_for("").await;
    assert_eq!(status, 200);
    let script = tmp.path().join("install.sh");
    std::fs::write(&script, &sh).unwrap();
    for (cmd, args) in [
        (tool("shellcheck"), vec!["-s", "sh"]),
        (tool("dash"), vec!["-n"]),
        (tool("busybox"), vec!["sh", "-n"]),
    ] {
        let out = Command::new(&cmd)
            .args(&args)
            .arg(&script)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", cmd.display(), text(&out));
    }
    // The CA in the script is the hub's, whole, and parses as PEM.
    let ca = std::fs::read_to_string(hub.data_dir.join("ca.pem")).unwrap();
    assert!(sh.contains(ca.trim()));
    assert!(sh.trim_end().ends_with("main \"$@\""));

    // PowerShell cannot run here: its script is checked for what it must carry.
    let (status, ps) = script_for("?os=windows").await;
    assert_eq!(status, 200);
    let hex = hub.ca_hash.to_string().replace("sha256:", "");
    for needle in [
        format!("$HubUrl = '{}'", hub.url),
        format!("$CaHash = '{hex}'"),
        "Get-FileHash -Algorithm SHA256".to_owned(),
        "ServerCertificateValidationCallback".to_owned(),
        "New-Service".to_owned(),
    ] {
        assert!(ps.contains(&needle), "{needle} missing");
    }
    assert!(!ps.contains("@HUB_URL@") && !ps.contains("@CA_HASH_HEX@"));
    assert_eq!(script_for("?os=plan9").await.0, 400);
    hub.stop().await;
}

/// The runcmd block of docs/examples/cloud-init.yaml, with the hub's line pasted
/// in where the file says.
fn cloud_init_command(line: &str) -> String {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/examples/cloud-init.yaml"
    );
    let text = std::fs::read_to_string(file).unwrap();
    let block: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "runcmd:")
        .skip_while(|l| l.trim() != "- |")
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(str::trim)
        .collect();
    assert!(!block.is_empty(), "no runcmd block in {file}");
    assert!(block.join("\n").contains("MUSTER_INSTALL_LINE"));
    block.join("\n").replace("MUSTER_INSTALL_LINE", line)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cloud_init_example_enrolls_a_machine() {
    let hub = hub_with(|_| {}).await;
    let t = hub
        .token(CreateTokenRequest {
            max_uses: Some(50),
            ttl_s: Some(2 * 3600),
            labels: [("fleet".to_owned(), "web".to_owned())].into(),
            ..Default::default()
        })
        .await;
    let root = FakeRoot::new();
    let out = root.run(&cloud_init_command(&t.install.unwrap().sh), "");
    assert!(out.status.success(), "{}", text(&out));
    let id = agent_id_in(&String::from_utf8_lossy(&out.stdout));
    let agent = hub.admin().agent(&id).await.unwrap();
    assert_eq!(agent.labels.get("fleet").map(String::as_str), Some("web"));
    drop(root);
    hub.stop().await;
}

/// docs/examples/ansible/playbook.yml against this machine (connection=local) and a
/// fake root. Needs `ansible-playbook`, which `scripts/test-tools` installs (PyPI
/// ansible-core).
#[tokio::test(flavor = "multi_thread")]
async fn the_ansible_example_enrolls_each_host_once() {
    let ansible = tool("ansible-playbook");
    let hub = hub_with(|_| {}).await;
    let line = sh_line_for(&hub, 5).await;
    let root = FakeRoot::new();
    let dir = root.dir.path();
    std::fs::write(
        dir.join("inventory"),
        "web-7 ansible_connection=local ansible_python_interpreter=python3\n",
    )
    .unwrap();
    let vars = serde_json::json!({
        "muster_install_line": line,
        "muster_root": root.root(),
        // The test runs as whoever runs it; sudo is not under test.
        "ansible_become": false,
    });
    std::fs::write(dir.join("vars.json"), vars.to_string()).unwrap();
    let playbook = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/examples/ansible/playbook.yml"
    );
    let play = || {
        Command::new(&ansible)
            .args(["-i", "inventory", playbook, "-e", "@vars.json"])
            .current_dir(dir)
            .env("PATH", &root.path)
            .env("TMPDIR", dir)
            .env("ANSIBLE_LOCAL_TEMP", dir.join("ansible-tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .output()
            .unwrap()
    };
    let first = play();
    assert!(first.status.success(), "{}", text(&first));
    let agents = hub.admin().list_agents().await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].name, "web-7");
    // Again: the enrolled host is skipped.
    let second = play();
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("changed=0"),
        "{}",
        text(&second)
    );
    drop(root);
    hub.stop().await;
}

/// A PATH holding every program of /usr/bin and /bin but `missing`.
fn path_without(dir: &std::path::Path, missing: &[&str]) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for from in ["/usr/bin", "/bin"] {
        for entry in std::fs::read_dir(from).unwrap().flatten() {
            let name = entry.file_name();
            let to = bin.join(&name);
            if !missing.iter().any(|m| name == *m) && !to.exists() {
                std::os::unix::fs::symlink(entry.path(), to).unwrap();
            }
        }
    }
    bin.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_script_runs_under_busybox_with_gnu_wget_and_refuses_without_a_hash_tool() {
    tool("wget");
    let hub = hub_with(|_| {}).await;
    let (status, script) = hub.anonymous().get_raw("/bootstrap").await.unwrap();
    assert_eq!(status, 200);
    let token = hub.default_token().await;
    let run = |root: &FakeRoot, path: String, shell: &[PathBuf]| {
        let file = root.dir.path().join("install.sh");
        std::fs::write(&file, &script).unwrap();
        let mut cmd = Command::new(&shell[0]);
        cmd.args(&shell[1..])
            .arg(&file)
            .args(["--token", &token])
            .env("PATH", path)
            .env("MUSTER_ROOT", root.root())
            .env("TMPDIR", root.dir.path())
            .stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("MUSTER_") && k != "MUSTER_ROOT" {
                cmd.env_remove(k);
            }
        }
        cmd.output().unwrap()
    };

    // No way to check the download: nothing is fetched, nothing installed.
    let root = FakeRoot::new();
    let path = path_without(
        root.dir.path(),
        &["sha256sum", "shasum", "digest", "sha256"],
    );
    let out = run(&root, path, &[tool("dash")]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no SHA-256 tool"),
        "{}",
        text(&out)
    );
    assert!(!root.root().join("usr").exists());
    assert_eq!(downloads_started(&hub).await, 0);

    // No curl: GNU wget, checking the hub's CA all the same; under busybox sh.
    let root = FakeRoot::new();
    let path = path_without(root.dir.path(), &["curl"]);
    let out = run(&root, path, &[tool("busybox"), PathBuf::from("sh")]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tools: wget, sha256sum"), "{stdout}");
    agent_id_in(&stdout);
    assert_eq!(downloads_started(&hub).await, 1);
    drop(root);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_create_prints_the_three_lines() {
    let hub = hub_with(|_| {}).await;
    let ca_hash = hub.ca_hash.to_string();
    let conn = [
        "--hub",
        hub.url.as_str(),
        "--api-key",
        hub.admin_key.as_str(),
        "--ca-hash",
        ca_hash.as_str(),
    ];
    let (ok, out, err) = muster(&[&["tokens", "create"], &conn[..]].concat());
    assert!(ok, "{err}");
    let sh = out.lines().find(|l| l.contains("&& sudo sh"));
    assert!(
        sh.is_some_and(|l| l.contains("--cacert") && l.contains("--token 'met_")),
        "{out}"
    );
    assert!(
        out.contains("-Token 'met_") && out.contains("muster enroll --hub"),
        "{out}"
    );
    let (ok, out, err) = muster(&[&["tokens", "create", "--json"], &conn[..]].concat());
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    for k in ["sh", "powershell", "enroll"] {
        assert!(
            created["install"][k]
                .as_str()
                .is_some_and(|l| l.contains("met_")),
            "{k}"
        );
    }
    hub.stop().await;
}
