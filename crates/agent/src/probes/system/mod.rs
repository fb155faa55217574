//! The built-in `system` pack: the host's identity, load, memory, disks, network,
//! processes and systemd services, read from procfs/sysfs (through
//! [`ProbeSources`]) and from `systemctl show` / `journalctl`.

mod disks;
mod host;
mod net;
mod procs;
mod systemd;

use super::params::{ParamKind, ParamSpec};
use super::{Keep, Pack, Probe, ProbeSources};

/// The pack of every agent.
pub struct System;

const UNIT: ParamSpec = ParamSpec {
    name: "unit",
    description: "systemd unit, e.g. nginx.service",
    required: true,
    default: None,
    kind: ParamKind::Unit,
};

const PROCESSES: &[ParamSpec] = &[
    ParamSpec {
        name: "n",
        description: "how many processes (1-100)",
        required: false,
        default: Some("10"),
        kind: ParamKind::Number { min: 1, max: 100 },
    },
    ParamSpec {
        name: "sort",
        description: "cpu or memory",
        required: false,
        default: Some("cpu"),
        kind: ParamKind::Choice(&["cpu", "memory"]),
    },
];

const JOURNAL: &[ParamSpec] = &[
    UNIT,
    ParamSpec {
        name: "lines",
        description: "how many of the last lines (1-500)",
        required: false,
        default: Some("50"),
        kind: ParamKind::Number { min: 1, max: 500 },
    },
];

impl Pack for System {
    fn name(&self) -> &'static str {
        "system"
    }

    fn version(&self) -> String {
        muster_release::running_version()
    }

    /// `system.journal` reads service logs, which can hold anything a service wrote.
    fn needs(&self) -> &'static [&'static str] {
        &["journal"]
    }

    /// The files the load and memory probes cannot do without.
    fn self_check(&self, sources: &ProbeSources) -> Result<(), String> {
        for file in ["loadavg", "meminfo", "stat"] {
            let path = sources.proc(file);
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        }
        Ok(())
    }

    fn probes(&self) -> Vec<Probe> {
        vec![
            Probe::blocking(
                "system.info",
                "hostname, OS, kernel, uptime, agent version and architecture",
                &[],
                |s, _| host::info(s),
            ),
            Probe::blocking(
                "system.load",
                "load averages, CPU count and CPU usage over a short sample",
                &[],
                |s, _| host::load(s),
            ),
            Probe::blocking(
                "system.memory",
                "memory and swap: total, available, used (bytes)",
                &[],
                |s, _| host::memory(s),
            ),
            Probe::blocking(
                "system.disks",
                "mounted filesystems with size, used and available bytes",
                &[],
                |s, _| disks::disks(s),
            ),
            Probe::blocking(
                "system.interfaces",
                "network interfaces: name, MAC, addresses, up or down",
                &[],
                |s, _| Ok(net::interfaces(s)),
            ),
            Probe::blocking(
                "system.ports",
                "listening TCP and UDP sockets, with the owning process when readable",
                &[],
                |s, _| net::ports(s),
            ),
            Probe::blocking(
                "system.processes",
                "top processes by CPU or memory",
                PROCESSES,
                procs::processes,
            ),
            Probe::asynchronous(
                "system.service",
                "a systemd unit's state",
                &[UNIT],
                systemd::service,
            ),
            Probe::asynchronous(
                "system.journal",
                "the last lines of a systemd unit's journal",
                JOURNAL,
                systemd::journal,
            )
            .keeping(Keep::Tail),
        ]
    }
}
