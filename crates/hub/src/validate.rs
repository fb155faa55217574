//! What every value a peer sends must satisfy before it is stored or shown: names,
//! hostnames and facts are bounded printable text with nothing invisible that
//! could make one name look like another (bidi overrides, zero-width characters);
//! interface names, MACs and addresses have their own shapes; label keys are
//! identifiers; a CSR parses. Used on entry by enrollment, sessions, the approval
//! queue and the admin API alike, so the store only ever holds checked values.

use muster_proto::{Interface, MAX_NAME_LEN};

use crate::error::{ApiFailure, ApiResult};

/// SHA-256 of a CSR's public key, after checking the CSR (400 `invalid_csr`).
pub fn csr_key(csr_pem: &str) -> ApiResult<String> {
    muster_ca::csr_public_key_sha256(csr_pem)
        .map_err(|e| ApiFailure::from_csr("reading a CSR failed", e))
}

/// Names, hostnames and facts: bounded, printable, no surrounding space.
pub fn check_text(field: &str, value: &str, may_be_empty: bool) -> ApiResult<()> {
    if value.is_empty() {
        return if may_be_empty {
            Ok(())
        } else {
            Err(ApiFailure::bad_request(format!(
                "{field} must not be empty"
            )))
        };
    }
    if value.len() > MAX_NAME_LEN {
        return Err(ApiFailure::bad_request(format!(
            "{field} is longer than {MAX_NAME_LEN} bytes"
        )));
    }
    if value.chars().any(char::is_control) || value.trim() != value {
        return Err(ApiFailure::bad_request(format!(
            "{field} must be printable text without surrounding spaces"
        )));
    }
    if value.chars().any(muster_proto::is_invisible) {
        return Err(ApiFailure::bad_request(format!(
            "{field} must not contain bidirectional overrides or zero-width characters"
        )));
    }
    Ok(())
}

/// The scope an admin gives a token or a trust rule: a hostname glob, source CIDRs
/// (returned normalised) and labels, each bounded and checked the same way for
/// both.
pub fn check_scope(
    what: &str,
    pattern: Option<&str>,
    cidrs: &[String],
    labels: &std::collections::BTreeMap<String, String>,
) -> ApiResult<Vec<String>> {
    if let Some(p) = pattern {
        check_text("pattern", p, false)?;
        crate::rules::parse_pattern(p).map_err(ApiFailure::bad_request)?;
    }
    if cidrs.len() > 64 || labels.len() > MAX_LABELS {
        return Err(ApiFailure::bad_request(format!(
            "at most 64 CIDRs and {MAX_LABELS} labels per {what}"
        )));
    }
    for (k, v) in labels {
        check_label(k, v)?;
    }
    cidrs
        .iter()
        .map(|c| crate::rules::parse_cidr(c).map(|n| n.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiFailure::bad_request)
}

/// Most addresses one interface may report.
const MAX_ADDRESSES: usize = 64;

/// An agent's facts: the text ones are checked like names; `ip` is empty or an
/// address; each interface has a printable name, a MAC of hex pairs and addresses
/// that parse.
pub fn check_facts(text: &[(&str, &str)], ip: &str, interfaces: &[Interface]) -> ApiResult<()> {
    for (field, value) in text {
        check_text(field, value, true)?;
    }
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(ApiFailure::bad_request("ip must be an IP address"));
    }
    if interfaces.len() > 256 {
        return Err(ApiFailure::bad_request("at most 256 interfaces"));
    }
    for i in interfaces {
        check_text("interface name", &i.name, false)?;
        if i.name.len() > 64 {
            return Err(ApiFailure::bad_request(
                "interface names are at most 64 bytes",
            ));
        }
        if let Some(mac) = &i.mac
            && !is_mac(mac)
        {
            return Err(ApiFailure::bad_request(format!(
                "interface {:?}: MAC must be hex pairs separated by ':' or '-'",
                i.name
            )));
        }
        if i.addresses.len() > MAX_ADDRESSES {
            return Err(ApiFailure::bad_request(format!(
                "interface {:?}: at most {MAX_ADDRESSES} addresses",
                i.name
            )));
        }
        if let Some(bad) = i
            .addresses
            .iter()
            .find(|a| a.parse::<std::net::IpAddr>().is_err() && a.parse::<ipnet::IpNet>().is_err())
        {
            return Err(ApiFailure::bad_request(format!(
                "interface {:?}: {:?} is not an IP address",
                i.name,
                bad.chars().take(64).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// 6 to 20 hex pairs (Ethernet, EUI-64, InfiniBand), one separator throughout.
fn is_mac(mac: &str) -> bool {
    let sep = if mac.contains('-') { '-' } else { ':' };
    let pairs: Vec<&str> = mac.split(sep).collect();
    (6..=20).contains(&pairs.len())
        && pairs
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// How many labels an agent may hold, whoever sets them.
pub const MAX_LABELS: usize = 64;

/// Label keys are identifiers (`[A-Za-z0-9._/-]`, up to 63); values are short text.
pub fn check_label(key: &str, value: &str) -> ApiResult<()> {
    let key_ok = !key.is_empty()
        && key.len() <= 63
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if !key_ok {
        return Err(ApiFailure::bad_request(format!(
            "label key {key:?} must be 1 to 63 characters of [A-Za-z0-9._/-]"
        )));
    }
    check_text("label value", value, true)
}

/// A role as the store keeps it (the word the hub wrote). Anything else reads as
/// the lesser role: an unreadable row must not grant more than it says.
pub fn stored_role(word: &str) -> muster_proto::Role {
    word.parse().unwrap_or(muster_proto::Role::Member)
}

/// `local@domain`, one `@`, no spaces: what a provider's email claim looks like.
pub fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, mac: Option<&str>, addresses: &[&str]) -> Interface {
        Interface {
            name: name.to_owned(),
            mac: mac.map(str::to_owned),
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
            ..Interface::default()
        }
    }

    #[test]
    fn names_with_invisible_characters_are_refused() {
        assert!(check_text("name", "web-01", false).is_ok());
        assert!(check_text("name", "wéb-01.example", false).is_ok());
        for bad in [
            "web\u{202E}10",
            "web\u{200B}01",
            "\u{FEFF}web",
            "web\u{2066}x",
            "a\u{1b}[31m",
        ] {
            assert!(check_text("name", bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn facts_are_checked_field_by_field() {
        let ok = [iface(
            "eth0",
            Some("52:54:00:ab:cd:ef"),
            &["10.0.0.5", "fe80::1"],
        )];
        assert!(check_facts(&[("os_info", "Debian 12")], "10.0.0.5", &ok).is_ok());
        assert!(check_facts(&[], "", &[iface("lo", None, &["127.0.0.1"])]).is_ok());
        for bad in [
            iface("eth0\u{1b}]0;pwned\u{7}", None, &[]),
            iface("eth0", Some("52:54:00:ab:cd:e\u{0}"), &[]),
            iface("eth0", Some("not a mac"), &[]),
            iface("eth0", None, &["10.0.0.5\u{1b}[2J"]),
            iface("", None, &[]),
        ] {
            assert!(
                check_facts(&[], "", std::slice::from_ref(&bad)).is_err(),
                "{bad:?}"
            );
        }
        assert!(check_facts(&[], "10.0.0.5\u{7}", &[]).is_err());
        assert!(check_facts(&[("os_info", "x\u{202E}y")], "", &[]).is_err());
    }
}
