//! `system.processes`: the top processes by CPU (measured over a short sample) or
//! by resident memory, from `/proc/<pid>/stat` and `status`.

use std::collections::HashMap;
use std::fs;

use serde::Serialize;

use super::host::{CPU_SAMPLE, cpu_times, round1};
use crate::probes::{Params, ProbeSources};

/// Processes read at most, so a fork bomb cannot make the probe unbounded.
const MAX_PROCESSES: usize = 32_768;

#[derive(Debug, Serialize)]
pub struct Processes {
    /// `cpu` or `memory`.
    pub sort: String,
    /// Processes seen in all.
    pub total: usize,
    pub processes: Vec<Process>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Process {
    pub pid: u32,
    pub name: String,
    /// Real user ID; absent when `status` could not be read.
    pub uid: Option<u32>,
    pub rss_bytes: u64,
    /// Share of one CPU over the sample, as `top` shows it (can exceed 100).
    pub cpu_percent: f64,
}

pub fn processes(sources: &ProbeSources, params: &Params) -> Result<Processes, String> {
    let n = params.number("n")? as usize;
    let sort = params.text("sort")?.to_owned();
    let before_total = cpu_times(sources)?;
    let before = ticks_by_pid(sources);
    std::thread::sleep(CPU_SAMPLE);
    let after_total = cpu_times(sources)?;
    let after = ticks_by_pid(sources);
    // Ticks of one CPU over the sample.
    let per_cpu = after_total.total.saturating_sub(before_total.total) as f64
        / after_total.cpus.max(1) as f64;
    let mut list: Vec<Process> = after
        .into_iter()
        .map(|(pid, (name, ticks))| {
            let used = before
                .get(&pid)
                .map_or(0, |(_, t)| ticks.saturating_sub(*t));
            let (uid, rss_bytes) = status(sources, pid);
            Process {
                pid,
                name,
                uid,
                rss_bytes,
                cpu_percent: if per_cpu > 0.0 {
                    round1(100.0 * used as f64 / per_cpu)
                } else {
                    0.0
                },
            }
        })
        .collect();
    let total = list.len();
    if sort == "memory" {
        list.sort_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid)));
    } else {
        list.sort_by(|a, b| {
            b.cpu_percent
                .total_cmp(&a.cpu_percent)
                .then(b.rss_bytes.cmp(&a.rss_bytes))
                .then(a.pid.cmp(&b.pid))
        });
    }
    list.truncate(n);
    Ok(Processes {
        sort,
        total,
        processes: list,
    })
}

/// pid → (name, user + system ticks) for every readable process.
fn ticks_by_pid(sources: &ProbeSources) -> HashMap<u32, (String, u64)> {
    let Ok(entries) = fs::read_dir(&sources.proc_root) else {
        return HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .take(MAX_PROCESSES)
        .filter_map(|pid| {
            let stat =
                fs::read_to_string(sources.proc_root.join(pid.to_string()).join("stat")).ok()?;
            parse_pid_stat(&stat).map(|v| (pid, v))
        })
        .collect()
}

/// `pid (comm) state ppid …`: the name may hold spaces and parentheses, so it ends
/// at the last `)`; utime and stime are the 14th and 15th fields.
fn parse_pid_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// (real uid, resident bytes) from `/proc/<pid>/status`.
fn status(sources: &ProbeSources, pid: u32) -> (Option<u32>, u64) {
    let Ok(text) = fs::read_to_string(sources.proc_root.join(pid.to_string()).join("status"))
    else {
        return (None, 0);
    };
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
    };
    let uid = field("Uid:").and_then(|u| u32::try_from(u).ok());
    let rss = field("VmRSS:").map_or(0, |kb| kb * 1024);
    (uid, rss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_names() {
        let stat =
            "42 (tricky) name)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 100 1000 50";
        assert_eq!(parse_pid_stat(stat), Some(("tricky) name)".to_owned(), 10)));
        assert_eq!(parse_pid_stat("42 (short) S 1"), None);
    }
}
