//! Hostname globs and source CIDRs, as tokens (and later trust rules) use them.
//! Both are validated when an admin creates them, so matching never fails.

use std::net::IpAddr;

use globset::GlobBuilder;
use ipnet::IpNet;

/// Parse a hostname glob; hostnames compare case-insensitively.
pub fn parse_pattern(pattern: &str) -> Result<globset::GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .case_insensitive(true)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("invalid hostname pattern {pattern:?}: {e}"))
}

pub fn hostname_matches(pattern: &str, hostname: &str) -> bool {
    parse_pattern(pattern).is_ok_and(|m| m.is_match(hostname))
}

/// A CIDR or a bare address (a /32 or /128), normalised.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("invalid CIDR {s:?}: expected e.g. 10.0.0.0/8"))
}

pub fn cidrs_contain(cidrs: &[String], source: IpAddr) -> bool {
    // An IPv4 peer on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let source = source.to_canonical();
    cidrs
        .iter()
        .filter_map(|c| parse_cidr(c).ok())
        .any(|net| net.contains(&source))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn globs_match_hostnames_case_insensitively() {
        assert!(hostname_matches("web-*", "web-01"));
        assert!(hostname_matches("web-*", "WEB-02"));
        assert!(!hostname_matches("web-*", "db-01"));
        assert!(hostname_matches("*.lab.example", "a.b.lab.example"));
    }

    #[test]
    fn cidrs_accept_bare_addresses_and_mapped_peers() {
        let cidrs = vec!["10.0.0.0/8".to_owned(), "127.0.0.2".to_owned()];
        assert!(cidrs_contain(&cidrs, "10.1.2.3".parse().unwrap()));
        assert!(cidrs_contain(&cidrs, "127.0.0.2".parse().unwrap()));
        assert!(!cidrs_contain(&cidrs, "127.0.0.1".parse().unwrap()));
        assert!(cidrs_contain(&cidrs, "::ffff:10.0.0.1".parse().unwrap()));
        assert!(parse_cidr("10.0.0.0/33").is_err());
    }
}
