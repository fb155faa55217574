//! One way to write an audit entry: [`entry`] stamps the time and fills the fields
//! every entry has; [`AuditExt`] adds what only some carry (details, an outcome
//! other than `ok`). Callers that act for a request get their actor and client
//! address from the `Caller` extractor (`extract.rs`), so no entry records a
//! proxy's address where the client's belongs.

use std::net::IpAddr;

use muster_store::AuditEntry;

use crate::clock::now_ms;

/// An entry for `action` by `actor` on `target`, made from `source`: outcome `ok`,
/// no details, stamped now.
pub fn entry(
    actor: impl Into<String>,
    action: impl Into<String>,
    target: impl Into<String>,
    source: IpAddr,
) -> AuditEntry {
    AuditEntry {
        at: now_ms(),
        actor: actor.into(),
        action: action.into(),
        target: target.into(),
        source: source.to_canonical().to_string(),
        outcome: "ok".to_owned(),
        details: "{}".to_owned(),
    }
}

/// An entry for what the hub did on its own machine (first start, secret rotation):
/// actor `hub`, source `local`.
pub fn by_hub(action: impl Into<String>, target: impl Into<String>) -> AuditEntry {
    AuditEntry {
        actor: "hub".to_owned(),
        source: "local".to_owned(),
        ..entry("", action, target, IpAddr::from([127, 0, 0, 1]))
    }
}

/// The optional parts of an entry, chained onto [`entry`].
pub trait AuditExt {
    /// Structured details, stored as JSON.
    fn details(self, details: serde_json::Value) -> Self;
    /// `denied`, `failed`, …: what happened when it was not `ok`.
    fn outcome(self, outcome: &str) -> Self;
    /// The time the action took effect, when the caller already read the clock for
    /// the same write (so the entry and the record agree to the millisecond).
    fn at(self, ms: i64) -> Self;
}

impl AuditExt for AuditEntry {
    fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details.to_string();
        self
    }

    fn outcome(mut self, outcome: &str) -> Self {
        outcome.clone_into(&mut self.outcome);
        self
    }

    fn at(mut self, ms: i64) -> Self {
        self.at = ms;
        self
    }
}
