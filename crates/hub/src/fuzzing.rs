//! The hub's parsers and checks of untrusted input, opened to the fuzz harness
//! (`crates/fuzzing`, `fuzz/`). Each function here calls the production code itself,
//! never a copy, so what the fuzzer shows holds for the hub; they only adapt types
//! the hub keeps private (its error type, axum's header map). Nothing in the hub
//! imports this module.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use muster_proto::{EnrollRequest, HostFacts, PackInfo};

use crate::error::ApiFailure;

/// A refusal as a client would see it: HTTP status and stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl From<ApiFailure> for Refusal {
    fn from(f: ApiFailure) -> Self {
        Refusal {
            status: f.status.as_u16(),
            code: f.code,
            message: f.message,
        }
    }
}

/// What `POST /api/v1/enroll` checks before any lookup.
pub fn validate_enroll(req: &EnrollRequest) -> Result<(), Refusal> {
    crate::enroll::validate(req).map_err(Refusal::from)
}

/// The CSR check every enrollment and renewal makes (400 `invalid_csr`).
pub fn csr_key(csr_pem: &str) -> Result<String, Refusal> {
    crate::validate::csr_key(csr_pem).map_err(Refusal::from)
}

/// Names, hostnames and facts.
pub fn check_text(field: &str, value: &str, may_be_empty: bool) -> Result<(), Refusal> {
    crate::validate::check_text(field, value, may_be_empty).map_err(Refusal::from)
}

/// A token's or trust rule's scope; the CIDRs come back normalised.
pub fn check_scope(
    pattern: Option<&str>,
    cidrs: &[String],
    labels: &BTreeMap<String, String>,
) -> Result<Vec<String>, Refusal> {
    crate::validate::check_scope("token", pattern, cidrs, labels).map_err(Refusal::from)
}

/// A hostname glob as tokens and trust rules hold it.
pub fn parse_pattern(pattern: &str) -> Result<globset::GlobMatcher, String> {
    crate::rules::parse_pattern(pattern)
}

pub fn hostname_matches(pattern: &str, hostname: &str) -> bool {
    crate::rules::hostname_matches(pattern, hostname)
}

/// A CIDR or bare address, normalised, in its text form.
pub fn parse_cidr(s: &str) -> Result<String, String> {
    crate::rules::parse_cidr(s).map(|n| n.to_string())
}

pub fn cidrs_contain(cidrs: &[String], source: IpAddr) -> bool {
    crate::rules::cidrs_contain(cidrs, source)
}

pub fn source_bucket(ip: IpAddr) -> IpAddr {
    crate::rules::source_bucket(ip)
}

/// Headers as a client sent them; those HTTP itself would refuse (bad names or
/// values) are left out, as hyper never hands them to the hub.
fn header_map(headers: &[(&str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// The client address the hub records for `peer` sending `headers`, trusting the
/// proxies in `trusted` (CIDRs as `--trusted-proxy` takes them; bad ones skipped).
pub fn client_source(peer: IpAddr, headers: &[(&str, &[u8])], trusted: &[String]) -> IpAddr {
    let trusted: Vec<ipnet::IpNet> = trusted
        .iter()
        .filter_map(|c| crate::rules::parse_cidr(c).ok())
        .collect();
    crate::rules::client_source(peer, &header_map(headers), &trusted)
}

/// The bearer credential of an `Authorization` header value.
pub fn bearer(authorization: &[u8]) -> Option<String> {
    crate::auth::bearer(&header_map(&[("authorization", authorization)])).map(str::to_owned)
}

/// The value of cookie `name` in a `Cookie` header value.
pub fn cookie(header: &[u8], name: &str) -> Option<String> {
    crate::auth::cookie(&header_map(&[("cookie", header)]), name).map(str::to_owned)
}

/// The part of a token value the hub hashes and looks up.
pub fn token_secret(value: &str) -> &str {
    crate::enroll::token_secret(value)
}

/// The facts a session's `hello` would store, or `None` when refused.
pub fn hello_facts(
    agent_version: String,
    packs: Vec<String>,
    facts: HostFacts,
) -> Option<HostFacts> {
    let stored = muster_store::AgentFacts::default();
    crate::sessions::refreshed_facts(&stored, agent_version, packs, facts).map(|f| HostFacts {
        hostname: f.hostname,
        os_info: f.os_info,
        arch: f.arch,
        ip: f.ip,
        interfaces: f.interfaces,
    })
}

/// Whether the packs a `hello` announces would be kept.
pub fn catalog_acceptable(catalog: &[PackInfo]) -> bool {
    crate::sessions::catalog_acceptable(catalog)
}

/// The problems of a heartbeat as the hub keeps them.
pub fn heartbeat_problems(problems: Vec<String>) -> Vec<String> {
    crate::sessions::heartbeat_problems(problems)
}
