//! Counters served on `/metrics`, and the process figures read from `/proc`.
//! Plain atomics, so several hubs can run in one process without a global recorder.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::registry::Sessions;

/// Counters served on `/metrics`. Plain atomics, so a hub needs no global recorder.
#[derive(Default)]
pub struct Metrics {
    pub enrollments_ok: AtomicU64,
    pub enrollments_refused: AtomicU64,
    pub enrollments_failed: AtomicU64,
    pub enrollments_throttled: AtomicU64,
    pub http_requests: AtomicU64,
    /// Refused attempts not written to the audit log: past the budget (`refusals.rs`).
    pub audit_refusals_dropped: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self, sessions: &Sessions, commits: muster_store::EnrollCommits) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# HELP muster_enrollments_total Enrollment requests by result.\n\
             # TYPE muster_enrollments_total counter\n\
             muster_enrollments_total{{result=\"ok\"}} {}\n\
             muster_enrollments_total{{result=\"refused\"}} {}\n\
             muster_enrollments_total{{result=\"failed\"}} {}\n\
             muster_enrollments_total{{result=\"throttled\"}} {}\n\
             # HELP muster_enroll_transactions_total Enrollment transactions (one per group commit).\n\
             # TYPE muster_enroll_transactions_total counter\n\
             muster_enroll_transactions_total {}\n\
             # HELP muster_enroll_grouped_total Enrollments committed in a group of two or more.\n\
             # TYPE muster_enroll_grouped_total counter\n\
             muster_enroll_grouped_total {}\n\
             # HELP muster_http_requests_total HTTP requests handled.\n\
             # TYPE muster_http_requests_total counter\n\
             muster_http_requests_total {}\n\
             # HELP muster_sessions_live Agent sessions open now.\n\
             # TYPE muster_sessions_live gauge\n\
             muster_sessions_live {}\n\
             # HELP muster_heartbeats_total Heartbeats received.\n\
             # TYPE muster_heartbeats_total counter\n\
             muster_heartbeats_total {}\n\
             # HELP muster_last_seen_flushes_total Batched writes of last_seen_at.\n\
             # TYPE muster_last_seen_flushes_total counter\n\
             muster_last_seen_flushes_total {}\n\
             # HELP muster_last_seen_rows_total Agent rows written by those batches.\n\
             # TYPE muster_last_seen_rows_total counter\n\
             muster_last_seen_rows_total {}\n\
             # HELP muster_audit_refusals_dropped_total Refused attempts counted here instead of in the audit log.\n\
             # TYPE muster_audit_refusals_dropped_total counter\n\
             muster_audit_refusals_dropped_total {}\n",
            get(&self.enrollments_ok),
            get(&self.enrollments_refused),
            get(&self.enrollments_failed),
            get(&self.enrollments_throttled),
            commits.transactions,
            commits.grouped,
            get(&self.http_requests),
            sessions.count(),
            get(&sessions.heartbeats),
            get(&sessions.flushes),
            get(&sessions.flushed_rows),
            get(&self.audit_refusals_dropped),
        ) + &process_metrics()
    }
}

/// The standard Prometheus process metrics (Linux: read from /proc/self), so an
/// operator or `muster bench sessions` can see the hub's memory and CPU remotely.
fn process_metrics() -> String {
    let rss_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        });
    // utime and stime are fields 14 and 15 of /proc/self/stat, in clock ticks
    // (USER_HZ, 100 on Linux).
    let cpu_secs = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        });
    let mut out = String::new();
    if let Some(kib) = rss_bytes {
        out.push_str(&format!(
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes {}\n",
            kib * 1024
        ));
    }
    if let Some(secs) = cpu_secs {
        out.push_str(&format!(
            "# HELP process_cpu_seconds_total Total user and system CPU time in seconds.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total {secs}\n"
        ));
    }
    out
}
