//! Refused attempts in the audit log (SPEC §11: refused enrollments, calls a role does
//! not allow), without letting whoever sends them grow the log without bound.
//!
//! Refusals are written only while this minute's budget lasts: at most
//! [`PER_SOURCE_PER_MINUTE`] from one source network (an IPv4 address, an IPv6 /64)
//! and [`PER_MINUTE`] in all; the rest are counted in
//! `muster_audit_refusals_dropped_total` instead. The counts are in memory, per hub:
//! a restart forgets them, and hubs sharing a database each have their own budget.
//! The first refusals of a flood are always recorded, so the log shows that it began
//! and who sent it; the metric shows how big it was.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Mutex;

use muster_store::{AuditEntry, Store};

use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::rules::source_net;

/// Refusals recorded from one source network per minute.
pub const PER_SOURCE_PER_MINUTE: u32 = 10;
/// Refusals recorded per minute from everywhere: at most 86,400 entries a day
/// (~35 MB) whatever a flood does.
pub const PER_MINUTE: u32 = 60;
const WINDOW_MS: i64 = 60_000;

/// One fixed minute of refusals. Only sources with a recorded refusal are kept, so
/// the map never holds more than [`PER_MINUTE`] entries.
#[derive(Default)]
struct Window {
    start: i64,
    total: u32,
    by_source: HashMap<String, u32>,
}

/// This hub's budget for writing refusals to the audit log.
#[derive(Default)]
pub struct RefusalLog {
    window: Mutex<Window>,
}

impl RefusalLog {
    /// Whether a refusal from `source` at `now` may be written; an admitted one counts.
    fn admit(&self, source: IpAddr, now: i64) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if now - w.start >= WINDOW_MS || now < w.start {
            *w = Window {
                start: now,
                ..Window::default()
            };
        }
        if w.total >= PER_MINUTE {
            return false;
        }
        let from_source = w.by_source.entry(source_net(source)).or_insert(0);
        if *from_source >= PER_SOURCE_PER_MINUTE {
            return false;
        }
        *from_source += 1;
        w.total += 1;
        true
    }

    /// Write the entry `make` builds (it may look the credential up, so it runs only
    /// when the budget admits the refusal), or count the refusal as dropped. A failed
    /// write is logged: the refusal itself stands either way.
    pub async fn record<F, Fut>(
        &self,
        store: &dyn Store,
        metrics: &Metrics,
        source: IpAddr,
        make: F,
    ) where
        F: FnOnce() -> Fut,
        Fut: Future<Output = AuditEntry>,
    {
        if !self.admit(source, now_ms()) {
            Metrics::inc(&metrics.audit_refusals_dropped);
            return;
        }
        let entry = make().await;
        if let Err(e) = store.record_audit(&entry).await {
            tracing::warn!(error = %e, action = %entry.action, "could not audit a refusal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn each_source_and_the_whole_hub_have_a_budget_a_minute() {
        let log = RefusalLog::default();
        let admitted = (0..50)
            .filter(|_| log.admit(ip("192.0.2.1"), 1_000))
            .count();
        assert_eq!(admitted, PER_SOURCE_PER_MINUTE as usize);
        // Another address in the same IPv6 /64 is the same source.
        let v6 = (0..50)
            .filter(|i| log.admit(ip(&format!("2001:db8::{i:x}")), 1_000))
            .count();
        assert_eq!(v6, PER_SOURCE_PER_MINUTE as usize);
        // Many sources together stop at the hub's budget.
        let many = (0..200u8)
            .filter(|i| log.admit(IpAddr::from([10, 0, 0, *i]), 2_000))
            .count();
        assert_eq!(many, (PER_MINUTE - 2 * PER_SOURCE_PER_MINUTE) as usize);
        assert!(
            log.window
                .lock()
                .is_ok_and(|w| w.by_source.len() <= PER_MINUTE as usize)
        );
        // The next minute starts afresh.
        assert!(log.admit(ip("192.0.2.1"), 61_000));
    }
}
