//! The audit chain's hash: HMAC-SHA256(audit key, previous hash ‖ canonical entry).
//!
//! The canonical form is a JSON array of the position and every field, so no two
//! different entries encode alike and no field can bleed into another.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::AuditEntry;

pub(crate) fn chain_hash(key: &[u8; 32], prev_hash: &str, seq: i64, e: &AuditEntry) -> String {
    let canonical = serde_json::json!([
        seq, e.at, e.actor, e.action, e.target, e.source, e.outcome, e.details
    ])
    .to_string();
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(prev_hash.as_bytes());
    mac.update(b"\n");
    mac.update(canonical.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Constant-time comparison of two hashes.
pub(crate) fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}
