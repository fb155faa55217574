//! The built binary's command line: which commands take the admin connection
//! flags and where, that no flag is silently dropped, and that errors are one line.
//! Each case runs the real `muster` against an in-process hub on a blocking thread.

use std::process::Output;

use muster_testkit::{Backend, TestHub};

use crate::binary::{muster, ok};

/// Runs `muster ARGS` in a fresh directory (no profile, no local hub), off the
/// async runtime so the in-process hub can answer.
pub(crate) async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let cwd = tempfile::tempdir().unwrap();
        muster(cwd.path()).args(&args).output().unwrap()
    })
    .await
    .unwrap()
}

pub(crate) fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

fn one_error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[tokio::test]
async fn admin_connection_flags_go_before_or_after_the_command_name() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let hash = hub.ca_hash.to_string();
    let conn = [
        "--hub",
        &hub.url,
        "--api-key",
        &hub.admin_key,
        "--ca-hash",
        &hash,
    ];
    for args in [
        [&conn[..], &["tokens", "list", "--json"]].concat(),
        [&["tokens", "list", "--json"], &conn[..]].concat(),
        [&["tokens"], &conn[..], &["list", "--json"]].concat(),
    ] {
        let out = ok(run(strings(&args)).await);
        assert!(out.trim_start().starts_with('['), "{args:?}: {out}");
    }
    // A flag before the name wins over the environment's value after it.
    let args = strings(&[&conn[..], &["tokens", "list"]].concat());
    let out = tokio::task::spawn_blocking(move || {
        let cwd = tempfile::tempdir().unwrap();
        muster(cwd.path())
            .args(&args)
            .env("MUSTER_HUB_URL", "https://127.0.0.1:1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    ok(out);
    hub.stop().await;
}

#[tokio::test]
async fn commands_that_are_not_admin_commands_refuse_the_admin_flags() {
    // Before the name: refused by muster, in one line.
    let err = one_error_line(
        &run(strings(&[
            "--api-key",
            "mak_x",
            "status",
            "--config-dir",
            "/nonexistent",
        ]))
        .await,
    );
    assert!(err.contains("admin commands"), "{err}");
    // After the name of a command that has no such flag: refused by the parser.
    let out = run(strings(&["status", "--api-key", "mak_x"])).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--api-key"),
        "{out:?}"
    );
}

#[tokio::test]
async fn enroll_uses_the_api_key_it_is_given() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent").display().to_string();
    let hash = hub.ca_hash.to_string();
    // Without a credential this enrollment would wait for approval (exit 4); with
    // the admin key, whether spelled --key or --api-key, it is done at once.
    for (flag, name) in [("--api-key", "by-api-key"), ("--key", "by-key")] {
        let out = run(strings(&[
            "enroll",
            "--hub",
            &hub.url,
            flag,
            &hub.admin_key,
            "--ca-hash",
            &hash,
            "--name",
            name,
            "--config-dir",
            &format!("{config}-{name}"),
        ]))
        .await;
        assert!(ok(out).contains(&format!("Enrolled {name}")));
    }
    let names: Vec<String> = hub
        .admin()
        .list_agents()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert!(names.contains(&"by-api-key".to_owned()), "{names:?}");
    // A wrong key is refused, not ignored into the approval queue.
    let err = one_error_line(
        &run(strings(&[
            "enroll",
            "--hub",
            &hub.url,
            "--api-key",
            "mak_not-a-real-key",
            "--ca-hash",
            &hash,
            "--config-dir",
            &format!("{config}-wrong"),
        ]))
        .await,
    );
    assert!(err.contains("key_invalid"), "{err}");
    hub.stop().await;
}

#[tokio::test]
async fn a_bad_ca_hash_is_reported_once() {
    let err = one_error_line(
        &run(strings(&[
            "tokens",
            "list",
            "--hub",
            "https://127.0.0.1:1",
            "--api-key",
            "mak_x",
            "--ca-hash",
            "nothex",
        ]))
        .await,
    );
    assert_eq!(err.matches("invalid CA hash").count(), 1, "{err}");
}

#[tokio::test]
async fn a_reader_that_stops_early_ends_the_command_quietly() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let admin = hub.admin();
    for name in ["piped-1", "piped-2"] {
        crate::enrolled(&hub, name).await;
    }
    assert_eq!(admin.list_agents().await.unwrap().len(), 2);
    let (url, key, hash) = (
        hub.url.clone(),
        hub.admin_key.clone(),
        hub.ca_hash.to_string(),
    );
    // `muster agents list --json | head -0`: the reader is gone before the first write.
    let out = tokio::task::spawn_blocking(move || {
        let cwd = tempfile::tempdir().unwrap();
        let mut child = muster(cwd.path())
            .args(["agents", "list", "--json"])
            .env("MUSTER_HUB_URL", url)
            .env("MUSTER_API_KEY", key)
            .env("MUSTER_CA_HASH", hash)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(err.is_empty(), "{err}");
    hub.stop().await;
}

/// The admin connection of `hub` as flags.
/// `--hub`, `--api-key` and `--ca-hash` for `hub`, as an admin types them.
pub(crate) fn admin_flags(hub: &TestHub) -> Vec<String> {
    strings(&[
        "--hub",
        &hub.url,
        "--api-key",
        &hub.admin_key,
        "--ca-hash",
        &hub.ca_hash.to_string(),
    ])
}

#[tokio::test]
async fn flags_are_checked_by_the_parser() {
    // An unknown status is refused before anything is sent.
    let out = run(strings(&["agents", "list", "--status", "bogus"])).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("online") && err.contains("revoked"), "{err}");

    let hub = TestHub::start(&Backend::Sqlite).await;
    // A known one filters.
    crate::enrolled(&hub, "filtered").await;
    let mut args = strings(&["agents", "list", "--json", "--status", "offline"]);
    args.extend(admin_flags(&hub));
    let listed: serde_json::Value = serde_json::from_str(&ok(run(args).await)).unwrap();
    assert_eq!(listed[0]["name"], "filtered");
    let mut args = strings(&["agents", "list", "--json", "--status", "revoked"]);
    args.extend(admin_flags(&hub));
    assert_eq!(ok(run(args).await).trim(), "[]");

    // Compound durations.
    let mut args = strings(&["tokens", "create", "--json", "--ttl", "1h30m"]);
    args.extend(admin_flags(&hub));
    let created: serde_json::Value = serde_json::from_str(&ok(run(args).await)).unwrap();
    let expires = time::OffsetDateTime::parse(
        created["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::minutes(88) && left <= time::Duration::minutes(90),
        "{left}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn users_add_reads_the_password_from_stdin_when_told() {
    use std::io::Write as _;
    let hub = TestHub::start(&Backend::Sqlite).await;
    let mut args = strings(&[
        "users",
        "add",
        "ann",
        "--role",
        "member",
        "--password-stdin",
    ]);
    args.extend(admin_flags(&hub));
    let out = tokio::task::spawn_blocking(move || {
        let cwd = tempfile::tempdir().unwrap();
        let mut child = muster(cwd.path())
            .args(&args)
            // --password-stdin wins over the environment.
            .env("MUSTER_USER_PASSWORD", "not this one, it is ignored")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"correct horse battery staple\n").unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(ok(out).contains("Added ann (member)"));
    hub.anonymous()
        .login("ann", "correct horse battery staple")
        .await
        .unwrap();
    hub.stop().await;
}

#[tokio::test]
async fn tables_show_labels_names_and_one_time_format() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let agent = muster_testkit::TestAgent::new("labelled");
    let token = hub.default_token().await;
    let mut opts = hub.enroll_options(&agent, Some(&token), Some("labelled"));
    opts.labels = [("env".to_owned(), "prod".to_owned())].into();
    let id = muster_agent::enroll(&opts, &agent.dir)
        .await
        .unwrap()
        .agent_id;

    let mut args = strings(&["agents", "list"]);
    args.extend(admin_flags(&hub));
    let listed = ok(run(args).await);
    let row = listed.lines().find(|l| l.starts_with("labelled")).unwrap();
    assert!(row.contains("env=prod"), "{listed}");

    let mut args = strings(&["audit", "list"]);
    args.extend(admin_flags(&hub));
    let audit = ok(run(args).await);
    assert!(audit.contains(&format!("agent:{id} (labelled)")), "{audit}");
    // Every AT cell: UTC to the second, the same shape everywhere.
    for line in audit.lines().skip(1) {
        let at: Vec<&str> = line.split_whitespace().skip(1).take(2).collect();
        let at = at.join(" ");
        assert!(
            time::PrimitiveDateTime::parse(
                &at,
                time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z")
            )
            .is_ok(),
            "{at:?} in {audit}"
        );
    }

    // Names come from the hub, not only from entries on the same page: the admin
    // key that revokes is named though no listed entry mentions its name.
    hub.admin().revoke_agent(&id).await.unwrap();
    let mut args = strings(&["audit", "list", "--action", "agent.revoked"]);
    args.extend(admin_flags(&hub));
    let audit = ok(run(args).await);
    let row = audit.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains("(initial-admin)") && row.contains(&format!("agent:{id} (labelled)")),
        "{audit}"
    );
    hub.stop().await;
}

/// Mistakes on the command line are one line that names the help to read, and
/// `--advertise-url` must be an https host and port (it is what agents are told).
#[tokio::test]
async fn command_line_mistakes_are_one_line_with_a_working_hint() {
    for (args, expect, help) in [
        (
            &["hub", "--advertise-url", "http://hub.example:8443"][..],
            "https://HOST[:PORT]",
            "muster hub --help",
        ),
        (
            &["hub", "--advertise-url", "https://hub.example:8443/api"][..],
            "more than a host and port",
            "muster hub --help",
        ),
        (
            &["--hub", "https://h", "tokens", "create", "--ttl", "5x"][..],
            "invalid duration unit",
            "muster tokens create --help",
        ),
        (
            &["agents", "list", "--status", "bogus"][..],
            "possible values: online",
            "muster agents list --help",
        ),
    ] {
        let out = run(strings(args)).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = one_error_line(&out);
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(err.contains(&format!("`{help}`")), "{args:?}: {err}");
        // The hint works as printed.
        let hint: Vec<String> = help.split(' ').skip(1).map(str::to_owned).collect();
        assert!(run(hint).await.status.success(), "{help}");
    }
}

/// A saved key goes only to the hub it was saved for (issue 9): on the hub's own
/// machine, `--hub` naming another hub without `--api-key` is refused before any
/// connection; and when the saved profile and `./muster-data` name different hubs,
/// the command says which one it uses.
#[tokio::test]
async fn saved_keys_go_only_to_their_own_hub() {
    let here = TestHub::start(&Backend::Sqlite).await;
    let other = TestHub::start(&Backend::Sqlite).await;
    let cwd = here.data_dir.parent().unwrap().to_owned();
    let run_here = |args: Vec<String>| {
        let cwd = cwd.clone();
        tokio::task::spawn_blocking(move || muster(&cwd).args(&args).output().unwrap())
    };

    // The local hub's files work with no flags at all.
    let out = run_here(strings(&["tokens", "list", "--json"]))
        .await
        .unwrap();
    ok(out);
    // Another hub, and no key of its own: refused, nothing sent.
    let out = run_here(strings(&[
        "tokens",
        "list",
        "--hub",
        &other.url,
        "--ca-hash",
        &other.ca_hash.to_string(),
    ]))
    .await
    .unwrap();
    let err = one_error_line(&out);
    assert!(
        err.contains(&format!("no API key for {}", other.url)),
        "{err}"
    );
    assert!(
        other
            .audit_actions()
            .await
            .iter()
            .all(|a| !a.contains("denied"))
    );

    // A profile for the other hub: it wins, and says so.
    let profile = serde_json::json!({
        "hub_url": other.url, "api_key": other.admin_key, "ca_hash": other.ca_hash.to_string(),
    });
    let dir = cwd.join("xdg").join("muster");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("profile.json"), profile.to_string()).unwrap();
    other.token(Default::default()).await;
    let out = run_here(strings(&["tokens", "list", "--json"]))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let listed: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "listed the profile's hub"
    );
    assert!(
        stderr.contains(&other.url) && stderr.contains(&here.url) && stderr.contains("--hub"),
        "{stderr}"
    );
    // Naming the local hub picks its own saved key, not the profile's.
    let out = run_here(strings(&["tokens", "list", "--json", "--hub", &here.url]))
        .await
        .unwrap();
    let listed: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 0);
    here.stop().await;
    other.stop().await;
}
