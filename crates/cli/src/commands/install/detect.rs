//! What `muster install` looks for on this machine, and which pack's probes cover
//! each find. Only cheap checks: a path that exists or a program on `PATH`, nothing
//! is run. The answer is honest about coverage: today the built-in `system` pack
//! covers any software through its service state and journal (systemd only).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// One piece of software found, how it was found, and what covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub what: &'static str,
    /// The path or program that gave it away.
    pub evidence: String,
    /// The probes that can watch it, e.g. `system.service unit=nginx`; without
    /// systemd only its processes and ports.
    pub covered_by: String,
}

/// Software a pack can watch: its name, its systemd unit, the programs and paths
/// that reveal it.
struct Known {
    what: &'static str,
    unit: &'static str,
    programs: &'static [&'static str],
    paths: &'static [&'static str],
}

const KNOWN: &[Known] = &[
    Known {
        what: "Docker",
        unit: "docker",
        programs: &["docker", "dockerd"],
        paths: &["/var/run/docker.sock"],
    },
    Known {
        what: "containerd",
        unit: "containerd",
        programs: &["containerd"],
        paths: &["/run/containerd/containerd.sock"],
    },
    Known {
        what: "nginx",
        unit: "nginx",
        programs: &["nginx"],
        paths: &["/etc/nginx/nginx.conf"],
    },
    Known {
        what: "Apache httpd",
        unit: "apache2",
        programs: &["apache2", "httpd"],
        paths: &["/etc/apache2/apache2.conf", "/etc/httpd/conf/httpd.conf"],
    },
    Known {
        what: "PostgreSQL",
        unit: "postgresql",
        programs: &["postgres", "psql", "pg_ctl"],
        paths: &["/usr/lib/postgresql"],
    },
    Known {
        what: "MySQL/MariaDB",
        unit: "mysql",
        programs: &["mysqld", "mariadbd"],
        paths: &["/etc/mysql"],
    },
    Known {
        what: "Redis",
        unit: "redis-server",
        programs: &["redis-server"],
        paths: &["/etc/redis"],
    },
    Known {
        what: "OpenSSH server",
        unit: "ssh",
        programs: &["sshd"],
        paths: &["/etc/ssh/sshd_config"],
    },
];

/// Where to look: `root` prefixes every path (`/` on a real machine), `path` is
/// the `PATH` to search for programs.
pub fn detect(root: &Path, path: Option<&OsStr>) -> Vec<Found> {
    let dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    let under = |p: &str| root.join(p.trim_start_matches('/'));
    let systemd = under("/run/systemd/system").is_dir();
    let mut found = Vec::new();
    if systemd {
        found.push(Found {
            what: "systemd",
            evidence: "/run/systemd/system".to_owned(),
            covered_by: "system.service, system.journal (any unit)".to_owned(),
        });
    }
    for k in KNOWN {
        let program = k
            .programs
            .iter()
            .find_map(|p| dirs.iter().map(|d| d.join(p)).find(|f| is_program(f)));
        let evidence = match program {
            Some(p) => p.display().to_string(),
            None => match k.paths.iter().find(|p| under(p).exists()) {
                Some(p) => (*p).to_owned(),
                None => continue,
            },
        };
        let covered_by = if systemd {
            format!("system.service unit={0}, system.journal unit={0}", k.unit)
        } else {
            "system.processes, system.ports".to_owned()
        };
        found.push(Found {
            what: k.what,
            evidence,
            covered_by,
        });
    }
    found
}

fn is_program(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn finds_programs_on_path_and_paths_under_the_root() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(root.join("run/systemd/system")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib/postgresql")).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("nginx"), "").unwrap();
        std::fs::set_permissions(bin.join("nginx"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        // Not executable: not a program.
        std::fs::write(bin.join("docker"), "").unwrap();
        let found = detect(&root, Some(bin.as_os_str()));
        let names: Vec<_> = found.iter().map(|f| f.what).collect();
        assert_eq!(names, ["systemd", "nginx", "PostgreSQL"]);
        assert_eq!(
            found[1].covered_by,
            "system.service unit=nginx, system.journal unit=nginx"
        );
        assert_eq!(found[2].evidence, "/usr/lib/postgresql");
    }

    #[test]
    fn without_systemd_the_coverage_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("etc/redis")).unwrap();
        let found = detect(tmp.path(), None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].covered_by, "system.processes, system.ports");
    }
}
