//! Probes and packs (SPEC §15) with the real agent and a real hub: every built-in
//! probe answers with plausible data for this machine, the CLI asks one agent or
//! many, API key scopes bound what runs (403 and an audit entry otherwise), a pack
//! needing more than the hub grants waits for an admin, and a pack whose self-check
//! fails makes the agent degraded with the reason on show.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use muster_client::{AuditQuery, HubClient};
use muster_proto::{CreateKeyRequest, ProbeOutcome, ProbeRun, Role, RunProbeRequest};
use muster_testkit::{Backend, TestAgent, TestHub};
use serde_json::Value;

async fn enrolled(hub: &TestHub, name: &str) -> (TestAgent, String) {
    let agent = TestAgent::new(name);
    let t = hub.default_token().await;
    let id = muster_agent::enroll(&hub.enroll_options(&agent, Some(&t), None), &agent.dir)
        .await
        .unwrap()
        .agent_id;
    (agent, id)
}

/// Wait until the hub knows what the agent offers (its first `hello` after start).
async fn offered(hub: &TestHub, id: &str) -> muster_proto::AgentPacks {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let packs = hub.admin().agent_probes(id).await.unwrap();
        if !packs.packs.is_empty() {
            return packs;
        }
        assert!(Instant::now() < deadline, "the agent announced no packs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(client: &HubClient, agent: &str, probe: &str, params: &[(&str, &str)]) -> ProbeRun {
    let req = RunProbeRequest {
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    };
    client.run_probe(agent, probe, &req).await.unwrap()
}

fn ok(run: &ProbeRun) -> &Value {
    assert_eq!(run.outcome, ProbeOutcome::Ok, "{run:?}");
    run.result.as_ref().unwrap()
}

/// A `muster …` command through the real binary as `key`.
async fn cli(hub: &TestHub, key: &str, args: &[&str]) -> std::process::Output {
    crate::binary::as_admin(hub, Some(key), args, "", &[]).await
}

#[tokio::test]
async fn built_in_probes_answer_for_this_machine_through_the_api_and_the_cli() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let (web, web_id) = enrolled(&hub, "web-01").await;
    let (db, db_id) = enrolled(&hub, "db-01").await;
    let (_w, _d) = (web.run(), db.run());
    hub.wait_status(&web_id, "online", Duration::from_secs(10))
        .await;
    hub.wait_status(&db_id, "online", Duration::from_secs(10))
        .await;
    let packs = offered(&hub, &web_id).await;
    let system = packs
        .packs
        .iter()
        .find(|p| p.pack.name == "system")
        .unwrap();
    assert_eq!(system.state, "ready", "journal is granted by default");
    let names: Vec<&str> = system.pack.probes.iter().map(|p| p.name.as_str()).collect();
    for want in [
        "system.info",
        "system.load",
        "system.memory",
        "system.disks",
        "system.interfaces",
        "system.ports",
        "system.processes",
        "system.service",
        "system.journal",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let admin = hub.admin();

    // Plausible data for this machine.
    let info = run(&admin, "web-01", "system.info", &[]).await;
    let info = ok(&info);
    assert_eq!(info["hostname"], "web-01", "the host the facts describe");
    assert!(info["uptime_s"].as_u64().unwrap() > 0);
    let load = run(&admin, "web-01", "system.load", &[]).await;
    assert_eq!(ok(&load)["load"].as_array().unwrap().len(), 3);
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(ok(&load)["cpus"].as_u64().unwrap(), cpus);
    let memory = run(&admin, "web-01", "system.memory", &[]).await;
    assert!(ok(&memory)["total_bytes"].as_u64().unwrap() > 100 << 20);
    let disks = run(&admin, "web-01", "system.disks", &[]).await;
    let mounts = ok(&disks)["mounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["mount_point"] == "/"), "{mounts:?}");
    let interfaces = run(&admin, "web-01", "system.interfaces", &[]).await;
    let lo = ok(&interfaces)["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["name"] == "lo");
    assert!(lo);
    // The hub listens on this machine: its port is among the listening sockets.
    let hub_port: u64 = hub.url.rsplit(':').next().unwrap().parse().unwrap();
    let ports = run(&admin, "web-01", "system.ports", &[]).await;
    let listening = ok(&ports)["ports"].as_array().unwrap();
    assert!(
        listening.iter().any(|p| p["port"] == hub_port),
        "{hub_port} in {listening:?}"
    );
    let procs = run(
        &admin,
        "web-01",
        "system.processes",
        &[("n", "5"), ("sort", "memory")],
    )
    .await;
    assert_eq!(ok(&procs)["processes"].as_array().unwrap().len(), 5);
    // A service: this machine may have no systemd; either way a clear answer.
    let svc = run(
        &admin,
        "web-01",
        "system.service",
        &[("unit", "ssh.service")],
    )
    .await;
    match svc.outcome {
        ProbeOutcome::Ok => assert!(svc.result.unwrap()["active_state"].is_string()),
        _ => assert!(svc.error.unwrap().contains("systemd"), "clear refusal"),
    }
    let journal = run(
        &admin,
        "web-01",
        "system.journal",
        &[("unit", "ssh.service"), ("lines", "5")],
    )
    .await;
    assert!(
        matches!(journal.outcome, ProbeOutcome::Ok | ProbeOutcome::Error),
        "{journal:?}"
    );
    // Bad parameters are refused by the agent in one line; unknown probes too.
    let bad = run(
        &admin,
        "web-01",
        "system.journal",
        &[("unit", "--host=evil")],
    )
    .await;
    assert_eq!(bad.outcome, ProbeOutcome::Error);
    let nope = run(&admin, "web-01", "system.nope", &[]).await;
    assert!(nope.error.unwrap().contains("offers no probe"));

    // The CLI: one agent prints the JSON; many print a table and say who answered.
    let out = cli(&hub, &hub.admin_key, &["probe", "web-01", "system.memory"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(printed["total_bytes"].as_u64().unwrap() > 0);
    let out = cli(
        &hub,
        &hub.admin_key,
        &["probe", "--agents", "*-01", "system.info"],
    )
    .await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("web-01") && table.contains("db-01"),
        "{table}"
    );
    let out = cli(&hub, &hub.admin_key, &["probe", "web-01", "--list"]).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("system.journal") && listed.contains("unit*"),
        "{listed}"
    );
    let out = cli(&hub, &hub.admin_key, &["probe", "web-01", "system.service"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.lines().count() == 1 && err.contains("unit"),
        "{err}"
    );

    // Scopes: a member key for web-* and system.disks runs exactly that.
    let scoped = admin
        .create_key(&CreateKeyRequest {
            name: "disks-on-web".into(),
            role: Role::Member,
            agents: Some("web-*".into()),
            probes: vec!["system.disks".into()],
            expires_s: None,
        })
        .await
        .unwrap()
        .key;
    let member = hub.anonymous().with_bearer(scoped.clone());
    ok(&run(&member, "web-01", "system.disks", &[]).await);
    let refused = member
        .run_probe("web-01", "system.info", &RunProbeRequest::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("may not run system.info"), "{refused}");
    let unseen = member
        .run_probe("db-01", "system.disks", &RunProbeRequest::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(unseen.contains("no agent"), "{unseen}");
    let fanned = member
        .run_probes(
            "system.disks",
            &RunProbeRequest {
                agents: Some("*".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        fanned.iter().map(|r| r.agent.as_str()).collect::<Vec<_>>(),
        ["web-01"]
    );
    let out = cli(&hub, &scoped, &["probe", "web-01", "system.info"]).await;
    assert!(!out.status.success());

    // Every run is audited with caller, agent, probe, parameters and outcome; the
    // refusal too. Never the output.
    let runs = admin
        .audit(&AuditQuery {
            action: Some("probe.run".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let journal_run = runs
        .iter()
        .find(|e| e.details["probe"] == "system.journal" && e.details["params"]["lines"] == "5")
        .unwrap();
    assert_eq!(journal_run.target, format!("agent:{web_id}"));
    let mem_run = runs
        .iter()
        .find(|e| e.details["probe"] == "system.memory")
        .unwrap();
    assert_eq!(mem_run.outcome, "ok");
    assert!(
        !mem_run.details.to_string().contains("total_bytes"),
        "no output in the log"
    );
    let denied = admin
        .audit(&AuditQuery {
            action: Some("probe.denied".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        denied
            .iter()
            .any(|e| e.details["probe"] == "system.info" && e.outcome == "denied")
    );

    // An agent that went away: offline, not a hang.
    drop(_d);
    hub.wait_status(&db_id, "offline", Duration::from_secs(10))
        .await;
    let gone = run(&admin, "db-01", "system.info", &[]).await;
    assert_eq!(gone.outcome, ProbeOutcome::Offline);
    hub.stop().await;
}

#[tokio::test]
async fn a_pack_beyond_the_grants_waits_for_an_admin_and_a_failed_self_check_degrades() {
    // No privilege granted fleet-wide: the system pack (it reads the journal) waits.
    let hub = TestHub::start_with(&Backend::Sqlite, |o| o.pack_grants = Vec::new()).await;
    let (web, web_id) = enrolled(&hub, "web-01").await;
    let _running = web.run();
    hub.wait_status(&web_id, "online", Duration::from_secs(10))
        .await;
    assert_eq!(offered(&hub, &web_id).await.packs[0].state, "pending");
    let admin = hub.admin();
    let waiting = run(&admin, "web-01", "system.info", &[]).await;
    assert_eq!(waiting.outcome, ProbeOutcome::Pending);
    assert!(
        waiting
            .error
            .unwrap()
            .contains("agents packs web-01 approve system")
    );
    let decided = admin
        .decide_pack("web-01", "system", "approve")
        .await
        .unwrap();
    assert_eq!(decided.packs[0].state, "ready");
    ok(&run(&admin, "web-01", "system.info", &[]).await);
    admin.decide_pack("web-01", "system", "deny").await.unwrap();
    assert_eq!(
        run(&admin, "web-01", "system.info", &[]).await.outcome,
        ProbeOutcome::Pending
    );
    let decisions = admin
        .audit(&AuditQuery {
            agent: Some(web_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = decisions.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"pack.approved") && actions.contains(&"pack.denied"),
        "{actions:?}"
    );

    // An agent whose host /proc cannot be read: its pack fails the self-check, it is
    // degraded, and the fleet view says why.
    let (broken, broken_id) = enrolled(&hub, "broken-01").await;
    let empty = tempfile::tempdir().unwrap();
    let sources = muster_agent::probes::ProbeSources {
        proc_root: empty.path().to_owned(),
        ..Default::default()
    };
    let _b = broken.run_probing(sources);
    hub.wait_status(&broken_id, "degraded", Duration::from_secs(15))
        .await;
    let shown = admin.agent(&broken_id).await.unwrap();
    assert!(
        shown
            .problems
            .iter()
            .any(|p| p.starts_with("pack system: cannot read")),
        "{:?}",
        shown.problems
    );
    assert_eq!(offered(&hub, &broken_id).await.packs[0].state, "failed");
    let failed = run(&admin, "broken-01", "system.info", &[]).await;
    assert!(failed.error.unwrap().contains("self-check"));
    let out = cli(&hub, &hub.admin_key, &["agents", "show", "broken-01"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("degraded (pack system: cannot read"),
        "{text}"
    );
    hub.stop().await;
}

/// The dashboard: the Agent page lists the packs and runs a probe, showing the
/// answer as text; the Hub page lists integrations with their status.
#[tokio::test]
async fn the_agent_page_runs_a_probe_in_a_real_browser() {
    use crate::dashboard::browser::*;
    const PASSWORD: &str = "correct horse battery staple";
    let hub = TestHub::start_with(&Backend::Sqlite, |o| {
        o.admin_user = Some(("root".into(), PASSWORD.into()));
    })
    .await;
    let (web, web_id) = enrolled(&hub, "web-01").await;
    let _running = web.run();
    hub.wait_status(&web_id, "online", Duration::from_secs(10))
        .await;
    offered(&hub, &web_id).await;
    hub.admin()
        .create_integration(&muster_proto::CreateIntegrationRequest {
            name: "status-api".into(),
            kind: "http".into(),
            url: "http://127.0.0.1:1/api".into(),
            auth: "bearer".into(),
            header_name: None,
            secret: Some("a token".into()),
        })
        .await
        .unwrap();
    let base = hub.url.clone();
    let profile = tempfile::tempdir().unwrap();
    let mut chrome = launch(profile.path()).await;
    let page = chrome.new_page("about:blank").await.unwrap();
    let alerts = watch_dialogs(&page).await;
    log_in(&page, &base, "root", PASSWORD).await;
    until(&page, "location.pathname === '/'", "the fleet").await;
    open(&page, &format!("{base}/agents/{web_id}")).await;
    let state: String = eval(
        &page,
        "document.querySelector('tr[data-pack=\"system\"] .pack-state').innerText",
    )
    .await;
    assert!(state.contains("ready"), "{state}");
    eval::<Value>(
        &page,
        "document.querySelector('#probe-form select').value = 'system.memory'",
    )
    .await;
    click(&page, "#probe-form button[type=submit]").await;
    until(
        &page,
        "!document.getElementById('probe-result').hidden",
        "the probe's answer",
    )
    .await;
    let outcome: String = eval(
        &page,
        "document.getElementById('probe-outcome').textContent",
    )
    .await;
    assert!(outcome.contains("system.memory on web-01: ok"), "{outcome}");
    let output: String = eval(&page, "document.getElementById('probe-output').textContent").await;
    let answer: Value = serde_json::from_str(&output).unwrap();
    assert!(answer["total_bytes"].as_u64().unwrap() > 0);
    screenshot(&page, "agent-probe").await;

    // The Hub page: integrations with their status; testing one shows the error.
    open(&page, &format!("{base}/hub")).await;
    let row: String = eval(
        &page,
        "document.querySelector('tr[data-integration=\"status-api\"]').innerText",
    )
    .await;
    assert!(
        row.contains("untested") && !row.contains("a token"),
        "{row}"
    );
    click(
        &page,
        "tr[data-integration=\"status-api\"] button[type=submit]",
    )
    .await;
    until(
        &page,
        "(document.querySelector('tr[data-integration=\"status-api\"] .integration-status') || {innerText: ''}).innerText.includes('error')",
        "the test's result",
    )
    .await;
    screenshot(&page, "hub-integrations").await;
    assert_eq!(alerts.load(std::sync::atomic::Ordering::SeqCst), 0);
    let _ = chrome.close().await;
    hub.stop().await;
}
