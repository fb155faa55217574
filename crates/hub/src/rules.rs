//! Hostname globs and source CIDRs, as tokens, trust rules and member keys use them,
//! and the client address as forwarded by trusted proxies.
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

/// A CIDR or a bare address (a /32 or /128), normalised. An IPv4-mapped IPv6 network
/// (`::ffff:10.0.0.0/104`) becomes the IPv4 one it names: sources are compared in
/// their canonical form, where a mapped address is IPv4, so kept as IPv6 it matched
/// nothing at all (found by the `globs_cidrs` fuzz target).
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let net = s
        .parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("invalid CIDR {s:?}: expected e.g. 10.0.0.0/8"))?;
    Ok(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(
                ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                    .map_err(|_| format!("invalid CIDR {s:?}"))?,
            ),
            None => net,
        },
        _ => net,
    })
}

pub fn cidrs_contain(cidrs: &[String], source: IpAddr) -> bool {
    // An IPv4 peer on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let source = source.to_canonical();
    cidrs
        .iter()
        .filter_map(|c| parse_cidr(c).ok())
        .any(|net| net.contains(&source))
}

/// The network a per-source limit counts a client by: its IPv4 address, or the /64
/// holding its IPv6 one, since one host or home line is usually given a whole /64 and
/// could otherwise take a fresh address for every request.
pub fn source_net(source: IpAddr) -> String {
    match source_bucket(source) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// Who counts as one source for every per-source limit (connections, logins,
/// the queue, audited refusals): an IPv4 address, or an IPv6 address with its
/// host half cleared (one host usually holds a whole /64).
pub fn source_bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !((1u128 << 64) - 1),
        )),
        v4 => v4,
    }
}

/// The client's address: the TCP peer, or, when the peer is a proxy we trust, the
/// address it forwarded (`Forwarded: for=` or the right-most `X-Forwarded-For` entry
/// that is not itself a trusted proxy). From anyone else the headers are ignored:
/// they are the client's own claim.
pub fn client_source(peer: IpAddr, headers: &axum::http::HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(&ip.to_canonical()));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for element in value.split(',') {
            for pair in element.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=')
                    && k.trim().eq_ignore_ascii_case("for")
                {
                    let v = v.trim().trim_matches('"');
                    let v = v
                        .strip_prefix('[')
                        .map_or(v, |r| r.split(']').next().unwrap_or(r));
                    let v = if v.matches(':').count() == 1 {
                        v.split(':').next().unwrap_or(v)
                    } else {
                        v
                    };
                    if let Ok(ip) = v.parse() {
                        hops.push(ip);
                    }
                }
            }
        }
    }
    if hops.is_empty() {
        for value in headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            hops.extend(
                value
                    .split(',')
                    .filter_map(|h| h.trim().parse::<IpAddr>().ok()),
            );
        }
    }
    hops.into_iter()
        .rev()
        .map(|ip| ip.to_canonical())
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
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
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted = vec![parse_cidr("10.0.0.0/8").unwrap()];
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.1.1.1".parse().unwrap());
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            client_source(proxy, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_source(stranger, &h, &trusted), stranger);
        let mut f = axum::http::HeaderMap::new();
        f.insert(
            "forwarded",
            "for=\"[2001:db8::1]:4711\";proto=https".parse().unwrap(),
        );
        assert_eq!(
            client_source(proxy, &f, &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_source(proxy, &axum::http::HeaderMap::new(), &trusted),
            proxy
        );
    }

    #[test]
    fn cidrs_accept_bare_addresses_and_mapped_peers() {
        let cidrs = vec!["10.0.0.0/8".to_owned(), "127.0.0.2".to_owned()];
        assert!(cidrs_contain(&cidrs, "10.1.2.3".parse().unwrap()));
        assert!(cidrs_contain(&cidrs, "127.0.0.2".parse().unwrap()));
        assert!(!cidrs_contain(&cidrs, "127.0.0.1".parse().unwrap()));
        assert!(cidrs_contain(&cidrs, "::ffff:10.0.0.1".parse().unwrap()));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        let mapped = vec![parse_cidr("::ffff:10.0.0.0/104").unwrap().to_string()];
        assert_eq!(mapped, ["10.0.0.0/8"]);
        assert!(cidrs_contain(&mapped, "10.1.2.3".parse().unwrap()));
        assert!(cidrs_contain(&mapped, "::ffff:10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn ipv6_sources_are_counted_by_their_64() {
        let net = |s: &str| source_net(s.parse().unwrap());
        assert_eq!(net("192.0.2.7"), "192.0.2.7");
        assert_eq!(net("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(net("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(net("2001:db8:1:2:bbbb::9"), net("2001:db8:1:2::1"));
    }
}
