//! `muster bench sessions-worker` (hidden): one child process of `muster bench
//! sessions`, holding its share of the simulated agents' sessions. One process can
//! hold only about 19,000 sockets (the open-files limit), so the bench splits its
//! agents across several of these.
//!
//! The parent writes the identities to a 0600 file and names it with `--setup`; the
//! worker reads it and deletes it at once. Then the parent drives it with one word a
//! line on stdin ([`Command`]) and reads [`Report`]s, one JSON object a line, on
//! stdout. Times are wall-clock microseconds (both processes run on one machine), so
//! the parent can compare them with its own. The worker exits when its stdin closes,
//! so it never outlives the parent.
//!
//! A simulated agent knows every hub URL and fails over like the real agent: a lost
//! session is retried on the same hub first (the one that worked last); a failed
//! connection moves to another URL picked at random (so a dead hub's agents spread
//! over the others instead of all landing on the one listed after it); every retry
//! waits a full-jitter backoff.

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow};
use muster_agent::session::Backoff;
use muster_client::{ClientIdentity, connect_session};
use muster_proto::{AgentHealth, AgentMessage, HubMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::commands::bench::sim::rand_ms;

/// What the parent hands a worker.
#[derive(Serialize, Deserialize)]
pub struct Setup {
    /// Every hub's URL, in the same order for every worker.
    pub hubs: Vec<String>,
    pub ca_pem: String,
    /// TLS handshakes in flight at once in this worker.
    pub open_gate: usize,
    pub agents: Vec<SimSpec>,
}

/// One simulated agent's identity and the hub it connects to first.
#[derive(Serialize, Deserialize)]
pub struct SimSpec {
    pub agent_id: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub agent_key: String,
    pub hub: usize,
}

/// What the parent asks, one a line on stdin.
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Start sampling heartbeat round trips.
    Measure,
    /// Stop sampling and send them ([`Report::Rtts`]).
    Rtts,
    /// Send the time of each agent's first connection ([`Report::Connects`]).
    Connects,
    /// From now on record each agent's first new connection.
    Mark,
    /// Send those ([`Report::Back`]).
    Back,
}

/// What a worker tells the parent, one a line on stdout.
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Report {
    /// Every tenth of a second.
    Status {
        connected: usize,
        gave_up: usize,
        /// Sessions held on each hub (index into [`Setup::hubs`]).
        per_hub: Vec<usize>,
        /// Agents connected again since the last [`Command::Mark`].
        back: usize,
    },
    /// A session closed by the hub's `revoked`.
    Revoked {
        agent_id: String,
        at_us: u64,
    },
    Rtts {
        us: Vec<u64>,
    },
    Connects {
        at_us: Vec<u64>,
    },
    Back {
        at_us: Vec<u64>,
    },
}

/// Wall-clock microseconds since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[derive(Default)]
struct State {
    connected: AtomicUsize,
    gave_up: AtomicUsize,
    per_hub: Vec<AtomicUsize>,
    measuring: AtomicBool,
    rtts_us: Mutex<Vec<u64>>,
    /// First connection of each agent (index into the setup's agents).
    first_us: Mutex<Vec<u64>>,
    /// Bumped by every [`Command::Mark`]; an agent records its return once per mark.
    mark: AtomicUsize,
    back_us: Mutex<Vec<u64>>,
}

fn emit(report: &Report) {
    if let Ok(line) = serde_json::to_string(report) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

pub async fn run(setup_path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(setup_path)
        .with_context(|| format!("cannot read {}", setup_path.display()))?;
    let _ = std::fs::remove_file(setup_path);
    let setup: Setup = serde_json::from_str(&text).context("the worker setup file")?;
    if setup.hubs.is_empty() {
        return Err(anyhow!("the worker setup names no hub"));
    }
    let n = setup.agents.len();
    let state = Arc::new(State {
        per_hub: setup.hubs.iter().map(|_| AtomicUsize::new(0)).collect(),
        first_us: Mutex::new(vec![0; n]),
        ..Default::default()
    });
    let hubs = Arc::new(setup.hubs);
    let ca = Arc::new(setup.ca_pem);
    let gate = Arc::new(Semaphore::new(setup.open_gate.max(1)));
    for (i, spec) in setup.agents.into_iter().enumerate() {
        tokio::spawn(simulate(
            i,
            spec,
            hubs.clone(),
            ca.clone(),
            state.clone(),
            gate.clone(),
        ));
    }

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if let Ok(cmd) = serde_json::from_str::<Command>(line.trim()) {
                let _ = tx.send(cmd);
            }
        }
        // stdin closed: the parent is gone or done.
    });
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => emit(&status(&state)),
            cmd = rx.recv() => match cmd {
                None => return Ok(()),
                Some(cmd) => answer(cmd, &state),
            },
        }
    }
}

fn status(state: &State) -> Report {
    Report::Status {
        connected: state.connected.load(Ordering::Relaxed),
        gave_up: state.gave_up.load(Ordering::Relaxed),
        per_hub: state
            .per_hub
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .collect(),
        back: state.back_us.lock().map(|b| b.len()).unwrap_or(0),
    }
}

fn answer(cmd: Command, state: &State) {
    let take = |m: &Mutex<Vec<u64>>| -> Vec<u64> {
        m.lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    };
    match cmd {
        Command::Measure => state.measuring.store(true, Ordering::Relaxed),
        Command::Rtts => {
            state.measuring.store(false, Ordering::Relaxed);
            emit(&Report::Rtts {
                us: take(&state.rtts_us),
            });
        }
        Command::Connects => emit(&Report::Connects {
            at_us: state
                .first_us
                .lock()
                .map(|v| v.iter().copied().filter(|t| *t > 0).collect())
                .unwrap_or_default(),
        }),
        Command::Mark => {
            if let Ok(mut b) = state.back_us.lock() {
                b.clear();
            }
            state.mark.fetch_add(1, Ordering::Relaxed);
        }
        Command::Back => emit(&Report::Back {
            at_us: state.back_us.lock().map(|v| v.clone()).unwrap_or_default(),
        }),
    }
}

/// One simulated agent: connect, hello, heartbeat, fail over and reconnect.
async fn simulate(
    index: usize,
    spec: SimSpec,
    hubs: Arc<Vec<String>>,
    ca: Arc<String>,
    state: Arc<State>,
    gate: Arc<Semaphore>,
) {
    let identity = ClientIdentity {
        cert_pem: spec.cert_pem,
        key_pem: spec.key_pem,
    };
    let mut at = spec.hub % hubs.len();
    let mut backoff = Backoff::default();
    // The mark this agent last reported its return for.
    let mut seen_mark = state.mark.load(Ordering::Relaxed);
    loop {
        let permit = gate.acquire().await;
        let connected = connect_session(&hubs[at], &ca, &identity, &spec.agent_key).await;
        let mut session = match connected {
            Ok(s) => s,
            Err(e) if e.is_final() => {
                state.gave_up.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                drop(permit);
                at = another(at, hubs.len());
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let hello = crate::commands::bench::sim::sim_hello();
        let interval = match (session.send(&hello).await, session.recv().await) {
            (
                Ok(()),
                Ok(Some(HubMessage::Welcome {
                    heartbeat_interval_s,
                    ..
                })),
            ) => Duration::from_secs(heartbeat_interval_s.max(1)),
            _ => {
                drop(permit);
                at = another(at, hubs.len());
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        drop(permit);
        backoff.reset();
        let now = now_us();
        if let Ok(mut f) = state.first_us.lock()
            && f[index] == 0
        {
            f[index] = now;
        }
        let mark = state.mark.load(Ordering::Relaxed);
        if mark != seen_mark {
            seen_mark = mark;
            if let Ok(mut b) = state.back_us.lock() {
                b.push(now);
            }
        }
        state.connected.fetch_add(1, Ordering::Relaxed);
        state.per_hub[at].fetch_add(1, Ordering::Relaxed);
        // Spread heartbeats over the interval instead of all at once.
        let first = Duration::from_millis(rand_ms(interval.as_millis() as u64));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, interval);
        let mut sent_at = None;
        let wait = loop {
            tokio::select! {
                _ = tick.tick() => {
                    let hb = AgentMessage::Heartbeat { status: AgentHealth::Ok, problems: Vec::new() };
                    if session.send(&hb).await.is_err() {
                        break backoff.next_delay();
                    }
                    sent_at = Some(Instant::now());
                }
                frame = session.recv() => match frame {
                    Ok(Some(HubMessage::Ack { .. })) => {
                        if let Some(t) = sent_at.take()
                            && state.measuring.load(Ordering::Relaxed)
                            && let Ok(mut v) = state.rtts_us.lock()
                        {
                            v.push(t.elapsed().as_micros() as u64);
                        }
                    }
                    Ok(Some(HubMessage::Revoked { .. })) => {
                        let at_us = now_us();
                        state.connected.fetch_sub(1, Ordering::Relaxed);
                        state.per_hub[at].fetch_sub(1, Ordering::Relaxed);
                        emit(&Report::Revoked { agent_id: spec.agent_id.clone(), at_us });
                        return;
                    }
                    Ok(Some(HubMessage::Shutdown { reconnect_within_ms })) => {
                        break Duration::from_millis(250 + rand_ms(reconnect_within_ms.saturating_sub(250)));
                    }
                    Ok(Some(HubMessage::Probe { id, probe, .. })) => {
                        let answer = super::sim::sim_probe_answer(id, &probe, &spec.agent_id);
                        if session.send(&answer).await.is_err() {
                            break backoff.next_delay();
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break backoff.next_delay(),
                },
            }
        };
        state.connected.fetch_sub(1, Ordering::Relaxed);
        state.per_hub[at].fetch_sub(1, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
    }
}

/// A hub other than `at`, at random (`at` itself when there is only one).
fn another(at: usize, hubs: usize) -> usize {
    if hubs < 2 {
        return at;
    }
    (at + 1 + rand::random_range(0..hubs - 1)) % hubs
}
