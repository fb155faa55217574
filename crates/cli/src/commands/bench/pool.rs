//! The parent's side of the session workers ([`super::worker`]): start them, spread
//! the identities over them, add up what they report, and hand revocations to
//! whoever waits for them. One thread per worker reads its stdout.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::sync::oneshot;

use crate::commands::bench::sim::Sim;
use crate::commands::bench::worker::{Command, Report, Setup, SimSpec};

/// The latest status of each worker, and answers not yet collected.
#[derive(Default)]
struct Inbox {
    status: Vec<Option<Totals>>,
    rtts: Vec<Vec<u64>>,
    connects: Vec<Vec<u64>>,
    back: Vec<Vec<u64>>,
    answered: usize,
    revoked: HashMap<String, oneshot::Sender<u64>>,
}

pub struct Pool {
    children: Vec<(Child, ChildStdin)>,
    inbox: Arc<Mutex<Inbox>>,
    hubs: usize,
}

/// What one worker reports, or all of them add up to.
#[derive(Clone)]
pub struct Totals {
    pub connected: usize,
    pub gave_up: usize,
    pub per_hub: Vec<usize>,
    pub back: usize,
}

impl Pool {
    /// Start `procs` workers holding `sims` between them; agent `i` starts on hub
    /// `i % hubs.len()`.
    pub fn start(
        dir: &Path,
        procs: usize,
        hubs: &[String],
        ca_pem: &str,
        sims: Vec<Sim>,
    ) -> Result<Pool> {
        let exe = std::env::current_exe().context("cannot find this binary")?;
        let mut shares: Vec<Vec<SimSpec>> = (0..procs).map(|_| Vec::new()).collect();
        for (i, sim) in sims.into_iter().enumerate() {
            shares[i % procs].push(SimSpec {
                agent_id: sim.agent_id,
                cert_pem: sim.identity.cert_pem,
                key_pem: sim.identity.key_pem,
                agent_key: sim.agent_key,
                hub: i % hubs.len(),
            });
        }
        let inbox = Arc::new(Mutex::new(Inbox {
            status: vec![None; procs],
            ..Default::default()
        }));
        let mut children = Vec::with_capacity(procs);
        for (w, agents) in shares.into_iter().enumerate() {
            let path = dir.join(format!("worker-{w}.json"));
            let setup = Setup {
                hubs: hubs.to_vec(),
                ca_pem: ca_pem.to_owned(),
                open_gate: 64,
                agents,
            };
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            serde_json::to_writer(&mut file, &setup)?;
            drop(file);
            let mut child = Process::new(&exe)
                .args(["bench", "sessions-worker", "--setup"])
                .arg(&path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("cannot start a session worker")?;
            let stdin = child
                .stdin
                .take()
                .ok_or_else(|| anyhow!("no worker stdin"))?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| anyhow!("no worker stdout"))?;
            let inbox = inbox.clone();
            std::thread::spawn(move || read_reports(w, stdout, &inbox));
            children.push((child, stdin));
        }
        Ok(Pool {
            children,
            inbox,
            hubs: hubs.len(),
        })
    }

    /// Be told when `agent_id`'s session is closed by a revocation (wall-clock µs).
    pub fn on_revoked(&self, agent_id: &str) -> Result<oneshot::Receiver<u64>> {
        let (tx, rx) = oneshot::channel();
        self.lock()?.revoked.insert(agent_id.to_owned(), tx);
        Ok(rx)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inbox>> {
        self.inbox.lock().map_err(|_| anyhow!("lock poisoned"))
    }

    pub fn totals(&self) -> Result<Totals> {
        let inbox = self.lock()?;
        let mut t = Totals {
            connected: 0,
            gave_up: 0,
            per_hub: vec![0; self.hubs],
            back: 0,
        };
        for w in inbox.status.iter().flatten() {
            t.connected += w.connected;
            t.gave_up += w.gave_up;
            t.back += w.back;
            for (sum, n) in t.per_hub.iter_mut().zip(&w.per_hub) {
                *sum += n;
            }
        }
        Ok(t)
    }

    /// Send `cmd` to every worker.
    pub fn tell(&mut self, cmd: Command) -> Result<()> {
        let line = serde_json::to_string(&cmd)?;
        for (_, stdin) in &mut self.children {
            writeln!(stdin, "{line}").context("a session worker has gone")?;
            stdin.flush()?;
        }
        Ok(())
    }

    /// Send `cmd` and gather every worker's answer (all samples, merged).
    pub async fn ask(&mut self, cmd: Command) -> Result<Vec<u64>> {
        self.lock()?.answered = 0;
        self.tell(cmd)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            {
                let mut inbox = self.lock()?;
                if inbox.answered >= self.children.len() {
                    let all = match cmd {
                        Command::Rtts => std::mem::take(&mut inbox.rtts),
                        Command::Connects => std::mem::take(&mut inbox.connects),
                        Command::Back => std::mem::take(&mut inbox.back),
                        Command::Measure | Command::Mark => Vec::new(),
                    };
                    let mut merged: Vec<u64> = all.into_iter().flatten().collect();
                    merged.sort_unstable();
                    return Ok(merged);
                }
            }
            if Instant::now() > deadline {
                bail!("the session workers did not answer {cmd:?} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Close every worker's stdin (they exit) and reap them.
    pub fn stop(&mut self) {
        for (mut child, stdin) in std::mem::take(&mut self.children) {
            drop(stdin);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_reports(w: usize, stdout: std::process::ChildStdout, inbox: &Mutex<Inbox>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(report) = serde_json::from_str::<Report>(&line) else {
            continue;
        };
        let Ok(mut inbox) = inbox.lock() else { break };
        match report {
            Report::Status {
                connected,
                gave_up,
                per_hub,
                back,
            } => {
                inbox.status[w] = Some(Totals {
                    connected,
                    gave_up,
                    per_hub,
                    back,
                })
            }
            Report::Revoked { agent_id, at_us } => {
                if let Some(tx) = inbox.revoked.remove(&agent_id) {
                    let _ = tx.send(at_us);
                }
            }
            Report::Rtts { us } => {
                inbox.rtts.push(us);
                inbox.answered += 1;
            }
            Report::Connects { at_us } => {
                inbox.connects.push(at_us);
                inbox.answered += 1;
            }
            Report::Back { at_us } => {
                inbox.back.push(at_us);
                inbox.answered += 1;
            }
        }
    }
}
