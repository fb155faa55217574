//! An agent given several hubs (SPEC §12): it enrolls and runs through the first
//! that answers, moves to the next when its hub dies, and remembers the one that
//! worked in `config.json`. A hub "dies" here as it does on the network: a TCP relay
//! in front of it is dropped with every connection through it, the way a kill -9
//! or a lost machine looks to an agent. With PostgreSQL the hubs are two real hubs
//! on one database; on SQLite they are two addresses of one hub.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use muster_testkit::{Backend, TestAgent, TestHub};

use crate::command_line::{run, strings};
use crate::each_backend;
use crate::multihub::{second_hub, sessions_live, wait_sessions};

/// A TCP relay to a hub: while it runs, `url` reaches that hub (its certificate
/// names 127.0.0.1, whatever the port); dropping it closes the listener and every
/// connection relayed, at once.
struct Relay {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(to: &str, on: Option<SocketAddr>) -> Relay {
        let target: SocketAddr = to.trim_start_matches("https://").parse().unwrap();
        let listener = tokio::net::TcpListener::bind(on.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                links.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Relay {
            url: format!("https://{addr}"),
            task,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.url.trim_start_matches("https://").parse().unwrap()
    }

    /// Drop the listener and every relayed connection (tasks end with the JoinSet).
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A URL on which nothing listens (a port bound and released).
fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", l.local_addr().unwrap());
    drop(l);
    url
}

/// Poll the agent's `config.json` until it names `url` as its preferred hub.
async fn wait_preferred(agent: &TestAgent, url: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = agent.dir.load().unwrap().unwrap().config.hub_url;
        if now == url {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "config.json still prefers {now}, not {url}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_agent_whose_first_hub_is_down_enrolls_and_runs_through_the_next() {
    each_backend(|backend| async move {
        let hub = TestHub::start_with(&backend, |o| {
            o.heartbeat_interval = Duration::from_secs(1);
        })
        .await;
        let down = closed_port_url();
        let token = hub.default_token().await;
        let agent = TestAgent::new("second-choice");
        let mut opts = hub.enroll_options(&agent, Some(&token), None);
        opts.hub_urls = vec![format!("{down}/"), hub.url.clone()];
        let report = muster_agent::enroll(&opts, &agent.dir).await.unwrap();
        assert_eq!(
            report.hub_url, hub.url,
            "enrolled through the hub that answered"
        );

        let config = agent.dir.load().unwrap().unwrap().config;
        assert_eq!(
            config.hub_url, hub.url,
            "the hub that answered is preferred"
        );
        assert_eq!(config.hub_urls, vec![down.clone(), hub.url.clone()]);
        let raw = std::fs::read_to_string(agent.dir.config_path()).unwrap();
        assert!(raw.contains("\"hub_urls\""), "{raw}");

        // Its session runs on the hub that answered; the dead one is tried first only
        // if the operator's order says so, which it no longer does.
        let running = agent.run();
        hub.wait_status("second-choice", "online", Duration::from_secs(5))
            .await;
        running.stop().await.unwrap();

        // A config naming the dead hub first (an operator's edit) still connects.
        let mut creds = agent.dir.load().unwrap().unwrap();
        creds.config.hub_url = down.clone();
        agent.dir.store(&creds).unwrap();
        let running = agent.run();
        wait_preferred(&agent, &hub.url, Duration::from_secs(5)).await;
        hub.wait_status("second-choice", "online", Duration::from_secs(5))
            .await;
        running.stop().await.unwrap();

        // One hub only: config.json is written as before several hubs existed, so
        // an older agent still reads it.
        let token = hub.default_token().await;
        let single = TestAgent::new("single");
        muster_agent::enroll(
            &hub.enroll_options(&single, Some(&token), None),
            &single.dir,
        )
        .await
        .unwrap();
        let raw = std::fs::read_to_string(single.dir.config_path()).unwrap();
        assert!(!raw.contains("hub_urls"), "{raw}");
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_agent_moves_to_the_next_hub_when_its_hub_dies_and_remembers_it() {
    each_backend(|backend| async move {
        let a = TestHub::start_with(&backend, |o| {
            o.heartbeat_interval = Duration::from_secs(1);
        })
        .await;
        let tmp = tempfile::tempdir().unwrap();
        let b = match backend {
            Backend::Postgres(_) => Some(second_hub(&a, tmp.path()).await),
            Backend::Sqlite => None,
        };
        // The second hub: a real one on the same database, or on SQLite hub A
        // again by its own address.
        let b_url = b.as_ref().map_or(a.url.clone(), |b| b.url.clone());
        let relay = Relay::start(&a.url, None).await;
        let relay_addr = relay.addr();
        let relay_url = relay.url.clone();

        let token = a.default_token().await;
        let agent = TestAgent::new("mover");
        let mut opts = a.enroll_options(&agent, Some(&token), None);
        opts.hub_urls = vec![relay_url.clone(), b_url.clone()];
        muster_agent::enroll(&opts, &agent.dir).await.unwrap();
        assert_eq!(agent.dir.load().unwrap().unwrap().config.hub_url, relay_url);
        let running = agent.run();
        a.wait_status("mover", "online", Duration::from_secs(5))
            .await;
        if let Some(b) = &b {
            wait_sessions(&a, 1).await;
            assert_eq!(sessions_live(b).await, 0);
        }

        // Hub A vanishes from the network: the agent is on B within seconds, not
        // after a long backoff, and config.json names B from then on.
        relay.kill().await;
        let took = wait_preferred(&agent, &b_url, Duration::from_secs(5)).await;
        eprintln!("moved to the next hub in {took:?}");
        if let Some(b) = &b {
            wait_sessions(b, 1).await;
        } else {
            a.wait_status("mover", "online", Duration::from_secs(5))
                .await;
        }

        // Hub B stops gracefully (it tells its agents to come back within 10 s):
        // the agent returns spread over that window, to the other hub first.
        if let Some(mut b) = b {
            let relay = Relay::start(&a.url, Some(relay_addr)).await;
            b.stop_serving().await;
            let took = wait_preferred(&agent, &relay_url, Duration::from_secs(13)).await;
            eprintln!("back on hub A {took:?} after hub B stopped");
            wait_sessions(&a, 1).await;
            running.stop().await.unwrap();
            relay.kill().await;
            b.stop().await;
        } else {
            running.stop().await.unwrap();
        }
        a.stop().await;
    })
    .await;
}

#[tokio::test]
async fn enroll_takes_several_hubs_and_names_the_flag_of_a_bad_one() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent").display().to_string();
    let hash = hub.ca_hash.to_string();
    let down = closed_port_url();
    let enroll = |hubs: &[&str], config: &str| {
        let mut args = vec!["enroll"];
        for h in hubs {
            args.extend(["--hub", h]);
        }
        args.extend([
            "--api-key",
            &hub.admin_key,
            "--ca-hash",
            &hash,
            "--name",
            "twice-given",
            "--config-dir",
            config,
        ]);
        strings(&args)
    };

    let out = run(enroll(&["https://127.0.0.1:1", "ftp://nope"], &config)).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--hub") && err.contains("ftp://nope"), "{err}");
    assert!(!std::path::Path::new(&config).exists(), "nothing written");

    let out = run(enroll(&[&down, &hub.url], &config)).await;
    let stdout = crate::binary::ok(out);
    assert!(stdout.contains(&format!("with {}", hub.url)), "{stdout}");
    let creds = muster_agent::configdir::ConfigDir::new(&config)
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(creds.config.hub_urls, vec![down, hub.url.clone()]);
    hub.stop().await;
}

#[tokio::test]
async fn an_env_file_names_several_hubs_separated_by_commas() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let agent = TestAgent::new("container-many");
    let down = closed_port_url();
    let options = |path: &std::path::Path| muster_agent::envfile::EnvFileOptions {
        path: path.to_path_buf(),
        work_dir: Some(agent.root().join("work")),
        fact_sources: agent.fact_sources(),
    };
    let bad = agent.root().join("bad.env");
    std::fs::write(
        &bad,
        format!(
            "MUSTER_HUB_URL={},ftp://nope\nMUSTER_ENROLL_TOKEN=met_x\n",
            hub.url
        ),
    )
    .unwrap();
    let err = muster_agent::envfile::prepare(&options(&bad), &agent.dir)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("MUSTER_HUB_URL") && err.contains("ftp://nope"),
        "{err}"
    );

    let token = hub.default_token().await;
    let path = agent.root().join("agent.env");
    std::fs::write(
        &path,
        format!(
            "MUSTER_HUB_URL={down}, {}\nMUSTER_ENROLL_TOKEN={token}\n",
            hub.url
        ),
    )
    .unwrap();
    muster_agent::envfile::prepare(&options(&path), &agent.dir)
        .await
        .unwrap();
    let config = agent.dir.load().unwrap().unwrap().config;
    assert_eq!(config.hub_urls, vec![down, hub.url.clone()]);
    assert_eq!(config.hub_url, hub.url);
    hub.stop().await;
}
