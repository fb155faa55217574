//! The MCP endpoint (SPEC §15) as a standard client sees it: the official MCP
//! Python SDK (`tests/mcp/client.py`, installed by `scripts/mcp-client`) against a
//! real hub over TLS, with a real agent, an admin key and member keys inside and
//! outside the agent's scope.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use muster_proto::CreateKeyRequest;
use muster_testkit::{Backend, TestAgent, TestHub};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run the Python client with `key` (and `run_probe` arguments); its one JSON line.
async fn client(url: &str, ca: &std::path::Path, key: &str, probe_args: &Value) -> Value {
    let (url, ca, key, args) = (
        format!("{url}/mcp"),
        ca.to_owned(),
        key.to_owned(),
        probe_args.to_string(),
    );
    // Blocking on the child here would stall the runtime the hub runs on.
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg("tests/mcp/client.py")
            .arg(&url)
            .arg(&ca)
            .arg(&key)
            .arg(&args)
            .current_dir(repo())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client.py failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn member_key(agents: &str, probes: &[&str]) -> CreateKeyRequest {
    CreateKeyRequest {
        name: format!("mcp {agents}"),
        role: "member".parse().unwrap(),
        agents: Some(agents.to_owned()),
        probes: probes.iter().map(|p| p.to_string()).collect(),
        expires_s: None,
    }
}

#[tokio::test]
async fn the_python_sdk_lists_agents_and_runs_probes_within_the_keys_scopes() {
    let installed = tokio::task::spawn_blocking(|| {
        Command::new("bash")
            .args(["-c", "source scripts/mcp-client && mcp_client_install"])
            .current_dir(repo())
            .status()
            .is_ok_and(|s| s.success())
    })
    .await
    .unwrap();
    assert!(
        installed,
        "scripts/mcp-client could not install the MCP SDK"
    );

    let hub = TestHub::start(&Backend::Sqlite).await;
    let agent = TestAgent::new("web-01");
    let t = hub.default_token().await;
    let id = muster_agent::enroll(&hub.enroll_options(&agent, Some(&t), None), &agent.dir)
        .await
        .unwrap()
        .agent_id;
    let _running = agent.run();
    hub.wait_status(&id, "online", Duration::from_secs(10))
        .await;
    let ca = agent.root().join("hub-ca.pem");
    std::fs::write(&ca, agent.dir.load().unwrap().unwrap().ca_pem).unwrap();
    let admin = hub.admin();
    let web = admin
        .create_key(&member_key("web-*", &["system.info"]))
        .await
        .unwrap()
        .key;
    let db = admin
        .create_key(&member_key("db-*", &["system.info"]))
        .await
        .unwrap()
        .key;
    let one = json!({"agent": "web-01", "probe": "system.info"});

    for key in [&hub.admin_key, &web] {
        let got = client(&hub.url, &ca, key, &one).await;
        assert_eq!(got["server"], "muster", "{got}");
        // The SDK offers its newest handshake version; the hub answers it as asked.
        assert_eq!(got["protocol_version"], "2025-11-25", "{got}");
        assert_eq!(
            got["tools"],
            json!(["get_agent", "list_agents", "list_probes", "run_probe"]),
            "{got}"
        );
        let listed = &got["list_agents"];
        assert_eq!(listed["is_error"], false, "{got}");
        let agents = listed["structured"]["agents"].as_array().unwrap();
        assert_eq!(agents.len(), 1, "{got}");
        assert_eq!(agents[0]["name"], "web-01");
        assert_eq!(agents[0]["id"], id.as_str());
        assert_eq!(agents[0]["status"], "online");
        // The same JSON as text, for clients that read only the text.
        let text: Value = serde_json::from_str(listed["text"].as_str().unwrap()).unwrap();
        assert_eq!(&text, &listed["structured"]);

        let run = &got["run_probe"];
        assert_eq!(run["is_error"], false, "{got}");
        assert_eq!(run["structured"]["agent"], "web-01", "{got}");
        assert_eq!(run["structured"]["probe"], "system.info", "{got}");
        // A real answer from the real agent's system pack.
        assert_eq!(run["structured"]["outcome"], "ok", "{got}");
        assert_eq!(run["structured"]["result"]["hostname"], "web-01", "{got}");
    }

    // Outside the key's glob: the agent is invisible, and running on it is
    // refused as the REST route refuses it (not found), while a fan-out over "*"
    // finds nothing to run on.
    let got = client(&hub.url, &ca, &db, &one).await;
    assert_eq!(
        got["list_agents"]["structured"]["agents"],
        json!([]),
        "{got}"
    );
    assert_eq!(got["run_probe"]["is_error"], true, "{got}");
    assert_eq!(got["run_probe"]["structured"]["code"], "not_found", "{got}");
    let fan = client(
        &hub.url,
        &ca,
        &db,
        &json!({"agents": "*", "probe": "system.info"}),
    )
    .await;
    assert_eq!(fan["run_probe"]["structured"]["runs"], json!([]), "{fan}");

    // Inside the glob but a probe the key does not hold: refused and audited.
    let denied = json!({"agent": "web-01", "probe": "system.disks"});
    let got = client(&hub.url, &ca, &web, &denied).await;
    assert_eq!(got["run_probe"]["is_error"], true, "{got}");
    assert_eq!(got["run_probe"]["structured"]["code"], "forbidden", "{got}");
    let actions = hub.audit_actions().await;
    assert!(actions.iter().any(|a| a == "probe.denied"), "{actions:?}");
    let runs = actions.iter().filter(|a| *a == "probe.run").count();
    assert_eq!(runs, 2, "the admin's and web's runs: {actions:?}");

    // A bad key never reaches the tools: HTTP 401, which the SDK raises as an
    // MCPError without the status ("Server returned an error response").
    let got = client(&hub.url, &ca, "mak_not-a-key", &one).await;
    let refused = got["refused"].as_str().unwrap_or_default();
    assert!(refused.starts_with("MCPError"), "{got}");
    for bearer in [None, Some("mak_not-a-key"), Some("mag_an-agent-key")] {
        let mut c = hub.anonymous();
        if let Some(b) = bearer {
            c = c.with_bearer(b.to_owned());
        }
        assert_eq!(
            c.status_of("POST", "/mcp").await.unwrap(),
            401,
            "{bearer:?}"
        );
    }
    hub.stop().await;
}
