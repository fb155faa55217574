//! Credentials and addresses as they arrive in HTTP headers, and the hostname globs
//! and CIDRs that scope tokens, trust rules and keys.

use std::net::IpAddr;

use muster_ca::CaHash;
use muster_hub::fuzzing as hub;
use muster_hub::secrets::Keys;
use muster_proto::TOKEN_PREFIX;

use crate::fields;

/// `Authorization` and `Cookie` header values, token shapes (agent and hub side),
/// CA hashes and pins, and stored ciphertext as the hub decrypts it.
pub fn credentials(data: &[u8]) {
    if let Some(v) = hub::bearer(data) {
        assert!(!v.is_empty() && v == v.trim(), "bearer value {v:?}");
        assert!(data.len() > 7 && data[..7].eq_ignore_ascii_case(b"bearer "));
    }
    if let Some(v) = hub::cookie(data, "muster_session") {
        assert!(!v.contains(';'), "cookie value {v:?}");
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if muster_agent::enroll::check_token_shape(text).is_ok() {
        assert!(text.starts_with(TOKEN_PREFIX));
        let secret = hub::token_secret(text);
        assert!(secret.starts_with(TOKEN_PREFIX) && !secret.contains('.'));
    }
    if let Ok(hash) = CaHash::parse(text) {
        assert_eq!(CaHash::parse(&hash.to_string()).ok(), Some(hash));
        assert!(hash.matches_pin(&hash.pin()));
    }
    let _ = muster_hub::secrets::display_prefix(text);
    thread_local! {
        static KEYS: Keys = Keys::derive(b"fuzzing hub secret, not a real one").expect("long enough");
    }
    KEYS.with(|keys| {
        let _ = keys.decrypt(text, b"fuzz");
        let sealed = keys.encrypt(data, b"fuzz");
        assert_eq!(keys.decrypt(&sealed, b"fuzz").ok().as_deref(), Some(data));
        assert!(keys.decrypt(&sealed, b"other").is_err());
    });
}

/// `Forwarded` and `X-Forwarded-For` from a peer, trusted or not. Input: fields
/// separated by 0xFF: the `Forwarded` value, the `X-Forwarded-For` value, the peer,
/// trusted CIDRs (comma-separated).
pub fn forwarded(data: &[u8]) {
    let parts: Vec<&[u8]> = data.split(|&b| b == 0xFF).collect();
    let field = |i: usize| parts.get(i).copied().unwrap_or_default();
    let text = |i: usize| String::from_utf8_lossy(field(i)).into_owned();
    let peer: IpAddr = text(2)
        .trim()
        .parse()
        .unwrap_or(IpAddr::from([10, 0, 0, 1]));
    let trusted: Vec<String> = match text(3).trim() {
        "" => vec!["10.0.0.0/8".to_owned(), "::1".to_owned()],
        t => t.split(',').map(str::to_owned).collect(),
    };
    let headers = [("forwarded", field(0)), ("x-forwarded-for", field(1))];
    let source = hub::client_source(peer, &headers, &trusted);
    let is_trusted = |ip: IpAddr| hub::cidrs_contain(&trusted_parsed(&trusted), ip);
    if !is_trusted(peer) {
        assert_eq!(
            source,
            peer.to_canonical(),
            "an untrusted peer's headers counted"
        );
    } else if source != peer.to_canonical() {
        assert!(
            !is_trusted(source),
            "a trusted proxy {source} became the client"
        );
    }
    // Without headers the peer is the client, trusted or not.
    assert_eq!(hub::client_source(peer, &[], &trusted), peer.to_canonical());
    let _ = hub::source_bucket(source);
}

/// The CIDRs among `trusted` that parse, as `cidrs_contain` takes them.
fn trusted_parsed(trusted: &[String]) -> Vec<String> {
    trusted
        .iter()
        .filter_map(|c| hub::parse_cidr(c).ok())
        .collect()
}

/// Hostname globs and CIDRs. Input: a pattern, a hostname, a CIDR and an address,
/// separated by 0xFF. A pattern that parses matches as its matcher does and
/// ignores ASCII case; a CIDR that parses is normalised once and for all, and holds
/// its own network address.
pub fn globs_cidrs(data: &[u8]) {
    let f = fields(data);
    let get = |i: usize| f.get(i).map_or("", String::as_str);
    let (pattern, hostname, cidr, address) = (get(0), get(1), get(2), get(3));
    if let Ok(matcher) = hub::parse_pattern(pattern) {
        let matched = hub::hostname_matches(pattern, hostname);
        assert_eq!(matched, matcher.is_match(hostname));
        assert_eq!(
            matched,
            hub::hostname_matches(pattern, &hostname.to_ascii_uppercase()),
            "case changed the match of {pattern:?} against {hostname:?}"
        );
    }
    if let Ok(normal) = hub::parse_cidr(cidr) {
        assert_eq!(hub::parse_cidr(&normal).as_ref(), Ok(&normal), "not stable");
        let network: IpAddr = normal
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("a normalised CIDR starts with an address");
        assert!(
            hub::cidrs_contain(std::slice::from_ref(&normal), network),
            "{normal} does not hold its own network address"
        );
        if let Ok(ip) = address.trim().parse::<IpAddr>() {
            let in_normal = hub::cidrs_contain(std::slice::from_ref(&normal), ip);
            assert_eq!(
                in_normal,
                hub::cidrs_contain(&[cidr.to_owned()], ip),
                "normalising {cidr:?} changed what it holds"
            );
        }
    }
    let _ = hub::check_scope(Some(pattern), &[cidr.to_owned()], &Default::default());
}
