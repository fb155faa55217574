//! `system.info`, `system.load` and `system.memory`: small files under `/proc`.

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::probes::ProbeSources;

/// How long `system.load` (and `system.processes`) watch the CPU counters.
pub const CPU_SAMPLE: Duration = Duration::from_millis(200);

#[derive(Debug, Serialize)]
pub struct Info {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub uptime_s: u64,
    pub agent_version: String,
    pub arch: String,
}

pub fn info(sources: &ProbeSources) -> Result<Info, String> {
    let uptime = read(&sources.proc("uptime"))?;
    let uptime_s = uptime
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or("cannot parse uptime")?;
    Ok(Info {
        hostname: crate::facts::hostname(sources.hostname_file.as_deref()),
        os: crate::facts::host_os_info(sources.os_release_file.as_deref()),
        kernel: read(&sources.proc("sys/kernel/osrelease"))?
            .trim()
            .to_owned(),
        uptime_s: uptime_s as u64,
        agent_version: muster_release::running_version(),
        arch: crate::facts::arch().to_owned(),
    })
}

#[derive(Debug, Serialize)]
pub struct Load {
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    pub cpus: usize,
    /// Busy share of all CPUs over the sample, 0 to 100.
    pub cpu_percent: f64,
    pub sample_ms: u64,
}

pub fn load(sources: &ProbeSources) -> Result<Load, String> {
    let text = read(&sources.proc("loadavg"))?;
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    let mut load = [0.0; 3];
    for slot in &mut load {
        *slot = fields
            .next()
            .and_then(Result::ok)
            .ok_or("cannot parse loadavg")?;
    }
    let before = cpu_times(sources)?;
    std::thread::sleep(CPU_SAMPLE);
    let after = cpu_times(sources)?;
    let total = after.total.saturating_sub(before.total);
    let idle = after.idle.saturating_sub(before.idle);
    let cpu_percent = if total == 0 {
        0.0
    } else {
        round1(100.0 * (total - idle.min(total)) as f64 / total as f64)
    };
    Ok(Load {
        load,
        cpus: after.cpus,
        cpu_percent,
        sample_ms: CPU_SAMPLE.as_millis() as u64,
    })
}

/// The aggregate `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    pub total: u64,
    /// `idle` + `iowait`.
    pub idle: u64,
    pub cpus: usize,
}

pub fn cpu_times(sources: &ProbeSources) -> Result<CpuTimes, String> {
    parse_stat(&read(&sources.proc("stat"))?).ok_or_else(|| "cannot parse /proc/stat".to_owned())
}

fn parse_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied()? + ticks.get(4).copied().unwrap_or(0);
    let cpus = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some(CpuTimes { total, idle, cpus })
}

#[derive(Debug, Serialize)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
    pub swap_used_bytes: u64,
}

pub fn memory(sources: &ProbeSources) -> Result<Memory, String> {
    let text = read(&sources.proc("meminfo"))?;
    let kb = |key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    let total = kb("MemTotal").ok_or("no MemTotal in meminfo")?;
    // Kernels before 3.14 have no MemAvailable: approximate it the old way.
    let available = kb("MemAvailable").unwrap_or_else(|| {
        kb("MemFree").unwrap_or(0) + kb("Buffers").unwrap_or(0) + kb("Cached").unwrap_or(0)
    });
    let swap_total = kb("SwapTotal").unwrap_or(0);
    let swap_free = kb("SwapFree").unwrap_or(0);
    Ok(Memory {
        total_bytes: total,
        available_bytes: available,
        used_bytes: total.saturating_sub(available),
        swap_total_bytes: swap_total,
        swap_free_bytes: swap_free,
        swap_used_bytes: swap_total.saturating_sub(swap_free),
    })
}

/// Read a whole (small) file, the error naming it.
pub fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1\n";
        let t = parse_stat(text).unwrap_or(CpuTimes {
            total: 0,
            idle: 0,
            cpus: 0,
        });
        assert_eq!((t.total, t.idle, t.cpus), (1000, 850, 2));
        assert!(parse_stat("intr 1\n").is_none());
    }
}
