//! Where probes read the host from (SPEC §8, §15). On a host these are `/proc` and
//! `/sys`; an agent in a container reads the host's, bind-mounted (by default at
//! `/host/proc` and `/host/sys`), so its probes describe the host, not the container.

use std::path::{Path, PathBuf};

use crate::facts::{FactSources, pick_source};

const DEFAULT_HOST_PROC: &str = "/host/proc";
const DEFAULT_HOST_SYS: &str = "/host/sys";
const SYSTEMD_BOOTED: &str = "/run/systemd/system";

/// The host paths probes read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSources {
    /// `/proc`, or the host's procfs mounted in a container.
    pub proc_root: PathBuf,
    /// `/sys`, or the host's sysfs mounted in a container.
    pub sys_root: PathBuf,
    /// True when `proc_root` is the host's procfs seen from a container: per-process
    /// views (mounts, network sockets) are then read through PID 1, the host's init,
    /// since `self` would be the agent in its own namespaces.
    pub host_mounted: bool,
    /// Same as the facts': read before the OS hostname.
    pub hostname_file: Option<PathBuf>,
    /// Same as the facts': read before `/etc/os-release`.
    pub os_release_file: Option<PathBuf>,
    /// Present when systemd is the init system (what `sd_booted` checks).
    pub systemd_booted: PathBuf,
}

impl Default for ProbeSources {
    /// This machine's own `/proc` and `/sys`, no host files.
    fn default() -> Self {
        ProbeSources {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
            host_mounted: false,
            hostname_file: None,
            os_release_file: None,
            systemd_booted: PathBuf::from(SYSTEMD_BOOTED),
        }
    }
}

impl ProbeSources {
    /// `MUSTER_HOST_PROC` (default `/host/proc` when present, else `/proc`),
    /// `MUSTER_HOST_SYS` (default `/host/sys` when present, else `/sys`), and the
    /// hostname and os-release files as [`FactSources::from_env`] picks them.
    pub fn from_env() -> Self {
        ProbeSources::default().with_facts(&FactSources::from_env())
    }

    /// The host roots from the environment, the hostname and os-release files from
    /// `facts`, so probes and facts agree on which host they describe.
    pub fn with_facts(self, facts: &FactSources) -> Self {
        let proc = pick_source(
            std::env::var_os("MUSTER_HOST_PROC"),
            Path::new(DEFAULT_HOST_PROC),
        );
        let sys = pick_source(
            std::env::var_os("MUSTER_HOST_SYS"),
            Path::new(DEFAULT_HOST_SYS),
        );
        ProbeSources {
            host_mounted: proc.is_some(),
            proc_root: proc.unwrap_or(self.proc_root),
            sys_root: sys.unwrap_or(self.sys_root),
            hostname_file: facts.hostname_file.clone(),
            os_release_file: facts.os_release_file.clone(),
            systemd_booted: self.systemd_booted,
        }
    }

    /// `<proc_root>/<rel>`.
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.proc_root.join(rel)
    }

    /// The process whose namespaces describe the host: ourselves on a host, the
    /// host's init when `proc_root` is mounted from the host.
    pub fn host_process(&self) -> PathBuf {
        self.proc_root
            .join(if self.host_mounted { "1" } else { "self" })
    }
}
