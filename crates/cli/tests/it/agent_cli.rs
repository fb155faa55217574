//! The agent-side commands as the built binary runs them on a machine: `status` next
//! to other muster processes, the systemd unit `agent install-service` writes, and
//! the lines an operator reads when something is wrong.

use std::path::Path;
use std::process::Output;

use muster_testkit::{Backend, TestHub};

use crate::binary::{muster, ok};
use crate::enrolled;

/// Runs `muster ARGS` in `cwd`, off the async runtime so an in-process hub answers.
async fn run_in(cwd: &Path, args: Vec<String>) -> Output {
    let cwd = cwd.to_path_buf();
    tokio::task::spawn_blocking(move || muster(&cwd).args(&args).output().unwrap())
        .await
        .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `muster status` while another process holds the config dir's lock to write: it
/// deletes none of that write in progress and still reports what the dir holds.
#[tokio::test]
async fn status_deletes_nothing_another_process_is_writing() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let (agent, _) = enrolled(&hub, "locked-01").await;
    let dir = agent.dir.path().to_path_buf();
    let writer = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(".lock"))
        .unwrap();
    writer.lock().unwrap();
    std::fs::create_dir(dir.join(".staging")).unwrap();
    std::fs::write(dir.join(".staging/key.pem"), "half written").unwrap();
    std::fs::write(dir.join(".config.json.tmp-writer"), "half written").unwrap();

    let out = run_in(
        agent.root(),
        strings(&["status", "--json", "--config-dir", &path(&dir)]),
    )
    .await;
    let status: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(status["name"], "locked-01");
    assert_eq!(status["hub"]["agent"]["name"], "locked-01");
    assert!(
        dir.join(".staging/key.pem").exists(),
        "the write in progress"
    );
    assert!(dir.join(".config.json.tmp-writer").exists());
    drop(writer);
    hub.stop().await;
}
