//! Every renderer against its golden file (`MUSTER_UPDATE_GOLDEN=1` rewrites them),
//! paths an attacker or an unlucky admin could choose, and the validators of each
//! format run for real (`scripts/test-tools` installs the missing ones).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::*;

/// A path with every character that needs quoting somewhere: space, both quotes,
/// `$` (sh, systemd), `%` (systemd and SMF specifiers), `&` and `<` (XML), `\`.
const HOSTILE: &str = "it's a \"test\" $HOME %n & <x> \\";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/service/golden")
}

fn golden_name(init: Init) -> &'static str {
    match init {
        Init::Systemd => "muster-agent.service",
        Init::Launchd => "dev.muster.agent.plist",
        Init::FreeBsd => "freebsd.rc",
        Init::NetBsd => "netbsd.rc",
        Init::OpenBsd => "openbsd.rc",
        Init::Smf => "muster-agent.xml",
        Init::Windows => "install-service.ps1",
    }
}

/// What the bootstrap installs: root-owned config dir, binary in /usr/local/bin.
fn bootstrap_spec(init: Init) -> ServiceSpec {
    if init == Init::Windows {
        ServiceSpec::new(
            PathBuf::from(r"C:\Program Files\Muster\muster.exe"),
            PathBuf::from(r"C:\ProgramData\Muster"),
            None,
        )
    } else {
        ServiceSpec::new(
            PathBuf::from("/usr/local/bin/muster"),
            PathBuf::from("/var/lib/muster-agent"),
            None,
        )
    }
}

#[test]
fn every_renderer_matches_its_golden_file() {
    let update = std::env::var_os("MUSTER_UPDATE_GOLDEN").is_some();
    let mut differ = Vec::new();
    for init in Init::ALL {
        let text = render(init, &bootstrap_spec(init), true).unwrap();
        let path = golden_dir().join(golden_name(init));
        if update {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if want != text {
            differ.push(format!("{}:\n{text}", path.display()));
        }
    }
    assert!(
        differ.is_empty(),
        "rendered text differs from the golden file (MUSTER_UPDATE_GOLDEN=1 rewrites them after review):\n{}",
        differ.join("\n")
    );
}

/// A validator this test needs; missing is a failure that says how to get it.
fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    let hint = match name {
        "shellcheck" | "busybox" | "xmllint" => "run scripts/test-tools, which installs it",
        "systemd-analyze" => "install the systemd package (scripts/test-tools does not)",
        _ => "install it (scripts/test-tools covers shellcheck, busybox and xmllint only)",
    };
    assert!(found, "{name} is not installed: {hint}");
    Command::new(name)
}

fn run_with_stdin(mut cmd: Command, input: &str) -> Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn assert_ok(what: &str, out: &Output, text: &str) {
    assert!(
        out.status.success(),
        "{what} rejected:\n{}{}\n--- text ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn hostile_spec(tmp: &Path, user: Option<User>) -> ServiceSpec {
    let dir = tmp.join(HOSTILE);
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    let binary = dir.join("muster");
    std::fs::copy("/bin/true", &binary).unwrap();
    ServiceSpec::new(binary, dir.join("conf"), user)
}

fn ann() -> Option<User> {
    Some(User {
        uid: 1000,
        gid: 1000,
        name: Some("ann".to_owned()),
    })
}

/// `systemd-analyze verify` accepts the unit with no complaint about it (it exits 0
/// even for settings it ignores, so its messages are read too). It needs the
/// binary to exist: the hostile path holds a real one.
pub fn verify_unit(unit: &Path) {
    let out = tool("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .unwrap();
    let messages = String::from_utf8_lossy(&out.stderr);
    let name = unit.file_name().unwrap().to_string_lossy();
    let about_ours: Vec<&str> = messages.lines().filter(|l| l.contains(&*name)).collect();
    assert!(
        out.status.success() && about_ours.is_empty(),
        "systemd-analyze verify: {messages}"
    );
}

/// The config dir may hold anything; the binary only what systemd runs (it
/// refuses quotes and backslashes in an executable path, so we refuse them first).
#[test]
fn systemd_accepts_the_unit_for_a_hostile_path() {
    let tmp = tempfile::tempdir().unwrap();
    for user in [None, ann()] {
        let mut spec = hostile_spec(tmp.path(), user);
        let err = render(Init::Systemd, &spec, true).unwrap_err().to_string();
        assert!(err.contains("systemd cannot run a program"), "{err}");
        let bin_dir = tmp.path().join("bin $HOME %n & <x>");
        std::fs::create_dir_all(&bin_dir).unwrap();
        spec.binary = bin_dir.join("muster");
        std::fs::copy("/bin/true", &spec.binary).unwrap();
        let unit = tmp.path().join(systemd::UNIT);
        std::fs::write(&unit, render(Init::Systemd, &spec, true).unwrap()).unwrap();
        verify_unit(&unit);
    }
}

#[test]
fn the_plist_parses_and_its_arguments_are_the_paths_as_given() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = hostile_spec(tmp.path(), ann());
    let text = render(Init::Launchd, &spec, true).unwrap();
    let mut py = tool("python3");
    py.args([
        "-c",
        "import json, plistlib, sys\n\
         d = plistlib.loads(sys.stdin.buffer.read())\n\
         print(json.dumps([d['Label'], d['ProgramArguments'], d['KeepAlive'], d['ThrottleInterval'], d['UserName']]))",
    ]);
    let out = run_with_stdin(py, &text);
    assert_ok("plistlib", &out, &text);
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut args = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        launchd::wrapper(3),
        spec.binary.display().to_string(),
    ];
    args.extend(spec.args());
    assert_eq!(
        got,
        serde_json::json!([
            "dev.muster.agent",
            args,
            {"SuccessfulExit": false},
            10,
            "ann"
        ])
    );
}

/// The launchd and SMF wrappers run the agent with its arguments intact, map the
/// revoked status to "stay stopped" and keep any other status.
#[test]
fn the_wrappers_pass_arguments_and_spare_the_revoked_status() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = hostile_spec(tmp.path(), None);
    let log = tmp.path().join("args");
    // A stand-in agent: records its arguments, exits with the status it is given.
    std::fs::write(
        &spec.binary,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\nexit \"$STATUS\"\n",
            log.display()
        ),
    )
    .unwrap();
    chmod_x(&spec.binary);
    let want: String = spec.args().iter().map(|a| format!("{a}\n")).collect();
    for (status, launchd_exit) in [(3, 0), (1, 1), (0, 0)] {
        let mut sh = tool("dash");
        sh.args(["-c", &launchd::wrapper(3)])
            .arg(&spec.binary)
            .args(spec.args())
            .env("STATUS", status.to_string());
        let out = sh.output().unwrap();
        assert_eq!(out.status.code(), Some(launchd_exit), "{out:?}");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), want);
    }
    // SMF: on the revoked status it calls svcadm (absent here) and exits 0.
    let mut sh = tool("dash");
    sh.args(["-c", &smf::wrapper(0, 3)])
        .arg(&spec.binary)
        .args(spec.args())
        .env("STATUS", "3");
    assert_eq!(sh.output().unwrap().status.code(), Some(0));
}

fn chmod_x(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The rc.d loop as the scripts start it: restarts after a failure, stops for
/// good on the revoked status, and passes the hostile path through intact.
#[test]
fn the_rc_loop_restarts_after_a_failure_but_not_after_the_revoked_status() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = hostile_spec(tmp.path(), None);
    let runs = tmp.path().join("runs");
    // First run fails (1), the second is revoked (3); a third must never happen.
    std::fs::write(
        &spec.binary,
        format!(
            "#!/bin/sh\nprintf '%s|' \"$@\" >> '{runs}'\necho >> '{runs}'\n\
             if [ $(wc -l < '{runs}') -eq 1 ]; then exit 1; fi\nexit 3\n",
            runs = runs.display()
        ),
    )
    .unwrap();
    chmod_x(&spec.binary);
    let line: String = spec.args().iter().map(|a| format!("{a}|")).collect();
    let line = format!("{line}\n");
    for shell in ["dash", "busybox"] {
        let _ = std::fs::remove_file(&runs);
        let out = run_loop(shell, &spec);
        assert_eq!(out.status.code(), Some(3), "{shell}: {out:?}");
        assert_eq!(
            std::fs::read_to_string(&runs).unwrap(),
            line.repeat(2),
            "{shell}"
        );
    }

    // An agent that always fails is started `burst` times, then left stopped
    // with its last status, as systemd's start limit would.
    std::fs::write(
        &spec.binary,
        format!("#!/bin/sh\necho run >> '{}'\nexit 7\n", runs.display()),
    )
    .unwrap();
    for shell in ["dash", "busybox"] {
        let _ = std::fs::remove_file(&runs);
        let out = run_loop(shell, &spec);
        assert_eq!(out.status.code(), Some(7), "{shell}: {out:?}");
        assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n".repeat(5));
    }
}

/// The rc.d loop as the scripts start it, with no pause between restarts.
fn run_loop(shell: &str, spec: &ServiceSpec) -> Output {
    let policy = RestartPolicy {
        delay_s: 0,
        ..spec.restart.clone()
    };
    let script = format!(
        "{n}_loop={}\n{}\n",
        sh_quote(&rcd::supervisor(&policy)),
        rcd::loop_command(spec),
        n = rcd::NAME
    );
    let mut sh = tool(shell);
    if shell == "busybox" {
        sh.arg("sh");
    }
    sh.args(["-c", &script]).output().unwrap()
}

#[test]
fn the_rc_scripts_pass_sh_n_and_shellcheck() {
    let tmp = tempfile::tempdir().unwrap();
    let specs = [
        bootstrap_spec(Init::FreeBsd),
        hostile_spec(tmp.path(), None),
    ];
    for spec in &specs {
        for (init, shell) in [
            (Init::FreeBsd, "sh"),
            (Init::NetBsd, "sh"),
            (Init::OpenBsd, "ksh"),
        ] {
            let text = render(init, spec, true).unwrap();
            let file = tmp.path().join(format!("{}.rc", init.name()));
            std::fs::write(&file, &text).unwrap();
            assert_ok(
                "dash -n",
                &tool("dash").arg("-n").arg(&file).output().unwrap(),
                &text,
            );
            assert_ok(
                "busybox sh -n",
                &tool("busybox")
                    .args(["sh", "-n"])
                    .arg(&file)
                    .output()
                    .unwrap(),
                &text,
            );
            // rc.subr, which the scripts source, reads the variables they set
            // (SC2034) and defines the ones they read (SC2154); it is not here
            // (SC1091). The loop is single-quoted on purpose: the sh that runs it
            // expands it (SC2016). OpenBSD's values are quoted twice, which looks
            // like a mistake to shellcheck (SC1003); the test below runs them.
            let out = tool("shellcheck")
                .args(["-s", shell, "-e", "SC1003,SC1091,SC2016,SC2034,SC2154"])
                .arg(&file)
                .output()
                .unwrap();
            assert_ok(&format!("shellcheck ({})", init.name()), &out, &text);
        }
    }
    // A user name is quoted too.
    let mut spec = hostile_spec(tmp.path(), None);
    spec.user = Some(User {
        uid: 1000,
        gid: 1000,
        name: Some("a b".to_owned()),
    });
    let text = render(Init::FreeBsd, &spec, true).unwrap();
    assert!(text.contains("-u 'a b' "), "{text}");
}

/// OpenBSD's rc.subr runs `su … -c "${daemon} ${daemon_flags}"`: a second sh
/// parses the values, which must then give back the binary and its arguments.
#[test]
fn openbsd_values_survive_the_second_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = hostile_spec(tmp.path(), None);
    let text = render(Init::OpenBsd, &spec, true).unwrap();
    let assignments: String = text
        .lines()
        .filter(|l| l.starts_with("daemon=") || l.starts_with("daemon_flags="))
        .map(|l| format!("{l}\n"))
        .collect();
    let script =
        format!("{assignments}exec sh -c \"printf '%s\\n' ${{daemon}} ${{daemon_flags}}\"");
    let out = tool("dash").args(["-c", &script]).output().unwrap();
    assert_ok("dash", &out, &script);
    let mut want = vec![spec.binary.display().to_string()];
    want.extend(spec.args());
    let want: String = want.iter().map(|w| format!("{w}\n")).collect();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
}

#[test]
fn the_smf_manifest_is_well_formed_xml_with_the_exec_line_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    for spec in [bootstrap_spec(Init::Smf), hostile_spec(tmp.path(), ann())] {
        let text = render(Init::Smf, &spec, true).unwrap();
        let file = tmp.path().join("muster-agent.xml");
        std::fs::write(&file, &text).unwrap();
        let out = tool("xmllint").arg("--noout").arg(&file).output().unwrap();
        assert_ok("xmllint --noout", &out, &text);
        // The exec attribute, read back by an XML parser, then the `%%` svc.startd
        // turns into `%`, is the sh command line that runs the binary.
        let mut py = tool("python3");
        py.args([
            "-c",
            "import sys, xml.etree.ElementTree as E\n\
             r = E.parse(sys.argv[1]).getroot()\n\
             print([m.get('exec') for m in r.iter('exec_method') if m.get('name') == 'start'][0])",
        ])
        .arg(&file);
        let out = py.output().unwrap();
        assert_ok("python3 xml", &out, &text);
        let exec = String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .replace("%%", "%");
        let mut words = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            sh_quote(&smf::wrapper(10, 3)),
            sh_quote(&spec.binary.display().to_string()),
        ];
        words.extend(spec.args().iter().map(|a| sh_quote(a)));
        assert_eq!(exec, words.join(" "));
    }
}

/// sh_quote round-trips through a real shell.
#[test]
fn sh_quoting_survives_a_real_shell() {
    for s in [HOSTILE, "", "plain/path", "a'b", "'", "x\ny"] {
        let out = tool("dash")
            .args(["-c", &format!("printf %s {}", sh_quote(s))])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
    }
}

#[test]
fn windows_quoting_follows_the_command_line_rules() {
    use windows::{argument, ps_quote};
    // CommandLineToArgvW: backslashes are literal except before a quote.
    assert_eq!(argument(r"C:\ProgramData\Muster"), r"C:\ProgramData\Muster");
    assert_eq!(argument(r"C:\My Data\m"), r#""C:\My Data\m""#);
    assert_eq!(argument(r"C:\My Data\"), r#""C:\My Data\\""#);
    assert_eq!(argument(r#"a "b" c"#), r#""a \"b\" c""#);
    assert_eq!(argument(r#"a\"b"#), r#""a\\\"b""#);
    assert_eq!(argument(""), r#""""#);
    assert_eq!(ps_quote("it's"), "'it''s'");
    assert_eq!(ps_quote("a\u{2019}b $x"), "'a\u{2019}\u{2019}b $x'");
    let spec = ServiceSpec::new(
        PathBuf::from(r"C:\Program Files\M & M\muster.exe"),
        PathBuf::from(r"C:\Users\O'Brien\muster dir\"),
        None,
    );
    let text = render(Init::Windows, &spec, false).unwrap();
    assert!(
        text.contains(
            r#"-BinaryPathName '"C:\Program Files\M & M\muster.exe" agent --config-dir "C:\Users\O''Brien\muster dir\\"'"#
        ),
        "{text}"
    );
    assert!(!text.contains("Start-Service"), "--no-start: {text}");
}

#[test]
fn xml_escaping() {
    assert_eq!(
        xml_escape(r#"<a & "b" 'c'>"#),
        "&lt;a &amp; &quot;b&quot; 'c'&gt;"
    );
    assert_eq!(xml_text(r#"<a & "b">"#), "&lt;a &amp; \"b\"&gt;");
}

#[test]
fn auto_detection_by_os() {
    assert_eq!(Init::detect("macos", None).unwrap(), Init::Launchd);
    assert_eq!(Init::detect("freebsd", None).unwrap(), Init::FreeBsd);
    assert_eq!(Init::detect("netbsd", None).unwrap(), Init::NetBsd);
    assert_eq!(Init::detect("openbsd", None).unwrap(), Init::OpenBsd);
    assert_eq!(Init::detect("illumos", None).unwrap(), Init::Smf);
    assert_eq!(Init::detect("windows", None).unwrap(), Init::Windows);
    assert_eq!(
        Init::detect("linux", Some(Path::new("/img"))).unwrap(),
        Init::Systemd
    );
    let systemd_runs = Path::new("/run/systemd/system").is_dir();
    assert_eq!(Init::detect("linux", None).is_ok(), systemd_runs);
    let err = Init::detect("haiku", None).unwrap_err().to_string();
    assert!(
        err.contains("no supported service manager") && err.contains("muster agent --config-dir"),
        "{err}"
    );
    assert_eq!(Init::parse("auto").unwrap(), None);
    assert_eq!(Init::parse("smf").unwrap(), Some(Init::Smf));
    assert!(Init::parse("upstart").is_err());
}

#[test]
fn the_config_dirs_owner_runs_the_agent() {
    let spec = ServiceSpec::new(
        PathBuf::from("/usr/bin/muster"),
        PathBuf::from("/home/ann/.muster"),
        Some(User {
            uid: 1000,
            gid: 100,
            name: Some("ann".to_owned()),
        }),
    );
    let unit = systemd::render(&spec);
    assert!(unit.contains("User=1000\nGroup=100\n"), "{unit}");
    assert!(unit.contains("ProtectHome=read-only\n"), "{unit}");
    assert!(
        render(Init::Launchd, &spec, true)
            .unwrap()
            .contains("<key>UserName</key>\n\t<string>ann</string>")
    );
    assert!(
        render(Init::FreeBsd, &spec, true)
            .unwrap()
            .contains("-u ann ")
    );
    assert!(
        render(Init::OpenBsd, &spec, true)
            .unwrap()
            .contains("daemon_user=ann\n")
    );
    assert!(
        render(Init::Smf, &spec, true)
            .unwrap()
            .contains("user=\"ann\"")
    );
    // NetBSD's script cannot switch users; a user without a name cannot be named.
    assert!(render(Init::NetBsd, &spec, true).is_err());
    let nameless = ServiceSpec {
        user: Some(User {
            uid: 1000,
            gid: 100,
            name: None,
        }),
        ..spec
    };
    let err = render(Init::Launchd, &nameless, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("uid 1000"), "{err}");
    assert!(render(Init::Systemd, &nameless, true).is_ok());
}

#[test]
fn systemd_quoting_and_confinement_follow_the_config_dir() {
    let spec =
        |bin: &str, dir: &str| ServiceSpec::new(PathBuf::from(bin), PathBuf::from(dir), None);
    let text = systemd::render(&spec("/opt/m%1/muster", "/srv/a $b%c"));
    assert!(
        text.contains("ExecStart=/opt/m%%1/muster agent --config-dir \"/srv/a $$b%%c\"\n"),
        "{text}"
    );
    // Root updates itself: the binary's directory is writable too (SPEC §10).
    assert!(
        text.contains("ReadWritePaths=\"/srv/a $b%%c\" /opt/m%%1\n"),
        "{text}"
    );
    assert!(!text.contains("User="), "root needs no User=");
    let owner = Some(User {
        uid: 1000,
        gid: 100,
        name: None,
    });
    let text = systemd::render(&ServiceSpec::new(
        PathBuf::from("/usr/bin/muster"),
        PathBuf::from("/home/ann/.muster"),
        owner,
    ));
    assert!(
        text.contains("ReadWritePaths=/home/ann/.muster\n"),
        "{text}"
    );
    let text = systemd::render(&spec("/usr/bin/muster", "/var/lib/muster"));
    assert!(text.contains("ProtectHome=yes\n"), "{text}");
    assert!(text.contains("PrivateTmp=yes\n"), "{text}");
    let text = systemd::render(&spec("/usr/bin/muster", "/tmp/m"));
    assert!(text.contains("PrivateTmp=no\n"), "{text}");
}
