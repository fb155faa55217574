//! Crash and outage drills (`scripts/chaos`): the hub as a real child process, killed
//! with SIGKILL mid-load, its PostgreSQL stopped under it, its disk filled. Each
//! drill asserts what the hub promises, not just prints: nothing a client saw
//! succeed is lost, token uses equal agents created, the audit chain verifies, every
//! agent has its `agent.enrolled` entry, outages answer 503 with one JSON line (never
//! 500, never a hang) and the hub recovers by itself.
//!
//! All `#[ignore]`: they take minutes, the disk drill needs root (tmpfs) and the
//! PostgreSQL drills need its binaries or a server. Each prints one
//! `CHAOS-SUMMARY` line that `scripts/chaos` collects.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use muster_client::{ClientError, ClientOptions, EnrollOutcome, HubClient, Trust};
use muster_proto::CreateTokenRequest;

use crate::request;

const BIN: &str = env!("CARGO_BIN_EXE_muster");

/// Rounds of the kill -9 drill (`MUSTER_CHAOS_ROUNDS`, default 10).
fn rounds() -> usize {
    std::env::var("MUSTER_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// Enrollments per round of the kill -9 drill.
const PER_ROUND: usize = 1000;
/// Clients enrolling at once.
const CONCURRENCY: usize = 32;
/// Longer than any answer may take: a request still open after this is a hang.
const REQUEST_DEADLINE: Duration = Duration::from_secs(20);

/// A port free now, kept for the whole drill so clients find the restarted hub.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A `muster hub` child process on a fixed port and data dir, restartable.
struct HubProc {
    child: Option<Child>,
    data: PathBuf,
    port: u16,
    db: Option<String>,
    log: PathBuf,
    starts: usize,
    /// More `muster hub` flags (shorter certificates, heartbeats).
    extra: Vec<String>,
}

impl HubProc {
    fn new(data: &Path, db: Option<String>) -> Self {
        std::fs::create_dir_all(data).unwrap();
        HubProc {
            child: None,
            data: data.to_path_buf(),
            port: free_port(),
            db,
            log: data.with_extension("log"),
            starts: 0,
            extra: Vec::new(),
        }
    }

    /// Start the hub and wait until it answers `/readyz` 200: it must start cleanly
    /// every time, whatever the last one left behind.
    async fn start(&mut self) {
        assert!(self.child.is_none(), "hub already running");
        let _ = std::fs::remove_file(self.data.join("hub.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("MUSTER_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["hub", "--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--audit-syslog", "off", "--approval-queue", "off"])
            .env("MUSTER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(db) = &self.db {
            cmd.args(["--db", db]);
        }
        cmd.args(&self.extra);
        let started = Instant::now();
        self.child = Some(cmd.spawn().unwrap());
        self.starts += 1;
        let pid = self.child.as_ref().unwrap().id();
        while started.elapsed() < Duration::from_secs(60) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "hub start #{} exited with {status}:\n{}",
                    self.starts,
                    self.log_tail()
                );
            }
            let json: Option<serde_json::Value> = std::fs::read(self.data.join("hub.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if json.is_some_and(|j| j["pid"].as_u64() == Some(u64::from(pid)))
                && let Ok((200, _)) = self.anonymous().get_raw("/readyz").await
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "hub start #{} not ready in 60 s:\n{}",
            self.starts,
            self.log_tail()
        );
    }

    /// SIGKILL: no shutdown path runs.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("hub not running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait: the clean shutdown.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "hub exited {status}:\n{}",
                    self.log_tail()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("hub did not stop within 30 s of SIGTERM");
    }

    /// Whether the process is still there (it must survive every outage).
    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn ca_hash(&self) -> muster_ca::CaHash {
        let pem = std::fs::read_to_string(self.data.join("ca.pem")).unwrap();
        muster_ca::CaHash::of_pem(&pem).unwrap()
    }

    fn client(&self) -> HubClient {
        HubClient::with_options(
            &self.url(),
            Trust::Hash(self.ca_hash()),
            ClientOptions {
                timeout: Some(REQUEST_DEADLINE),
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn anonymous(&self) -> HubClient {
        self.client()
    }

    fn admin(&self) -> HubClient {
        let key =
            std::fs::read_to_string(self.data.join(muster_hub::INITIAL_ADMIN_KEY_FILE)).unwrap();
        self.client().with_bearer(key.trim().to_owned())
    }

    /// The database URL for checks from the test.
    fn db_url(&self) -> String {
        self.db.clone().unwrap_or_else(|| {
            format!("sqlite://{}?mode=ro", self.data.join("muster.db").display())
        })
    }
}

impl Drop for HubProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One enrollment attempt as a client sees it.
enum Seen {
    /// 2xx with an agent id.
    Created(String),
    /// Worth trying again: the hub is down or restarting, busy (429) or unavailable (503).
    Retry(String),
    /// A definitive refusal or a server error: the drill fails on these.
    Failed(String),
}

async fn enroll_once(client: &HubClient, token: &str, name: &str) -> Seen {
    let name = name.to_owned();
    let (req, _key) = tokio::task::spawn_blocking(move || request(&name, Some(&name)))
        .await
        .unwrap();
    match client.enroll(Some(token), &req).await {
        Ok(EnrollOutcome::Created(r) | EnrollOutcome::Reenrolled(r)) => Seen::Created(r.agent_id),
        Ok(EnrollOutcome::Pending(_)) => Seen::Failed("202 pending".to_owned()),
        Err(ClientError::Api { status, code, .. }) if status == 429 || status == 503 => {
            Seen::Retry(format!("{status} {code}"))
        }
        // Cut off by the kill (refused, reset, or the answer half read): the
        // enrollment may or may not have committed, and the client cannot know.
        Err(ClientError::Unreachable { .. }) => Seen::Retry("unreachable".to_owned()),
        Err(ClientError::Protocol(m)) => Seen::Retry(format!("cut: {m}")),
        Err(e) => Seen::Failed(e.to_string()),
    }
}

async fn pg_admin_url() -> String {
    std::env::var("MUSTER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn pg_exec(admin: &str, sql: String) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// A pool on the hub's database for the checks.
async fn checks_pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::pool::PoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap()
}

/// Agents, their audit rows, token uses: what the database must say after the drill.
struct Ledger {
    agents: HashSet<String>,
    token_uses: i64,
    audited: HashSet<String>,
}

async fn ledger(url: &str, token_id: &str) -> Ledger {
    let pool = checks_pool(url).await;
    let agents: Vec<String> = sqlx::query_scalar("SELECT id FROM agents")
        .fetch_all(&pool)
        .await
        .unwrap();
    let token_uses: i64 = sqlx::query_scalar("SELECT uses FROM tokens WHERE id = $1")
        .bind(token_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let targets: Vec<String> =
        sqlx::query_scalar("SELECT target FROM audit_log WHERE action = 'agent.enrolled'")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    Ledger {
        agents: agents.into_iter().collect(),
        token_uses,
        audited: targets
            .iter()
            .filter_map(|t| t.strip_prefix("agent:").map(str::to_owned))
            .collect(),
    }
}

/// What the drill saw, per round and in all.
#[derive(Default)]
struct Tally {
    attempts: AtomicUsize,
    seen: Mutex<Vec<String>>,
    retries: Mutex<BTreeMap<String, usize>>,
    failed: Mutex<Vec<String>>,
}

impl Tally {
    fn seen_len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// One round: `PER_ROUND` enrollments at `CONCURRENCY`, the hub killed with
/// SIGKILL once a random share of them succeeded, restarted at once; each
/// enrollment cut off or refused for the outage is tried again (new key, new name).
async fn kill_round(hub: &mut HubProc, token: &str, round: usize, tally: &Tally) -> Duration {
    let client = hub.client();
    let next = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let round_seen = AtomicUsize::new(0);
    let kill_at = rand::random_range(PER_ROUND / 5..PER_ROUND * 4 / 5);
    let workers = (0..CONCURRENCY).map(|_| {
        let (client, next, round_seen) = (&client, &next, &round_seen);
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= PER_ROUND {
                    return;
                }
                for attempt in 0.. {
                    tally.attempts.fetch_add(1, Ordering::Relaxed);
                    let name = format!("k{round}-{i}-{attempt}");
                    match enroll_once(client, token, &name).await {
                        Seen::Created(id) => {
                            tally.seen.lock().unwrap().push(id);
                            round_seen.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Seen::Retry(why) => {
                            *tally.retries.lock().unwrap().entry(why).or_default() += 1;
                            assert!(attempt < 600, "enrollment {i} never got through");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Seen::Failed(why) => {
                            tally.failed.lock().unwrap().push(why);
                            break;
                        }
                    }
                }
            }
        }
    });
    let killer = async {
        while round_seen.load(Ordering::Relaxed) < kill_at && !done.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if done.load(Ordering::Relaxed) {
            panic!("round {round} ended before the kill");
        }
        hub.kill();
        let restart = Instant::now();
        hub.start().await;
        restart.elapsed()
    };
    let all = async {
        futures_util::future::join_all(workers).await;
        done.store(true, Ordering::Relaxed);
    };
    let (_, restart) = tokio::join!(all, killer);
    restart
}

/// Drill 1 on one backend: rounds of kill -9 during enrollments, then the ledger.
async fn kill_drill(backend: &str, db: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = HubProc::new(&dir.path().join("data"), db);
    hub.start().await;
    let token = hub
        .admin()
        .create_token(&CreateTokenRequest {
            max_uses: None,
            ttl_s: None,
            pattern: None,
            cidrs: Vec::new(),
            labels: Default::default(),
            allow_replace: false,
            description: Some("chaos kill -9 drill".to_owned()),
        })
        .await
        .unwrap();
    let tally = Tally::default();
    let rounds = rounds();
    let mut restarts = Vec::new();
    let started = Instant::now();
    for round in 0..rounds {
        let before = tally.seen_len();
        let restart = kill_round(&mut hub, &token.token, round, &tally).await;
        eprintln!(
            "[{backend}] round {round}: {} seen succeeding, restart ready in {:.2} s",
            tally.seen_len() - before,
            restart.as_secs_f64()
        );
        restarts.push(restart);
    }
    let elapsed = started.elapsed();
    let verify = hub.admin().verify_audit().await.unwrap();
    hub.stop();

    let failed = tally.failed.lock().unwrap().clone();
    let seen: Vec<String> = tally.seen.lock().unwrap().clone();
    let ledger = ledger(&hub.db_url(), &token.id).await;
    let lost: Vec<&String> = seen
        .iter()
        .filter(|id| !ledger.agents.contains(*id))
        .collect();
    let unaudited: Vec<&String> = ledger
        .agents
        .iter()
        .filter(|id| !ledger.audited.contains(*id))
        .collect();
    let max_restart = restarts.iter().max().copied().unwrap_or_default();
    let summary = format!(
        "CHAOS-SUMMARY kill-9 backend={backend} rounds={rounds} attempted={} seen_ok={} present={} \
         lost={} token_uses={} agents={} unaudited={} audit_verify={} (entries {}) hub_starts={} \
         max_restart_ready={:.2}s retries={:?} failed={} elapsed={:.0}s",
        tally.attempts.load(Ordering::Relaxed),
        seen.len(),
        seen.len() - lost.len(),
        lost.len(),
        ledger.token_uses,
        ledger.agents.len(),
        unaudited.len(),
        if verify.ok { "ok" } else { "BROKEN" },
        verify.count,
        hub.starts,
        max_restart.as_secs_f64(),
        tally.retries.lock().unwrap(),
        failed.len(),
        elapsed.as_secs_f64(),
    );
    println!("{summary}");
    assert!(failed.is_empty(), "enrollments refused: {failed:?}");
    assert!(lost.is_empty(), "lost enrollments: {lost:?}");
    assert_eq!(
        ledger.token_uses,
        i64::try_from(ledger.agents.len()).unwrap(),
        "token uses != agents created"
    );
    assert!(
        unaudited.is_empty(),
        "agents without agent.enrolled: {unaudited:?}"
    );
    assert!(verify.ok, "audit chain broken: {verify:?}");
    assert!(seen.len() >= rounds * PER_ROUND * 9 / 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos drill: minutes long; run by scripts/chaos"]
async fn kill9_during_enrollments_sqlite() {
    kill_drill("sqlite", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos drill: minutes long, needs PostgreSQL; run by scripts/chaos"]
async fn kill9_during_enrollments_postgres() {
    let admin = pg_admin_url().await;
    let name = format!("muster_chaos_{}", rand::random::<u32>());
    pg_exec(&admin, format!("CREATE DATABASE \"{name}\"")).await;
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("bad PostgreSQL URL"),
    };
    let outcome = tokio::spawn(async move { kill_drill("postgres", Some(url)).await }).await;
    pg_exec(
        &admin,
        format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    )
    .await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A throwaway PostgreSQL cluster of our own (initdb into a temp dir, a spare port),
/// the only kind a drill may stop: the machine's shared server is never touched.
struct PrivatePg {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePg {
    /// `pg_ctl` and friends, run as `postgres` when we are root (initdb refuses root).
    fn owner_cmd(program: &str) -> Command {
        let bin = ["/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/bin"]
            .iter()
            .map(|d| Path::new(d).join(program))
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(program));
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        }
    }

    fn run(mut cmd: Command, what: &str) {
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("muster-chaos-pg.")
            .tempdir_in("/tmp")
            .unwrap();
        let _ = Command::new("chown")
            .args(["postgres:"])
            .arg(dir.path())
            .status();
        let mut initdb = Self::owner_cmd("initdb");
        initdb.arg("-D").arg(dir.path().join("data")).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        Self::run(initdb, "initdb");
        let pg = PrivatePg {
            dir,
            port: free_port(),
        };
        pg.start();
        pg
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut c = Self::owner_cmd("pg_ctl");
        c.arg("-D").arg(self.dir.path().join("data")).args(args);
        c
    }

    fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let mut c = self.pg_ctl(&["-w", "-t", "30", "-o", &opts, "-l"]);
        c.arg(log).arg("start");
        Self::run(c, "pg_ctl start");
    }

    /// The crash of a database server: no checkpoint, every connection cut.
    fn stop_immediate(&self) {
        Self::run(
            self.pg_ctl(&["-m", "immediate", "-w", "stop"]),
            "pg_ctl stop",
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if self.dir.path().join("data/postmaster.pid").exists() {
            let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]).output();
        }
    }
}

/// One request made during the PostgreSQL drill, as the client saw it.
#[derive(Debug, Clone)]
struct Call {
    /// Seconds since the drill started.
    at: f64,
    what: &'static str,
    /// HTTP status, or 0 for no answer.
    status: u16,
    took: Duration,
    /// Error body for refusals.
    body: String,
}

/// POST or GET through the raw client, timed.
async fn timed(
    what: &'static str,
    t0: Instant,
    f: impl std::future::Future<Output = Result<(u16, Vec<u8>), ClientError>>,
) -> Call {
    let start = Instant::now();
    let r = f.await;
    let took = start.elapsed();
    let (status, body) = match r {
        Ok((s, b)) => (s, String::from_utf8_lossy(&b).into_owned()),
        Err(e) => (0, e.to_string()),
    };
    Call {
        at: start.duration_since(t0).as_secs_f64(),
        what,
        status,
        took,
        body,
    }
}

fn enroll_body(name: &str) -> Vec<u8> {
    serde_json::to_vec(&request(name, Some(name)).0).unwrap()
}

/// A refusal must be one line of JSON `{"error":{"code","message"}}`.
fn assert_one_line_json_error(call: &Call, code: &str) {
    assert!(
        !call.body.trim_end().contains('\n'),
        "{}: error body is not one line: {}",
        call.what,
        call.body
    );
    let v: serde_json::Value = serde_json::from_str(&call.body)
        .unwrap_or_else(|_| panic!("{}: error body is not JSON: {}", call.what, call.body));
    assert_eq!(v["error"]["code"], code, "{}: {}", call.what, call.body);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

/// Drill 2: the hub's PostgreSQL crashes (`pg_ctl stop -m immediate`) under load and
/// comes back a few seconds later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos drill: needs PostgreSQL binaries (initdb, pg_ctl); run by scripts/chaos"]
async fn postgres_restart_during_load() {
    let pg = PrivatePg::start_new();
    let dir = tempfile::tempdir().unwrap();
    let mut hub = HubProc::new(&dir.path().join("data"), Some(pg.url()));
    hub.start().await;
    let admin = hub.admin();
    let token = admin
        .create_token(&CreateTokenRequest {
            max_uses: None,
            ttl_s: None,
            pattern: None,
            cidrs: Vec::new(),
            labels: Default::default(),
            allow_replace: false,
            description: Some("chaos postgres drill".to_owned()),
        })
        .await
        .unwrap();
    let t0 = Instant::now();
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let n = Arc::new(AtomicUsize::new(0));

    // Load: enrollers, a reader and a readiness poller, each recording every answer.
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, calls, seen, stop, n, tok) = (
            hub.client(),
            calls.clone(),
            seen.clone(),
            stop.clone(),
            n.clone(),
            token.token.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let name = format!("pg-{}", n.fetch_add(1, Ordering::Relaxed));
                let body = enroll_body(&name);
                let call = timed(
                    "enroll",
                    t0,
                    client.post_raw("/api/v1/enroll", body, Some(&tok)),
                )
                .await;
                if call.status == 201 {
                    let v: serde_json::Value = serde_json::from_str(&call.body).unwrap();
                    seen.lock()
                        .unwrap()
                        .push(v["agent_id"].as_str().unwrap().to_owned());
                } else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                calls.lock().unwrap().push(call);
            }
        }));
    }
    for what in ["agents", "readyz"] {
        let (client, calls, stop) = (admin.clone(), calls.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let path = if what == "agents" {
                    "/api/v1/agents?limit=50"
                } else {
                    "/readyz"
                };
                let call = timed(what, t0, client.get_raw(path)).await;
                calls.lock().unwrap().push(call);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_down = seen.lock().unwrap().len();
    pg.stop_immediate();
    let t_down = t0.elapsed().as_secs_f64();
    eprintln!("[pg] stopped PostgreSQL at {t_down:.2} s ({before_down} enrolled before)");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // While it is down: explicit probes of each kind of write and of readiness.
    let anon = hub.client();
    let (ready, enroll, create) = tokio::join!(
        timed("readyz (down)", t0, admin.get_raw("/readyz")),
        timed(
            "enroll (down)",
            t0,
            anon.post_raw("/api/v1/enroll", enroll_body("pg-down"), Some(&token.token)),
        ),
        timed(
            "token create (down)",
            t0,
            admin.post_raw("/api/v1/tokens", b"{}".to_vec(), None),
        ),
    );
    eprintln!("[pg] while down: {ready:?}\n{enroll:?}\n{create:?}");
    assert_eq!(ready.status, 503, "readyz while the database is down");
    for call in [&enroll, &create] {
        assert_eq!(call.status, 503, "{} while the database is down", call.what);
        assert_one_line_json_error(call, "unavailable");
        assert!(call.took < REQUEST_DEADLINE, "{} hung", call.what);
    }
    assert_one_line_json_error(&ready, "unavailable");
    let wait = Duration::from_secs(5)
        .saturating_sub(Duration::from_secs_f64(t0.elapsed().as_secs_f64() - t_down));
    tokio::time::sleep(wait).await;

    pg.start();
    let t_up = t0.elapsed().as_secs_f64();
    eprintln!("[pg] started PostgreSQL again at {t_up:.2} s");
    // The hub must come back by itself: ready, and writing.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut t_ready, mut t_write) = (None, None);
    while Instant::now() < deadline && (t_ready.is_none() || t_write.is_none()) {
        let recent: Vec<Call> = calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.at > t_up)
            .cloned()
            .collect();
        t_ready = t_ready.or(recent
            .iter()
            .find(|c| c.what == "readyz" && c.status == 200)
            .map(|c| c.at + c.took.as_secs_f64()));
        t_write = t_write.or(recent
            .iter()
            .find(|c| c.what == "enroll" && c.status == 201)
            .map(|c| c.at + c.took.as_secs_f64()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let create_after = admin
        .create_token(&CreateTokenRequest {
            max_uses: Some(1),
            ttl_s: Some(600),
            pattern: None,
            cidrs: Vec::new(),
            labels: Default::default(),
            allow_replace: false,
            description: None,
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let alive = hub.alive();
    let verify = admin.verify_audit().await.unwrap();
    let calls = calls.lock().unwrap().clone();
    let seen = seen.lock().unwrap().clone();
    hub.stop();
    let ledger = ledger(&pg.url(), &token.id).await;
    let lost = seen
        .iter()
        .filter(|id| !ledger.agents.contains(*id))
        .count();
    let mut by_status: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    for c in &calls {
        *by_status.entry((c.what, c.status)).or_default() += 1;
    }
    let slowest = calls.iter().map(|c| c.took).max().unwrap_or_default();
    let bad: Vec<&Call> = calls
        .iter()
        .filter(|c| c.status == 0 || (c.status >= 500 && c.status != 503))
        .collect();
    let bad_bodies: Vec<&Call> = calls
        .iter()
        .filter(|c| c.status == 503 && c.what != "readyz")
        .filter(|c| {
            serde_json::from_str::<serde_json::Value>(&c.body)
                .map(|v| v["error"]["code"] != "unavailable")
                .unwrap_or(true)
        })
        .collect();
    let summary = format!(
        "CHAOS-SUMMARY pg-restart down_for={:.1}s ready_after_up={} write_after_up={} \
         seen_ok={} lost={lost} slowest_answer={:.2}s hub_alive={alive} audit_verify={} \
         answers={by_status:?}",
        t_up - t_down,
        t_ready.map_or("never".to_owned(), |t| format!("{:.2}s", t - t_up)),
        t_write.map_or("never".to_owned(), |t| format!("{:.2}s", t - t_up)),
        seen.len(),
        slowest.as_secs_f64(),
        if verify.ok { "ok" } else { "BROKEN" },
    );
    println!("{summary}");
    assert!(alive, "the hub died:\n{}", hub.log_tail());
    assert!(bad.is_empty(), "answers that are not 2xx/4xx/503: {bad:?}");
    assert!(
        bad_bodies.is_empty(),
        "503s without our JSON error: {bad_bodies:?}"
    );
    assert!(slowest < REQUEST_DEADLINE, "an answer took {slowest:?}");
    assert!(t_ready.is_some(), "never ready again");
    assert!(t_write.is_some(), "never enrolled again");
    create_after.expect("token creation after recovery");
    assert_eq!(lost, 0);
    assert!(verify.ok, "{verify:?}");
    assert_eq!(
        ledger.token_uses,
        i64::try_from(ledger.agents.len()).unwrap()
    );
}

/// A small tmpfs mounted for the disk drill, unmounted however the drill ends
/// (`scripts/chaos` unmounts it too, should the test process itself be killed).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let _ = Command::new("umount")
            .arg(path)
            .stderr(Stdio::null())
            .status();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs (the disk drill needs root)");
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "remount tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

async fn integrity_check(db: &Path) -> String {
    let pool = checks_pool(&format!("sqlite://{}?mode=ro", db.display())).await;
    let r: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    r
}

/// Drill 3: the SQLite data dir's disk fills up (a 16 MiB tmpfs), then gets room back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos drill: needs root (mounts a tmpfs); run by scripts/chaos"]
async fn disk_full_sqlite() {
    let mnt = std::env::var_os("MUSTER_CHAOS_TMPFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/muster-chaos-tmpfs"));
    let fs = Tmpfs::mount(&mnt, "16m");
    let mut hub = HubProc::new(&fs.path.join("data"), None);
    // The hub's own log goes elsewhere: a full disk must not also silence the log.
    hub.log = std::env::temp_dir().join(format!("muster-chaos-disk-{}.log", std::process::id()));
    hub.start().await;
    let admin = hub.admin();
    let client = hub.client();
    let token = admin
        .create_token(&CreateTokenRequest {
            max_uses: None,
            ttl_s: None,
            pattern: None,
            cidrs: Vec::new(),
            labels: Default::default(),
            allow_replace: false,
            description: Some("chaos disk drill".to_owned()),
        })
        .await
        .unwrap();

    // Enroll at 8 at once until writes fail for good; the disk fills with the
    // database itself (WAL, pages), not a filler file.
    let seen: Mutex<Vec<String>> = Mutex::default();
    let refusals: Mutex<Vec<Call>> = Mutex::default();
    let next = AtomicUsize::new(0);
    let full = AtomicBool::new(false);
    let t0 = Instant::now();
    let workers = (0..8).map(|_| async {
        while !full.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(900) {
            let name = format!("d-{}", next.fetch_add(1, Ordering::Relaxed));
            let call = timed(
                "enroll",
                t0,
                client.post_raw("/api/v1/enroll", enroll_body(&name), Some(&token.token)),
            )
            .await;
            match call.status {
                201 => {
                    let v: serde_json::Value = serde_json::from_str(&call.body).unwrap();
                    seen.lock()
                        .unwrap()
                        .push(v["agent_id"].as_str().unwrap().to_owned());
                }
                429 => tokio::time::sleep(Duration::from_millis(200)).await,
                _ => {
                    let mut r = refusals.lock().unwrap();
                    r.push(call);
                    if r.len() >= 20 {
                        full.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    });
    futures_util::future::join_all(workers).await;
    let fill_time = t0.elapsed();
    let refusals = refusals.lock().unwrap().clone();
    let enrolled_when_full = seen.lock().unwrap().len();
    eprintln!(
        "[disk] {} enrolled, then refused after {:.1} s: {:?}",
        enrolled_when_full,
        fill_time.as_secs_f64(),
        refusals.first()
    );
    assert!(full.load(Ordering::Relaxed), "the disk never filled");

    // While full: writes refused clearly, reads served, the hub up.
    let enroll = timed(
        "enroll (full)",
        t0,
        client.post_raw("/api/v1/enroll", enroll_body("d-full"), Some(&token.token)),
    )
    .await;
    let create = timed(
        "token create (full)",
        t0,
        admin.post_raw("/api/v1/tokens", b"{}".to_vec(), None),
    )
    .await;
    let list = admin.agents_page(10, None).await;
    let health = timed("healthz", t0, admin.get_raw("/healthz")).await;
    eprintln!("[disk] while full: {enroll:?}\n{create:?}");
    // A write may still find a page freed since (a WAL checkpoint): then it must be
    // a plain success, kept like the others; if refused, the same way as the rest.
    if enroll.status == 201 {
        let v: serde_json::Value = serde_json::from_str(&enroll.body).unwrap();
        seen.lock()
            .unwrap()
            .push(v["agent_id"].as_str().unwrap().to_owned());
    }
    let writes_refused = refusals
        .iter()
        .chain((enroll.status != 201).then_some(&enroll))
        .chain((create.status != 201).then_some(&create));
    for call in writes_refused {
        assert_eq!(call.status, 503, "{call:?}");
        assert_one_line_json_error(call, "unavailable");
        assert!(
            call.body.contains("disk"),
            "the message should name the disk: {}",
            call.body
        );
    }
    assert!(list.is_ok(), "reads while the disk is full: {list:?}");
    assert_eq!(health.status, 200);
    assert!(hub.alive(), "the hub died:\n{}", hub.log_tail());
    let db = fs.path.join("data/muster.db");
    let integrity_full = integrity_check(&db).await;
    assert_eq!(integrity_full, "ok");

    // Room again: enrollments go through without a restart.
    fs.resize("256m");
    let t_room = Instant::now();
    let mut recovered = None;
    let mut after = 0;
    while t_room.elapsed() < Duration::from_secs(60) && after < 20 {
        let name = format!("d-after-{after}");
        match enroll_once(&client, &token.token, &name).await {
            Seen::Created(id) => {
                recovered.get_or_insert(t_room.elapsed());
                seen.lock().unwrap().push(id);
                after += 1;
            }
            Seen::Retry(_) | Seen::Failed(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    }
    let create_after = admin
        .create_token(&CreateTokenRequest {
            max_uses: Some(1),
            ttl_s: Some(600),
            pattern: None,
            cidrs: Vec::new(),
            labels: Default::default(),
            allow_replace: false,
            description: None,
        })
        .await;
    let verify = admin.verify_audit().await.unwrap();
    let alive = hub.alive();
    hub.stop();
    let integrity_end = integrity_check(&db).await;
    let seen = seen.lock().unwrap().clone();
    let ledger = ledger(&hub.db_url(), &token.id).await;
    let lost = seen
        .iter()
        .filter(|id| !ledger.agents.contains(*id))
        .count();
    let summary = format!(
        "CHAOS-SUMMARY disk-full tmpfs=16MiB enrolled_before_full={enrolled_when_full} \
         filled_in={:.0}s refusal=\"{} {}\" recovered_after_resize={} enrolled_after={after} \
         seen_ok={} lost={lost} integrity_full={integrity_full} integrity_end={integrity_end} \
         audit_verify={} hub_alive={alive}",
        fill_time.as_secs_f64(),
        enroll.status,
        enroll.body.trim(),
        recovered.map_or("never".to_owned(), |d| format!("{:.2}s", d.as_secs_f64())),
        seen.len(),
        if verify.ok { "ok" } else { "BROKEN" },
    );
    println!("{summary}");
    assert!(alive);
    assert_eq!(after, 20, "enrollments after the disk got room again");
    create_after.expect("token creation after the disk got room again");
    assert_eq!(lost, 0);
    assert_eq!(integrity_end, "ok");
    assert!(verify.ok, "{verify:?}");
    assert_eq!(
        ledger.token_uses,
        i64::try_from(ledger.agents.len()).unwrap()
    );
    drop(fs);
}

/// libfaketime, as Debian's `faketime` package installs it (`scripts/chaos` does).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Drill 4: the wall clock of a running `muster agent` jumps forward six hours, back
/// to true time, then three minutes behind (libfaketime reading its offset from a
/// file at every call; the monotonic clock is left alone, as a real clock step
/// leaves it). Certificates live 90 s, so a renewal is really due every 60 s. The
/// session must stay up (or come back) through each jump, renewals must happen when
/// due and must not storm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos drill: needs libfaketime (Debian faketime); run by scripts/chaos"]
async fn agent_clock_jumps() {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} missing: apt-get install faketime"
    );
    const VALIDITY_S: f64 = 90.0;
    let dir = tempfile::tempdir().unwrap();
    let mut hub = HubProc::new(&dir.path().join("data"), None);
    hub.extra = ["--cert-validity", "90s", "--heartbeat-interval", "2s"]
        .map(str::to_owned)
        .to_vec();
    hub.start().await;
    let admin = hub.admin();
    let token = admin
        .create_token(&CreateTokenRequest {
            max_uses: Some(1),
            ttl_s: Some(600),
            pattern: None,
            cidrs: Vec::new(),
            labels: Default::default(),
            allow_replace: false,
            description: Some("chaos clock drill".to_owned()),
        })
        .await
        .unwrap();
    let config = dir.path().join("agent");
    let clean_env = |c: &mut Command| {
        for (k, _) in std::env::vars() {
            if k.starts_with("MUSTER_") || k.starts_with("FAKETIME") {
                c.env_remove(k);
            }
        }
    };
    let mut enroll = Command::new(BIN);
    clean_env(&mut enroll);
    enroll
        .args(["enroll", "--hub", &hub.url(), "--token", &token.token])
        .args(["--ca-hash", &hub.ca_hash().to_string(), "--name", "clock"])
        .arg("--config-dir")
        .arg(&config);
    let out = enroll.output().unwrap();
    assert!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let agent_log = dir.path().join("agent.log");
    let mut agent = Command::new(BIN);
    clean_env(&mut agent);
    let mut agent = agent
        .arg("agent")
        .arg("--config-dir")
        .arg(&config)
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("MUSTER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&agent_log).unwrap())
        .spawn()
        .unwrap();

    let t0 = Instant::now();
    eprintln!(
        "[clock] agent started at {} (true time)",
        time::OffsetDateTime::now_utc()
    );
    // (offset, seconds held): true time, +6 h, true time again, 3 min behind.
    let phases = [("+0", 25.0), ("+6h", 45.0), ("+0", 45.0), ("-3m", 45.0)];
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (off, hold) in phases {
        std::fs::write(&offset, format!("{off}\n")).unwrap();
        let start = Instant::now();
        let gen_before = admin
            .agent("clock")
            .await
            .map(|a| a.generation)
            .unwrap_or(0);
        let (mut live, mut polls, mut last) = (0, 0, String::new());
        while start.elapsed().as_secs_f64() < hold {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Ok(a) = admin.agent("clock").await {
                polls += 1;
                last = a.status.as_str().to_owned();
                if matches!(a.status.as_str(), "online" | "degraded") {
                    live += 1;
                }
            }
        }
        let gen_after = admin
            .agent("clock")
            .await
            .map(|a| a.generation)
            .unwrap_or(0);
        let line = format!(
            "{off}: session live {live}/{polls} s, at the end {last}, renewals {}",
            gen_after - gen_before
        );
        eprintln!("[clock] {line}");
        if !matches!(last.as_str(), "online" | "degraded") {
            failures.push(format!("no session at the end of {off}"));
        }
        report.push(line);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let alive = agent.try_wait().unwrap().is_none();
    let _ = agent.kill();
    let _ = agent.wait();
    let renewed = admin
        .audit(&muster_client::AuditQuery {
            action: Some("agent.renewed".to_owned()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let renewals = renewed.len();
    let renewed_at: Vec<&str> = renewed.iter().map(|e| e.at.as_str()).collect();
    hub.stop();
    // Really due every 2/3 of 90 s; a few more are allowed for a jump that makes
    // the certificate look expired (renewed at once on the next connection).
    let due = (elapsed / (VALIDITY_S * 2.0 / 3.0)).floor() as usize;
    let log = std::fs::read_to_string(&agent_log).unwrap_or_default();
    // Kept for reading after the drill (the temp dir goes).
    let kept = std::env::temp_dir().join("muster-chaos-agent-clock.log");
    let _ = std::fs::write(&kept, &log);
    eprintln!(
        "[clock] renewals at {renewed_at:?} (hub time); agent log: {}",
        kept.display()
    );
    // The agent judges expiry and the renewal time on the hub's clock (learned
    // from welcome and ack), so a clock ahead past the certificate's end neither
    // makes it take the certificate for expired nor fails a renewal.
    let refused = log.matches("certificate renewal failed").count();
    let summary = format!(
        "CHAOS-SUMMARY clock-jumps cert_validity=90s elapsed={elapsed:.0}s renewals={renewals} \
         due_by_real_time={due} renewal_attempts_refused={refused} agent_alive={alive} \
         phases={report:?}"
    );
    println!("{summary}");
    assert!(alive, "the agent exited:\n{log}");
    assert_eq!(refused, 0, "renewal attempts failed:\n{log}");
    assert!(
        renewals >= due.saturating_sub(1).max(1),
        "renewal not done when due: {renewals} for {due} due\n{log}"
    );
    assert!(
        renewals <= due + 4,
        "renewal storm: {renewals} renewals for {due} due\n{}",
        &log[log.len().saturating_sub(4000)..]
    );
    assert!(
        failures.is_empty(),
        "{failures:?}\n{}",
        &log[log.len().saturating_sub(4000)..]
    );
}
