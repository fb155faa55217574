//! Files the agent reads: its env file (containers), the host's fact files
//! (os-release, the hostname file) and its own config dir's JSON.
//!
//! The facts an agent reads are sent to the hub as they are, so the harness
//! holds them to the hub's own checks: a host must never be unable to enroll
//! because of what is in one of these files.

use muster_agent::configdir::{AgentConfig, PendingEnrollment, PendingRenewal};
use muster_agent::envfile::EnvFile;
use muster_hub::fuzzing as hub;

use crate::round_trip;

/// Keys the agent writes into an env file or comments out.
const WRITTEN: [&str; 3] = ["MUSTER_AGENT_ID", "MUSTER_AGENT_KEY", "MUSTER_CA_HASH"];

/// The env file: its values survive the rewrite the agent makes of it, a key the
/// agent sets reads back as set (every older line for it replaced), and a key it
/// comments out is gone.
pub fn env_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        // read_to_string refuses the file before parsing.
        return;
    };
    let file = EnvFile::parse(text);
    let values = file.values();
    assert_eq!(
        EnvFile::parse(&file.text()).values(),
        values,
        "rewriting the file changed its values"
    );
    let key = WRITTEN[data.len() % WRITTEN.len()];
    let mut set = file.clone();
    set.set(key, "mag_0123456789abcdefABCDEF-_");
    let after = set.values();
    assert_eq!(
        after.get(key).map(String::as_str),
        Some("mag_0123456789abcdefABCDEF-_")
    );
    for (k, v) in &values {
        if k != key {
            assert_eq!(after.get(k), Some(v), "setting {key} changed {k}");
        }
    }
    let mut commented = file;
    commented.comment_out("MUSTER_ENROLL_TOKEN", "used for enrollment");
    assert!(!commented.values().contains_key("MUSTER_ENROLL_TOKEN"));
}

/// os-release and the hostname file: what the agent reports from them is accepted
/// by the hub's checks of facts.
pub fn fact_files(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(pretty) = muster_agent::facts::pretty_name(&text) {
        assert!(
            hub::check_text("os_info", &pretty, true).is_ok(),
            "os-release gives an os_info the hub refuses: {pretty:?}"
        );
    }
    if let Some(name) = muster_agent::facts::first_line(&text) {
        assert!(
            hub::check_text("hostname", &name, false).is_ok(),
            "the hostname file gives a hostname the hub refuses: {name:?}"
        );
    }
}

/// `config.json`, `pending.json` and the pending renewal as the agent loads them:
/// each round-trips; the hub list, CA pin and keys they hold are read without panic.
pub fn agent_config(data: &[u8]) {
    if let Some(config) = round_trip::<AgentConfig>(data) {
        let again: AgentConfig =
            serde_json::from_slice(&serde_json::to_vec(&config).expect("serializes"))
                .expect("parses");
        assert!(again == config, "config.json changed over a round trip");
        let hubs = config.hubs();
        for (i, h) in hubs.iter().enumerate() {
            assert!(!h.is_empty() && !hubs[..i].contains(h), "hub list {hubs:?}");
        }
        if !config.hub_url.is_empty() {
            assert_eq!(hubs.first(), Some(&config.hub_url));
        }
        let _ = muster_agent::hubs::parse_list(&config.hub_urls, "config.json");
        let _ = muster_ca::CaHash::parse(&config.ca_hash);
    }
    if let Some(pending) = round_trip::<PendingEnrollment>(data) {
        let _ = muster_ca::key_public_sha256(&pending.key_pem);
    }
    if let Some(renewal) = round_trip::<PendingRenewal>(data) {
        let _ = muster_ca::key_public_sha256(&renewal.key_pem);
    }
}

/// One interface's dir under `/sys/class/net`, as the agent reads it. Input:
/// fields separated by 0xFF: the name (cut to the kernel's 15 bytes; skipped when the
/// kernel would refuse it: `/`, `:`, whitespace, `.`, `..`), the link-layer
/// address's raw bytes (written as the kernel does, hex pairs joined by `:`),
/// `flags`, `operstate`, `statistics/tx_bytes`. The interface read from it must pass
/// the hub's checks of facts, or be left out when the hub would refuse its name.
pub fn sys_net(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0xFF);
    let mut next = || parts.next().unwrap_or_default();
    let name = String::from_utf8_lossy(next()).into_owned();
    let name = cut(&name, 15);
    let kernel_refuses = |c: char| matches!(c, '/' | ':' | '\0') || c.is_ascii_whitespace();
    if name.is_empty() || name == "." || name == ".." || name.chars().any(kernel_refuses) {
        return;
    }
    let address: Vec<String> = next().iter().take(32).map(|b| format!("{b:02x}")).collect();
    let base = tempfile::tempdir().expect("a temp dir");
    let dir = base.path().join(name);
    std::fs::create_dir_all(dir.join("statistics")).expect("the interface dir");
    let write =
        |file: &str, content: &[u8]| std::fs::write(dir.join(file), content).expect("writes");
    write("address", format!("{}\n", address.join(":")).as_bytes());
    write("flags", next());
    write("operstate", next());
    write("statistics/tx_bytes", next());
    let interfaces = muster_agent::facts::read_sys_interfaces(base.path());
    // An interface is left out only when the hub would refuse its name.
    assert_eq!(
        interfaces.len(),
        usize::from(hub::check_text("interface name", name, false).is_ok() && name.len() <= 64),
        "interface {name:?}"
    );
    let facts = muster_proto::HostFacts {
        hostname: "fuzz".to_owned(),
        interfaces,
        ..Default::default()
    };
    assert!(
        hub::hello_facts(String::new(), Vec::new(), facts.clone()).is_some(),
        "the hub refuses an interface read from /sys: {:?}",
        facts.interfaces
    );
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
