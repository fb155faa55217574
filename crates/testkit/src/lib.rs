//! Test support: a real hub on `127.0.0.1:0` with a temporary data dir, on SQLite
//! or on a fresh PostgreSQL database, and helpers to drive it through the same
//! client the CLI and agent use. Used by tests only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use muster_agent::configdir::ConfigDir;
use muster_agent::facts::FactSources;
use muster_client::{HubClient, Trust};
use muster_hub::{Hub, HubOptions};
use muster_proto::{CreateTokenRequest, CreateTokenResponse};
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Which database a test hub runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// Admin URL of a PostgreSQL server; each hub gets its own fresh database.
    Postgres(String),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// SQLite always; PostgreSQL too when `MUSTER_TEST_POSTGRES_URL` is set.
pub fn backends() -> Vec<Backend> {
    install_crypto();
    let mut v = vec![Backend::Sqlite];
    if let Ok(url) = std::env::var("MUSTER_TEST_POSTGRES_URL")
        && !url.is_empty()
    {
        v.push(Backend::Postgres(url));
    }
    v
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A bare TLS connection to a hub ([`TestHub::raw_tls`]).
pub type RawTls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A hub running in this process.
pub struct TestHub {
    pub url: String,
    pub ca_hash: muster_ca::CaHash,
    pub admin_key: String,
    pub data_dir: PathBuf,
    pub backend: Backend,
    pub options: HubOptions,
    /// The database URL, for tests that must reach under the hub (tamper tests).
    pub db_url: String,
    pg_admin: Option<(String, String)>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestHub {
    pub async fn start(backend: &Backend) -> TestHub {
        Self::start_with(backend, |_| {}).await
    }

    /// Start with options adjusted by `tune` (heartbeat interval, validity, …).
    pub async fn start_with(backend: &Backend, tune: impl FnOnce(&mut HubOptions)) -> TestHub {
        install_crypto();
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("muster-data");
        let (db_url, pg_admin) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", data_dir.join("muster.db").display()),
                None,
            ),
            Backend::Postgres(admin) => {
                let db = fresh_pg_database(admin).await;
                (pg_url_with_db(admin, &db), Some((admin.clone(), db)))
            }
        };
        let mut options = HubOptions::new(&data_dir);
        options.listen = "127.0.0.1:0".parse().unwrap();
        options.db_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres(_) => Some(db_url.clone()),
        };
        tune(&mut options);
        let mut hub = Self::launch(options.clone(), backend.clone(), db_url).await;
        hub.pg_admin = pg_admin;
        hub._tmp = Some(tmp);
        hub
    }

    /// Start a hub with exactly these options (an existing data dir, a restored
    /// backup, an existing PostgreSQL database…).
    pub async fn start_on(options: HubOptions) -> Result<TestHub, muster_hub::HubError> {
        install_crypto();
        let (backend, db_url) = match &options.db_url {
            Some(url) => (Backend::Postgres(url.clone()), url.clone()),
            None => (
                Backend::Sqlite,
                format!("sqlite://{}", options.data_dir.join("muster.db").display()),
            ),
        };
        Self::try_launch(options, backend, db_url).await
    }

    /// Stop serving and hand over what is needed to start on the same data (the
    /// PostgreSQL database is kept for the next hub; `stop` on that one drops it).
    pub async fn stop_keeping_data(
        mut self,
    ) -> (
        HubOptions,
        Option<(String, String)>,
        Option<tempfile::TempDir>,
    ) {
        self.halt().await;
        (self.options.clone(), self.pg_admin.take(), self._tmp.take())
    }

    /// Take over the data of a stopped hub, so `stop` cleans it up.
    pub fn adopt(&mut self, pg_admin: Option<(String, String)>, tmp: Option<tempfile::TempDir>) {
        self.pg_admin = pg_admin;
        self._tmp = tmp;
    }

    async fn launch(options: HubOptions, backend: Backend, db_url: String) -> TestHub {
        Self::try_launch(options, backend, db_url)
            .await
            .expect("hub starts")
    }

    async fn try_launch(
        options: HubOptions,
        backend: Backend,
        db_url: String,
    ) -> Result<TestHub, muster_hub::HubError> {
        let hub = Hub::start(options.clone()).await?;
        let url = hub.local_url().to_owned();
        let ca_hash = hub.ca_hash();
        // A restored data dir has no initial-admin-key file (the key is in the database).
        let admin_key = std::fs::read_to_string(&hub.files().admin_key_file)
            .unwrap_or_default()
            .trim()
            .to_owned();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            hub.serve(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Ok(TestHub {
            url,
            ca_hash,
            admin_key,
            data_dir: options.data_dir.clone(),
            backend,
            options,
            db_url,
            pg_admin: None,
            shutdown: Some(tx),
            task: Some(task),
            _tmp: None,
        })
    }

    /// Stop serving and start again on the same data dir and database (new port).
    pub async fn restart(&mut self) {
        self.halt().await;
        let fresh = Self::launch(
            self.options.clone(),
            self.backend.clone(),
            self.db_url.clone(),
        )
        .await;
        self.url = fresh.url.clone();
        self.ca_hash = fresh.ca_hash;
        self.admin_key = fresh.admin_key.clone();
        let mut fresh = fresh;
        self.shutdown = fresh.shutdown.take();
        self.task = fresh.task.take();
    }

    async fn halt(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }

    /// Stop and start again on the same address, as an operator's restart would.
    pub async fn restart_same_port(&mut self) {
        let addr: std::net::SocketAddr = self.url.trim_start_matches("https://").parse().unwrap();
        self.halt().await;
        let mut options = self.options.clone();
        options.listen = addr;
        let mut fresh = Self::launch(options, self.backend.clone(), self.db_url.clone()).await;
        self.url = fresh.url.clone();
        self.shutdown = fresh.shutdown.take();
        self.task = fresh.task.take();
    }

    /// Stop serving (agents are told to come back), keeping the data.
    pub async fn stop_serving(&mut self) {
        self.halt().await;
    }

    /// Poll `agents show` until the agent has `status`; how long it took.
    pub async fn wait_status(&self, agent: &str, status: &str, within: Duration) -> Duration {
        let start = std::time::Instant::now();
        let admin = self.admin();
        loop {
            let now = admin
                .agent(agent)
                .await
                .map(|a| a.status.to_string())
                .unwrap_or_default();
            if now == status {
                return start.elapsed();
            }
            if start.elapsed() > within {
                panic!("agent {agent} is {now:?}, not {status:?}, after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Run SQL straight against the hub's database, behind its back (tamper tests).
    pub async fn raw_sql(&self, sql: &str) {
        let store = muster_store::SqlStore::connect(&self.db_url, [0; 32])
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(store.pool())
            .await
            .unwrap();
        store.pool().close().await;
    }

    /// Every row of every table, as text (PostgreSQL), for the secrets-at-rest test.
    pub async fn dump_rows(&self) -> String {
        let store = muster_store::SqlStore::connect(&self.db_url, [0; 32])
            .await
            .unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        let mut out = String::new();
        for t in tables {
            let sql = format!("SELECT COALESCE(string_agg(x::text, E'\\n'), '') FROM \"{t}\" x");
            let rows: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(store.pool())
                .await
                .unwrap();
            out.push_str(&rows);
            out.push('\n');
        }
        store.pool().close().await;
        out
    }

    /// The audit log's actions, oldest first, read straight from the database.
    pub async fn audit_actions(&self) -> Vec<String> {
        let store = muster_store::SqlStore::connect(&self.db_url, [0; 32])
            .await
            .unwrap();
        let rows: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log ORDER BY at, id")
            .fetch_all(store.pool())
            .await
            .unwrap();
        store.pool().close().await;
        rows
    }

    /// One number read straight from the database (`SELECT COUNT(*) …`), for tests
    /// that check what the hub keeps, not what it shows.
    pub async fn count(&self, sql: &str) -> i64 {
        let store = muster_store::SqlStore::connect(&self.db_url, [0; 32])
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(store.pool())
            .await
            .unwrap();
        store.pool().close().await;
        n
    }

    /// Stop the hub and drop its PostgreSQL database.
    pub async fn stop(mut self) {
        self.halt().await;
        if let Some((admin, db)) = self.pg_admin.take()
            && let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await
        {
            let sql = format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await;
        }
    }

    /// An admin client, trusting the hub by its CA hash.
    pub fn admin(&self) -> HubClient {
        HubClient::new(&self.url, Trust::Hash(self.ca_hash))
            .unwrap()
            .with_bearer(self.admin_key.clone())
    }

    /// One series from the hub's `/metrics`, named in full (labels too, e.g.
    /// `muster_agents{status="online"}`); `None` when the hub does not print it.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.anonymous().get_raw("/metrics").await.ok()?;
        let prefix = format!("{series} ");
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_owned))
            .and_then(|v| v.trim().parse().ok())
    }

    /// A client with no credential.
    pub fn anonymous(&self) -> HubClient {
        HubClient::new(&self.url, Trust::Hash(self.ca_hash)).unwrap()
    }

    /// A bare TLS connection from local address `from` (127.0.0.x are distinct
    /// sources on loopback) offering `alpn`, trusting the hub's CA: for tests that
    /// speak HTTP byte by byte (stalled bodies, idle connections, connection caps).
    pub async fn raw_tls(&self, from: std::net::IpAddr, alpn: &[&[u8]]) -> std::io::Result<RawTls> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read(self.data_dir.join("ca.pem"))?;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots
                .add(c.map_err(std::io::Error::other)?)
                .map_err(std::io::Error::other)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let addr: std::net::SocketAddr = self.url.trim_start_matches("https://").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::new(from, 0))?;
        let tcp = socket.connect(addr).await?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
    }

    pub async fn token(&self, req: CreateTokenRequest) -> CreateTokenResponse {
        self.admin().create_token(&req).await.unwrap()
    }

    /// A single-use, 15-minute token, as `muster tokens create` makes by default.
    pub async fn default_token(&self) -> String {
        self.token(CreateTokenRequest {
            max_uses: Some(1),
            ttl_s: Some(900),
            ..Default::default()
        })
        .await
        .token
    }

    /// Enrollment options for an agent on "host" `hostname`, with facts from fixtures.
    pub fn enroll_options(
        &self,
        agent: &TestAgent,
        token: Option<&str>,
        name: Option<&str>,
    ) -> muster_agent::EnrollOptions {
        muster_agent::EnrollOptions {
            hub_urls: vec![self.url.clone()],
            token: token.map(str::to_owned),
            name: name.map(str::to_owned),
            fact_sources: Some(agent.fact_sources()),
            ..Default::default()
        }
    }
}

/// A simulated machine: its own config dir and hostname.
pub struct TestAgent {
    pub dir: ConfigDir,
    pub hostname: String,
    root: tempfile::TempDir,
}

impl TestAgent {
    pub fn new(hostname: &str) -> TestAgent {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("hostname"), format!("{hostname}\n")).unwrap();
        std::fs::write(
            root.path().join("os-release"),
            "NAME=\"Test OS\"\nPRETTY_NAME=\"Test OS 1.0\"\n",
        )
        .unwrap();
        TestAgent {
            dir: ConfigDir::new(root.path().join("config")),
            hostname: hostname.to_owned(),
            root,
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn fact_sources(&self) -> FactSources {
        FactSources {
            hostname_file: Some(self.root.path().join("hostname")),
            os_release_file: Some(self.root.path().join("os-release")),
            sys_class_net: PathBuf::from("/sys/class/net"),
        }
    }

    /// Change the hostname this machine reports.
    pub fn rename_host(&mut self, hostname: &str) {
        std::fs::write(self.root.path().join("hostname"), format!("{hostname}\n")).unwrap();
        self.hostname = hostname.to_owned();
    }

    /// Run `muster agent` for this machine in the background.
    pub fn run(&self) -> RunningAgent {
        let sources = self.fact_sources();
        let probes = muster_agent::probes::ProbeSources::default().with_facts(&sources);
        self.run_probing(probes)
    }

    /// [`run`](Self::run) with the probes reading the host through `probes` (e.g. an
    /// empty directory as `/proc`, to fail the `system` pack's self-check).
    pub fn run_probing(&self, probes: muster_agent::probes::ProbeSources) -> RunningAgent {
        let dir = self.dir.clone();
        let sources = self.fact_sources();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            muster_agent::session::run_probing(&dir, sources, probes, async {
                let _ = rx.await;
            })
            .await
        });
        RunningAgent {
            stop: Some(tx),
            task,
        }
    }

    /// A client authenticating as this agent (agent key + client certificate).
    pub fn client(&self) -> HubClient {
        let creds = self.dir.load().unwrap().expect("agent enrolled");
        HubClient::with_options(
            &creds.config.hub_url,
            Trust::CaPem(creds.ca_pem.clone()),
            muster_client::ClientOptions {
                identity: Some(muster_client::ClientIdentity {
                    cert_pem: creds.cert_pem,
                    key_pem: creds.key_pem,
                }),
                timeout: None,
                ..Default::default()
            },
        )
        .unwrap()
        .with_bearer(creds.config.agent_key)
    }
}

/// An agent session loop running in this process.
pub struct RunningAgent {
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), muster_agent::AgentError>>,
}

impl RunningAgent {
    /// Ask it to stop and wait for it.
    pub async fn stop(mut self) -> Result<(), muster_agent::AgentError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("agent stops")
            .expect("agent task")
    }

    /// Wait for it to end by itself (revoked, refused…), at most `within`.
    pub async fn ended(self, within: Duration) -> Result<(), muster_agent::AgentError> {
        tokio::time::timeout(within, self.task)
            .await
            .expect("agent ended in time")
            .expect("agent task")
    }
}

async fn fresh_pg_database(admin_url: &str) -> String {
    let name = format!("muster_t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("connect to MUSTER_TEST_POSTGRES_URL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    name
}

/// The admin URL with its database replaced.
fn pg_url_with_db(admin: &str, db: &str) -> String {
    let (base, query) = admin
        .split_once('?')
        .map_or((admin, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let host_part = path_start.map_or(base, |i| &base[..i]);
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_urls() {
        assert_eq!(
            pg_url_with_db("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            pg_url_with_db("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            pg_url_with_db("postgres://u@h/p?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
