//! Integration tests: real hubs on 127.0.0.1:0 over real TLS, driven by the same
//! client, agent and CLI code operators use. Every scenario runs on SQLite, and on
//! PostgreSQL too when `MUSTER_TEST_POSTGRES_URL` is set (`./scripts/test` sets it).
//! One test binary, so the world is linked once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod access;
mod adversarial;
mod agent_cli;
mod approvals;
mod audit;
mod backup;
mod bad_input;
mod binary;
mod bootstrap;
mod chaos;
mod checkpoints;
mod command_line;
mod completions;
mod dashboard;
mod enroll;
mod envfile;
mod events;
mod exhaustion;
mod failover;
mod forwarding;
mod identity;
mod install_tui;
mod integrations;
mod labels;
mod mcp;
mod multihub;
mod probes;
mod public_cert;
mod reenroll;
mod releases;
mod renewal;
mod secrets;
mod services;
mod sessions;
mod sso;
mod tokens;
mod trust;
mod update;
mod users;

use std::future::Future;

use muster_client::{ClientError, EnrollOutcome, HubClient};
use muster_proto::{EnrollRequest, PROTOCOL_VERSION};
use muster_testkit::{Backend, backends};

/// Run `scenario` once per available backend.
pub async fn each_backend<F, Fut>(scenario: F)
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in backends() {
        eprintln!("--- backend: {}", backend.name());
        scenario(backend).await;
    }
}

/// A raw enrollment request for `hostname` with a fresh key; returns (request, key_pem).
pub fn request(hostname: &str, name: Option<&str>) -> (EnrollRequest, String) {
    let (key, csr) = muster_ca::new_key_and_csr(hostname).unwrap();
    (
        EnrollRequest {
            name: name.map(str::to_owned),
            hostname: hostname.to_owned(),
            os_info: "Test OS".to_owned(),
            arch: "x86_64".to_owned(),
            agent_version: "test".to_owned(),
            ip: "127.0.0.1".to_owned(),
            interfaces: Vec::new(),
            packs: Vec::new(),
            labels: Default::default(),
            csr_pem: csr,
            enrollment_id: None,
            protocol_version: Some(PROTOCOL_VERSION),
            keep_agent_key: false,
        },
        key,
    )
}

/// Enroll with a raw request; the error code when refused.
pub async fn try_enroll(
    client: &HubClient,
    credential: Option<&str>,
    req: &EnrollRequest,
) -> Result<EnrollOutcome, ClientError> {
    client.enroll(credential, req).await
}

/// The hub's error code of a failed call.
pub fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> String {
    match r {
        Err(e) => e
            .code()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("no code: {e}")),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// Every file in `dir` with its bytes, sorted: to prove a step changed nothing.
pub fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A machine enrolled with a fresh single-use token: (its agent, its id).
pub async fn enrolled(
    hub: &muster_testkit::TestHub,
    hostname: &str,
) -> (muster_testkit::TestAgent, String) {
    let agent = muster_testkit::TestAgent::new(hostname);
    let token = hub.default_token().await;
    let r = muster_agent::enroll(&hub.enroll_options(&agent, Some(&token), None), &agent.dir)
        .await
        .unwrap();
    (agent, r.agent_id)
}
