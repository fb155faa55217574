//! The hubs a session bench measures: hub processes it starts itself (so it can
//! restart or kill -9 them), or hubs already running; and what their `/metrics`
//! say about them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use muster_client::HubClient;

/// How the bench starts its hubs.
pub struct HubSpawn {
    pub heartbeat_interval: Duration,
    pub hub_lease: Duration,
    pub db: Option<String>,
    /// Hubs after the first get the first one's secret (they share its database).
    pub secret: Option<String>,
    /// The first hub creates this admin user (for reading the dashboard).
    pub first_admin: Option<(String, String)>,
}

/// A hub process this bench started.
pub struct HubProc {
    child: Child,
    pub url: String,
    pub data: PathBuf,
}

impl HubProc {
    /// Start a hub on `listen` with its data in `data`, and wait for its hub.json.
    pub fn start(data: &Path, listen: &str, spawn: &HubSpawn) -> Result<HubProc> {
        let exe = std::env::current_exe().context("cannot find this binary")?;
        let _ = std::fs::remove_file(data.join("hub.json"));
        let mut cmd = Command::new(exe);
        cmd.args(["hub", "--listen", listen, "--data-dir"])
            .arg(data)
            .args([
                "--heartbeat-interval",
                &format!("{}s", spawn.heartbeat_interval.as_secs()),
                "--hub-lease",
                &format!("{}s", spawn.hub_lease.as_secs().max(1)),
                // Every simulated agent connects from this machine's address.
                "--max-connections-per-source",
                "1000000",
            ])
            .env("MUSTER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // The hub's default keeps 1,024 of the open-files limit in reserve, which
        // on a 20,000 limit leaves room for 18,976 sessions; the bench wants 19,000.
        if let Some(limit) = open_files_limit() {
            cmd.args(["--max-connections", &limit.saturating_sub(300).to_string()]);
        }
        if let Some(db) = &spawn.db {
            cmd.args(["--db", db]);
        }
        if let Some((user, password)) = &spawn.first_admin {
            cmd.env("MUSTER_ADMIN_USER", user)
                .env("MUSTER_ADMIN_PASSWORD", password);
        }
        if let Some(secret) = &spawn.secret {
            cmd.env("MUSTER_SECRET", secret);
        }
        let mut child = cmd.spawn().context("cannot start the hub")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(text) = std::fs::read_to_string(data.join("hub.json"))
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(url) = v["url"].as_str()
            {
                return Ok(HubProc {
                    child,
                    url: url.to_owned(),
                    data: data.to_path_buf(),
                });
            }
            if let Some(status) = child.try_wait()? {
                return Err(anyhow!("the hub exited at start ({status})"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(anyhow!("the hub did not start in 60 s"))
    }

    /// The address it listens on, to start it again there.
    pub fn listen(&self) -> String {
        self.url.trim_start_matches("https://").to_owned()
    }

    /// SIGTERM, and wait for it to end (it tells its sessions to come back); how
    /// long that took.
    pub fn stop(mut self) -> Result<Duration> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            if self.child.try_wait()?.is_some() {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err(anyhow!("the hub did not stop on SIGTERM within 120 s"))
    }

    /// kill -9: no goodbye to its sessions, no lease given back.
    pub fn crash(mut self) -> Result<()> {
        self.child.kill().context("kill -9 of the hub")?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for HubProc {
    /// A bench that fails half-way leaves no hub behind (no-op once reaped).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The figures the bench reads from one hub's `/metrics`, in one scrape.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scrape {
    pub rss_kib: u64,
    pub cpu_s: f64,
    pub heartbeats: u64,
    pub sessions: u64,
    /// `muster_agents{status="online"}`: the whole fleet as this hub sees it.
    pub online: u64,
}

pub async fn scrape(hub: &HubClient) -> Result<Scrape> {
    let (status, body) = hub.get_raw("/metrics").await?;
    if status != 200 {
        return Err(anyhow!("{}/metrics answered {status}", hub.base_url()));
    }
    let text = String::from_utf8_lossy(&body);
    let get = |name: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .with_context(|| format!("{}/metrics has no {name}", hub.base_url()))
    };
    Ok(Scrape {
        rss_kib: (get("process_resident_memory_bytes")? / 1024.0) as u64,
        cpu_s: get("process_cpu_seconds_total")?,
        heartbeats: get("muster_heartbeats_total")? as u64,
        sessions: get("muster_sessions_live")? as u64,
        online: get("muster_agents{status=\"online\"}")? as u64,
    })
}

pub async fn scrape_all(hubs: &[HubClient]) -> Result<Vec<Scrape>> {
    let mut all = Vec::with_capacity(hubs.len());
    for h in hubs {
        all.push(scrape(h).await?);
    }
    Ok(all)
}

/// Memory in use on the whole machine (MemTotal − MemAvailable), KiB.
pub fn machine_used_kib() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("/proc/meminfo has no {name}"))
    };
    Ok(field("MemTotal:")?.saturating_sub(field("MemAvailable:")?))
}

/// This process's soft open-files limit (workers inherit it).
pub fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
