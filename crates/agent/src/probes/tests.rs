//! The probes against this machine's real `/proc`, `/sys` and systemd (or its
//! absence), through [`run`] and [`catalog`] as the session uses them.

use std::collections::BTreeMap;
use std::time::Duration;

use muster_proto::{PackHealth, ProbeOutcome};
use serde_json::Value;

use super::*;

const T: Duration = Duration::from_secs(20);

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn ok(probe: &str, pairs: &[(&str, &str)]) -> Value {
    let answer = run(&ProbeSources::default(), probe, &params(pairs), T).await;
    assert_eq!(
        answer.outcome,
        ProbeOutcome::Ok,
        "{probe}: {:?}",
        answer.error
    );
    assert!(!answer.truncated);
    answer.result.unwrap()
}

async fn refused(probe: &str, pairs: &[(&str, &str)]) -> String {
    let answer = run(&ProbeSources::default(), probe, &params(pairs), T).await;
    assert_eq!(answer.outcome, ProbeOutcome::Error, "{probe} {pairs:?}");
    assert!(answer.result.is_none());
    let error = answer.error.unwrap();
    assert!(!error.contains('\n'), "one line: {error}");
    error
}

#[test]
fn catalog_lists_the_system_pack_ready_here() {
    let catalog = catalog(&ProbeSources::default());
    let [system] = &catalog[..] else {
        panic!("{catalog:?}")
    };
    assert_eq!(system.name, "system");
    assert_eq!(system.version, muster_release::running_version());
    assert_eq!(system.needs, ["journal"]);
    assert_eq!(system.health, PackHealth::Ready, "{:?}", system.reason);
    let names: Vec<&str> = system.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "system.info",
            "system.load",
            "system.memory",
            "system.disks",
            "system.interfaces",
            "system.ports",
            "system.processes",
            "system.service",
            "system.journal"
        ]
    );
    let journal = &system.probes[8];
    assert!(journal.params[0].required && journal.params[0].name == "unit");
    assert_eq!(journal.params[1].default.as_deref(), Some("50"));
    assert!(problems(&catalog).is_empty());
}

#[test]
fn self_check_fails_on_an_empty_proc() {
    let tmp = tempfile::tempdir().unwrap();
    let sources = ProbeSources {
        proc_root: tmp.path().to_path_buf(),
        ..ProbeSources::default()
    };
    let catalog = catalog(&sources);
    assert_eq!(catalog[0].health, PackHealth::Failed);
    let reason = catalog[0].reason.clone().unwrap();
    assert_eq!(
        reason,
        format!(
            "cannot read {}/loadavg: No such file or directory (os error 2)",
            tmp.path().display()
        )
    );
    assert_eq!(problems(&catalog), [format!("pack system: {reason}")]);

    // Cached: a fixed proc does not show until the check is due again.
    let mut checks = SelfChecks::new(Duration::from_secs(60));
    assert_eq!(checks.catalog(&sources)[0].health, PackHealth::Failed);
    assert_eq!(
        checks.catalog(&ProbeSources::default())[0].health,
        PackHealth::Failed
    );
    let mut every_time = SelfChecks::new(Duration::ZERO);
    assert_eq!(every_time.catalog(&sources)[0].health, PackHealth::Failed);
    assert_eq!(
        every_time.catalog(&ProbeSources::default())[0].health,
        PackHealth::Ready
    );
}

#[tokio::test]
async fn info_describes_this_machine() {
    let v = ok("system.info", &[]).await;
    let host = hostname::get().unwrap().into_string().unwrap();
    assert_eq!(v["hostname"], host.trim());
    assert!(!v["os"].as_str().unwrap().is_empty());
    assert!(!v["kernel"].as_str().unwrap().is_empty());
    assert!(v["uptime_s"].as_u64().unwrap() > 0);
    assert_eq!(v["agent_version"], muster_release::running_version());
    assert_eq!(v["arch"], crate::facts::arch());
}

#[tokio::test]
async fn load_has_three_averages_and_a_cpu_share() {
    let v = ok("system.load", &[]).await;
    let load = v["load"].as_array().unwrap();
    assert_eq!(load.len(), 3);
    assert!(load.iter().all(|l| l.as_f64().unwrap() >= 0.0));
    let cpus = v["cpus"].as_u64().unwrap();
    assert_eq!(
        cpus,
        std::thread::available_parallelism().unwrap().get() as u64
    );
    let pct = v["cpu_percent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&pct), "{pct}");
}

#[tokio::test]
async fn memory_totals() {
    let v = ok("system.memory", &[]).await;
    let total = v["total_bytes"].as_u64().unwrap();
    assert!(total > 0);
    assert!(v["available_bytes"].as_u64().unwrap() <= total);
    assert_eq!(
        v["used_bytes"].as_u64().unwrap() + v["available_bytes"].as_u64().unwrap(),
        total
    );
    assert!(v["swap_used_bytes"].as_u64().unwrap() <= v["swap_total_bytes"].as_u64().unwrap());
}

#[tokio::test]
async fn disks_include_root_with_a_size() {
    let v = ok("system.disks", &[]).await;
    let mounts = v["mounts"].as_array().unwrap();
    let root = mounts
        .iter()
        .find(|m| m["mount_point"] == "/")
        .unwrap_or_else(|| panic!("{mounts:?}"));
    assert!(root["size_bytes"].as_u64().unwrap() > 0);
    assert!(root["used_bytes"].as_u64().unwrap() <= root["size_bytes"].as_u64().unwrap());
    assert!(
        mounts
            .iter()
            .all(|m| !["proc", "sysfs", "cgroup", "devpts"]
                .contains(&m["fs_type"].as_str().unwrap())),
        "{mounts:?}"
    );
}

#[tokio::test]
async fn interfaces_include_loopback() {
    let v = ok("system.interfaces", &[]).await;
    let list = v["interfaces"].as_array().unwrap();
    let lo = list.iter().find(|i| i["name"] == "lo").unwrap();
    assert_eq!(lo["is_loopback"], true);
    assert!(
        lo["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "127.0.0.1")
    );
}

#[tokio::test]
async fn ports_show_our_own_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let v = ok("system.ports", &[]).await;
    let ours = v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == port && p["protocol"] == "tcp")
        .cloned()
        .unwrap_or_else(|| panic!("port {port} missing: {v}"));
    assert_eq!(ours["address"], "127.0.0.1");
    assert_eq!(ours["pid"], std::process::id());
}

#[tokio::test]
async fn processes_include_this_test() {
    let v = ok("system.processes", &[("n", "100"), ("sort", "memory")]).await;
    let list = v["processes"].as_array().unwrap();
    assert!(!list.is_empty() && list.len() <= 100);
    let total = v["total"].as_u64().unwrap();
    let me = list.iter().find(|p| p["pid"] == std::process::id());
    if total <= 100 {
        let me = me.unwrap_or_else(|| panic!("{v}"));
        assert!(me["rss_bytes"].as_u64().unwrap() > 0);
    }
    let rss: Vec<u64> = list
        .iter()
        .map(|p| p["rss_bytes"].as_u64().unwrap())
        .collect();
    assert!(rss.windows(2).all(|w| w[0] >= w[1]), "sorted by memory");

    let v = ok("system.processes", &[]).await;
    assert_eq!(v["sort"], "cpu");
    assert!(v["processes"].as_array().unwrap().len() <= 10);
}

#[tokio::test]
async fn service_and_journal_here() {
    let answer = run(
        &ProbeSources::default(),
        "system.service",
        &params(&[("unit", "muster-no-such-unit.service")]),
        T,
    )
    .await;
    if std::path::Path::new("/run/systemd/system").is_dir() {
        assert_eq!(answer.outcome, ProbeOutcome::Ok, "{:?}", answer.error);
        assert_eq!(answer.result.unwrap()["load_state"], "not-found");
    } else {
        assert_eq!(answer.error.as_deref(), Some("systemd is not available"));
    }

    let answer = run(
        &ProbeSources::default(),
        "system.journal",
        &params(&[("unit", "muster-no-such-unit.service"), ("lines", "5")]),
        T,
    )
    .await;
    let has_journalctl = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("journalctl").exists()));
    if has_journalctl {
        assert_eq!(answer.outcome, ProbeOutcome::Ok, "{:?}", answer.error);
        let result = answer.result.unwrap();
        assert_eq!(result["unit"], "muster-no-such-unit.service");
        assert!(result["lines"].as_array().unwrap().len() <= 5);
    } else {
        assert_eq!(answer.error.as_deref(), Some("journalctl is not available"));
    }
}

#[tokio::test]
async fn systemd_missing_is_said_plainly() {
    let sources = ProbeSources {
        systemd_booted: "/nonexistent/systemd/system".into(),
        ..ProbeSources::default()
    };
    let answer = run(
        &sources,
        "system.service",
        &params(&[("unit", "ssh.service")]),
        T,
    )
    .await;
    assert_eq!(answer.error.as_deref(), Some("systemd is not available"));
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason() {
    assert_eq!(
        refused("system.nope", &[]).await,
        "unknown probe \"system.nope\""
    );
    assert_eq!(
        refused("system.info", &[("x", "1")]).await,
        "unknown parameter \"x\": this probe takes none"
    );
    assert_eq!(
        refused("system.service", &[]).await,
        "missing parameter unit"
    );
    for unit in [
        "-H",
        "--host=evil",
        "a b",
        "x;rm",
        "",
        "ü.service",
        &"a".repeat(201),
    ] {
        let why = refused("system.service", &[("unit", unit)]).await;
        assert!(why.starts_with("parameter unit: "), "{unit:?}: {why}");
    }
    for lines in ["0", "501", "-1", "ten", "99999999999999999999"] {
        let why = refused(
            "system.journal",
            &[("unit", "ssh.service"), ("lines", lines)],
        )
        .await;
        assert_eq!(
            why,
            "parameter lines: expected a whole number from 1 to 500"
        );
    }
    assert_eq!(
        refused("system.processes", &[("sort", "name")]).await,
        "parameter sort: expected one of cpu, memory"
    );
    assert_eq!(
        refused("system.processes", &[("n", "101")]).await,
        "parameter n: expected a whole number from 1 to 100"
    );
    assert_eq!(
        refused("system.journal", &[("unit", "a.service"), ("since", "x")]).await,
        "unknown parameter \"since\": this probe takes unit, lines"
    );
    // Good names pass validation (whatever systemd then says).
    let specs = [ParamSpec {
        name: "unit",
        description: "",
        required: true,
        default: None,
        kind: ParamKind::Unit,
    }];
    for unit in [
        "nginx.service",
        "getty@tty1.service",
        "dev-sda1.device",
        "a:b_c",
    ] {
        assert!(
            Params::validate(&specs, &params(&[("unit", unit)])).is_ok(),
            "{unit}"
        );
    }
}

#[tokio::test]
async fn a_slow_probe_times_out() {
    // system.load sleeps for its CPU sample, far longer than this.
    let answer = run(
        &ProbeSources::default(),
        "system.load",
        &BTreeMap::new(),
        Duration::from_millis(5),
    )
    .await;
    assert_eq!(answer.outcome, ProbeOutcome::Timeout);
    assert!(answer.result.is_none());
}

#[tokio::test]
async fn big_results_are_cut_to_the_cap() {
    // A fake /proc whose mount table lists many more filesystems than fit.
    let tmp = tempfile::tempdir().unwrap();
    let own = tmp.path().join("self");
    std::fs::create_dir_all(&own).unwrap();
    let table: String = (0..20_000)
        .map(|i| format!("/dev/fake{i} /mnt/a-rather-long-mount-point-name/{i} ext4 rw 0 0\n"))
        .collect();
    std::fs::write(own.join("mounts"), table).unwrap();
    let sources = ProbeSources {
        proc_root: tmp.path().to_path_buf(),
        ..ProbeSources::default()
    };
    let answer = run(&sources, "system.disks", &BTreeMap::new(), T).await;
    assert_eq!(answer.outcome, ProbeOutcome::Ok, "{:?}", answer.error);
    assert!(answer.truncated);
    let result = answer.result.unwrap();
    let size = serde_json::to_vec(&result).unwrap().len();
    assert!(size <= muster_proto::PROBE_OUTPUT_MAX, "{size}");
    let mounts = result["mounts"].as_array().unwrap();
    assert!(
        mounts.len() > 100 && mounts.len() < 20_000,
        "{}",
        mounts.len()
    );
}
