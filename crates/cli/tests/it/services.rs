//! `muster agent install-service` / `uninstall-service` as the built binary runs
//! them: the exact command line the bootstrap script uses under `MUSTER_ROOT`,
//! `--print` for every init system, the one-line refusals, and the systemd units
//! shipped in `packaging/` (checked by `systemd-analyze verify`).

use std::path::{Path, PathBuf};
use std::process::Output;

use muster_agent::configdir::{AgentConfig, ConfigDir, Credentials};

use crate::binary::{muster, ok};

const BIN: &str = env!("CARGO_BIN_EXE_muster");

fn one_error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

/// An identity in `dir` (install-service checks that one is there, not its contents).
fn enrolled(dir: &Path) {
    ConfigDir::new(dir)
        .store(&Credentials {
            config: AgentConfig {
                hub_url: "https://hub.example:8443".into(),
                hub_urls: Vec::new(),
                agent_id: "a1".into(),
                agent_name: "web-01".into(),
                agent_key: "mag_x".into(),
                ca_hash: "sha256:00".into(),
                heartbeat_interval_s: 30,
                enrolled_at: "2025-01-01T00:00:00Z".into(),
                generation: 1,
                packs: None,
            },
            key_pem: "k".into(),
            cert_pem: "c".into(),
            ca_pem: "ca".into(),
        })
        .unwrap();
}

/// The bootstrap's line under `MUSTER_ROOT`: the identity is looked for under the
/// root, the unit names the target's paths, nothing is called; then removed.
#[test]
fn the_bootstrap_command_line_installs_under_a_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let install = |root: &Path| {
        muster(tmp.path())
            .args(["agent", "install-service", "--root"])
            .arg(root)
            .args([
                "--config-dir",
                "/var/lib/muster-agent",
                "--binary",
                "/usr/local/bin/muster",
                "--init",
                "auto",
            ])
            .output()
            .unwrap()
    };

    // Not enrolled under the root: one line, nothing written.
    let err = one_error_line(&install(&root));
    assert!(err.contains("not enrolled"), "{err}");
    assert!(!root.join("etc").exists(), "nothing written");

    enrolled(&root.join("var/lib/muster-agent"));
    let said = ok(install(&root));
    let unit = root.join("etc/systemd/system/muster-agent.service");
    assert_eq!(
        said.trim(),
        format!("systemd service installed and enabled: {}", unit.display())
    );
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "ExecStart=/usr/local/bin/muster agent --config-dir /var/lib/muster-agent",
        "ReadWritePaths=/var/lib/muster-agent /usr/local/bin",
        "RestartPreventExitStatus=3",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    let link = root.join("etc/systemd/system/multi-user.target.wants/muster-agent.service");
    assert!(std::fs::symlink_metadata(&link).is_ok());

    let out = muster(tmp.path())
        .args(["agent", "uninstall-service", "--init", "auto", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(ok(out).contains("removed"));
    assert!(!unit.exists() && std::fs::symlink_metadata(&link).is_err());
}

/// `--print` renders for any init system, with no identity and nothing written.
#[test]
fn print_renders_every_init_system_without_an_identity() {
    let tmp = tempfile::tempdir().unwrap();
    for (init, marker) in [
        (
            "systemd",
            "ExecStart=/usr/bin/muster agent --config-dir /nowhere",
        ),
        ("launchd", "<string>dev.muster.agent</string>"),
        ("freebsd", "/usr/sbin/daemon -f -P"),
        ("netbsd", "$_rc_subr_loaded . /etc/rc.subr"),
        ("openbsd", "daemon_flags='agent --config-dir /nowhere'"),
        ("smf", "<service name=\"site/muster-agent\""),
        ("windows", "New-Service -Name 'muster-agent'"),
    ] {
        let out = muster(tmp.path())
            .args(["agent", "install-service", "--print", "--init", init])
            .args(["--binary", "/usr/bin/muster", "--config-dir", "/nowhere"])
            .output()
            .unwrap();
        let text = ok(out);
        assert!(text.contains(marker), "{init}: no {marker:?} in\n{text}");
    }
    let entries: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(entries.is_empty(), "nothing written: {entries:?}");
}

/// Without a root, only this OS's own service manager is ever called, and a
/// Linux without systemd running is told what to do instead.
#[test]
fn without_a_root_the_refusals_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("id");
    enrolled(&dir);
    let run = |init: &str| {
        muster(tmp.path())
            .args(["agent", "install-service", "--init", init, "--config-dir"])
            .arg(&dir)
            .args(["--binary", BIN])
            .output()
            .unwrap()
    };
    let err = one_error_line(&run("smf"));
    assert!(
        err.contains("is not this machine's service manager"),
        "{err}"
    );
    if !Path::new("/run/systemd/system").exists() {
        let err = one_error_line(&run("auto"));
        assert!(
            err.contains("no supported service manager found")
                && err.contains("muster agent --config-dir"),
            "{err}"
        );
    }
    let err = one_error_line(&run("upstart"));
    assert!(err.contains("upstart"), "{err}");
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The units the packages ship pass `systemd-analyze verify`; it needs the
/// program to exist, so `/usr/bin/muster` is pointed at the test binary.
#[test]
fn the_packaged_units_pass_systemd_analyze_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = repo().join("packaging/deb");
    let mut units = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "service") {
            continue;
        }
        units += 1;
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/bin/muster", BIN);
        let unit = tmp.path().join(path.file_name().unwrap());
        std::fs::write(&unit, &text).unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .expect("systemd-analyze (package systemd) is needed to verify the units");
        let messages = String::from_utf8_lossy(&out.stderr);
        let name = unit.file_name().unwrap().to_string_lossy().into_owned();
        let about_ours: Vec<&str> = messages.lines().filter(|l| l.contains(&name)).collect();
        assert!(
            out.status.success() && about_ours.is_empty(),
            "{name}: {messages}"
        );
    }
    assert!(units > 0, "no unit in {}", dir.display());
}
