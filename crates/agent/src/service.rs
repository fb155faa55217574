//! `muster agent install-service` / `uninstall-service` (SPEC §9): a systemd unit
//! that runs `muster agent` for an enrolled config dir, restarts it on failure (but
//! not when the hub revoked it, and not forever), starts it after the network is up,
//! and confines it to what it needs: its config dir, the network, no privileges.
//!
//! With `--root DIR` the unit is written under DIR and systemd is not called (tests,
//! image builds); without it, `systemctl` enables and starts the unit. Either way
//! nothing is written unless the config dir holds an identity: a unit for a machine
//! that is not enrolled would only fail and restart until systemd gives up.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::AgentError;
use crate::configdir::ConfigDir;

pub const UNIT_NAME: &str = "muster-agent.service";

/// Exit status of `muster agent` when the hub revoked or refused it. The unit tells
/// systemd not to restart on it: a revoked machine must not hammer the hub.
pub const EXIT_REVOKED: i32 = 3;

/// Restarts allowed within [`START_LIMIT_INTERVAL_S`] before systemd stops trying.
/// The agent rides out hub outages itself (it reconnects with backoff and never
/// exits for them), so a crash loop means something local is broken.
const START_LIMIT_BURST: u32 = 5;
const START_LIMIT_INTERVAL_S: u32 = 600;
const RESTART_SEC: u32 = 10;

pub struct ServiceOptions {
    /// The `muster` binary the unit runs; made absolute before it is written.
    pub binary: PathBuf,
    /// The enrolled config dir; made absolute before it is written.
    pub config_dir: PathBuf,
    /// Install under this directory instead of `/`, without calling systemctl.
    pub root: Option<PathBuf>,
}

/// Who runs the agent: the owner of the config dir, since the unit keeps no
/// capabilities and even root cannot then open another user's 0700 dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The unit file's text.
pub fn unit(binary: &Path, config_dir: &Path, owner: Owner) -> String {
    let arg = quote(config_dir, true);
    let dir = quote(config_dir, false);
    let user = if owner.uid == 0 {
        String::new()
    } else {
        // Numeric ids: systemd accepts them and no user database lookup is needed.
        format!(
            "# The owner of the config dir; the agent needs no more than its files.\n\
             User={}\nGroup={}\n",
            owner.uid, owner.gid
        )
    };
    format!(
        "[Unit]\n\
         Description=Muster agent (fleet identity and live session)\n\
         Documentation=https://github.com/muster/muster\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         # The agent waits out hub outages itself; repeated exits mean a local fault,\n\
         # so stop after {START_LIMIT_BURST} starts in {START_LIMIT_INTERVAL_S} s.\n\
         StartLimitIntervalSec={START_LIMIT_INTERVAL_S}\n\
         StartLimitBurst={START_LIMIT_BURST}\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={} agent --config-dir {arg}\n\
         Restart=on-failure\n\
         RestartSec={RESTART_SEC}\n\
         # {EXIT_REVOKED}: the hub revoked or refused this agent; restarting cannot help.\n\
         RestartPreventExitStatus={EXIT_REVOKED}\n\
         Environment=MUSTER_LOG=info\n\
         {user}\
         UMask=0077\n\
         # Confinement: the agent reads the system, writes only its config dir, talks\n\
         # TCP/TLS to the hub (netlink to list interfaces) and needs no capability.\n\
         NoNewPrivileges=yes\n\
         CapabilityBoundingSet=\n\
         AmbientCapabilities=\n\
         ProtectSystem=strict\n\
         ReadWritePaths={dir}\n\
         {}\n\
         {}\n\
         PrivateDevices=yes\n\
         ProtectKernelTunables=yes\n\
         ProtectKernelModules=yes\n\
         ProtectKernelLogs=yes\n\
         ProtectControlGroups=yes\n\
         ProtectClock=yes\n\
         RestrictSUIDSGID=yes\n\
         RestrictNamespaces=yes\n\
         RestrictRealtime=yes\n\
         RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n\
         LockPersonality=yes\n\
         # Native code without a JIT: no memory is ever writable and executable.\n\
         MemoryDenyWriteExecute=yes\n\
         SystemCallArchitectures=native\n\
         SystemCallFilter=@system-service\n\
         SystemCallErrorNumber=EPERM\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        quote(binary, false),
        protect_home(config_dir),
        private_tmp(config_dir),
    )
}

/// `ProtectHome=yes` hides /home, /root and /run/user entirely, and a path below
/// them cannot then be made writable again; so a config dir there (the default
/// `~/.muster`) gets `read-only`, which `ReadWritePaths=` can open a hole in.
fn protect_home(config_dir: &Path) -> &'static str {
    let under_home = ["/home", "/root", "/run/user"]
        .iter()
        .any(|h| config_dir.starts_with(h));
    if under_home {
        "# The config dir is in a home directory: homes read-only, it writable.\n\
         ProtectHome=read-only"
    } else {
        "ProtectHome=yes"
    }
}

/// A private /tmp hides the real one, and with it a config dir kept there.
fn private_tmp(config_dir: &Path) -> &'static str {
    if config_dir.starts_with("/tmp") || config_dir.starts_with("/var/tmp") {
        "# The config dir is in a temporary directory, which must stay visible.\n\
         PrivateTmp=no"
    } else {
        "PrivateTmp=yes"
    }
}

/// A path as one systemd word: `%` would start a specifier, and whitespace, quotes
/// and backslashes need quotes. `dollar` escapes `$` too, which systemd expands in
/// `ExecStart=` arguments (but not in the program path, nor in other settings).
fn quote(p: &Path, dollar: bool) -> String {
    let mut s = p.display().to_string().replace('%', "%%");
    if dollar {
        s = s.replace('$', "$$");
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '\'')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

fn unit_dir(root: Option<&Path>) -> PathBuf {
    root.unwrap_or(Path::new("/")).join("etc/systemd/system")
}

fn io(action: &str, path: &Path, e: std::io::Error) -> AgentError {
    AgentError::Usage(format!("cannot {action} {}: {e}", path.display()))
}

/// Write the unit (and enable it). Refuses, with nothing written, when the config
/// dir holds no identity or the binary cannot be the one to run.
pub fn install(opts: &ServiceOptions) -> Result<PathBuf, AgentError> {
    let absolute = |p: &Path| std::path::absolute(p).map_err(|e| io("resolve", p, e));
    let config_dir = absolute(&opts.config_dir)?;
    let binary = absolute(&opts.binary)?;
    if ConfigDir::new(&config_dir).load()?.is_none() {
        return Err(AgentError::NotEnrolled(config_dir));
    }
    // Under --root the binary is the target system's path, which need not exist here.
    if opts.root.is_none() && !binary.is_file() {
        return Err(AgentError::Usage(format!(
            "{} is not a file: pass the installed muster binary with --binary",
            binary.display()
        )));
    }
    let meta = std::fs::metadata(&config_dir).map_err(|e| io("inspect", &config_dir, e))?;
    let owner = Owner {
        uid: meta.uid(),
        gid: meta.gid(),
    };
    let dir = unit_dir(opts.root.as_deref());
    std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
    let text = unit(&binary, &config_dir, owner);
    muster_files::write_atomic(&dir, UNIT_NAME, text.as_bytes(), muster_files::PUBLIC)
        .map_err(|e| io("write", &dir.join(UNIT_NAME), e))?;
    match &opts.root {
        Some(_) => {
            // What `systemctl enable` does, without needing systemd.
            let wants = dir.join("multi-user.target.wants");
            std::fs::create_dir_all(&wants).map_err(|e| io("create", &wants, e))?;
            let link = wants.join(UNIT_NAME);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(format!("../{UNIT_NAME}"), &link)
                .map_err(|e| io("link", &link, e))?;
        }
        None => {
            systemctl(&["daemon-reload"])?;
            systemctl(&["enable", "--now", UNIT_NAME])?;
        }
    }
    Ok(dir.join(UNIT_NAME))
}

pub fn uninstall(root: Option<&Path>) -> Result<PathBuf, AgentError> {
    let dir = unit_dir(root);
    let path = dir.join(UNIT_NAME);
    if root.is_none() {
        // Stopping may fail when it never ran; removing the files is what matters.
        let _ = systemctl(&["disable", "--now", UNIT_NAME]);
    }
    for p in [
        dir.join("multi-user.target.wants").join(UNIT_NAME),
        path.clone(),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &p, e)),
        }
    }
    if root.is_none() {
        let _ = systemctl(&["daemon-reload"]);
    }
    Ok(path)
}

fn systemctl(args: &[&str]) -> Result<(), AgentError> {
    let status = Command::new("systemctl").args(args).status().map_err(|e| {
        AgentError::Usage(format!(
            "cannot run systemctl: {e} (use --root to only write the unit)"
        ))
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(AgentError::Usage(format!(
            "systemctl {} failed ({status})",
            args.join(" ")
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::configdir::{AgentConfig, Credentials};

    /// A config dir holding an identity (contents are not checked by `install`).
    fn enrolled(path: &Path) {
        ConfigDir::new(path)
            .store(&Credentials {
                config: AgentConfig {
                    hub_url: "https://hub.example:8443".into(),
                    agent_id: "a1".into(),
                    agent_name: "web-01".into(),
                    agent_key: "mag_x".into(),
                    ca_hash: "sha256:00".into(),
                    heartbeat_interval_s: 30,
                    enrolled_at: "2025-01-01T00:00:00Z".into(),
                    generation: 1,
                },
                key_pem: "k".into(),
                cert_pem: "c".into(),
                ca_pem: "ca".into(),
            })
            .unwrap();
    }

    #[test]
    fn install_and_uninstall_under_a_root() {
        let root = tempfile::tempdir().unwrap();
        let config_dir = root.path().join("muster agent");
        enrolled(&config_dir);
        let opts = ServiceOptions {
            binary: PathBuf::from("/usr/local/bin/muster"),
            config_dir: config_dir.clone(),
            root: Some(root.path().to_path_buf()),
        };
        let path = install(&opts).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let quoted = format!("\"{}\"", config_dir.display());
        assert!(
            text.contains(&format!(
                "ExecStart=/usr/local/bin/muster agent --config-dir {quoted}\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("ReadWritePaths={quoted}\n")),
            "{text}"
        );
        assert!(text.contains("Restart=on-failure"));
        assert!(text.contains("After=network-online.target"));
        assert!(text.contains("RestartPreventExitStatus=3"));
        let link = root
            .path()
            .join("etc/systemd/system/multi-user.target.wants")
            .join(UNIT_NAME);
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from(format!("../{UNIT_NAME}"))
        );
        // Installing twice is fine.
        install(&opts).unwrap();
        uninstall(Some(root.path())).unwrap();
        assert!(!path.exists() && std::fs::symlink_metadata(&link).is_err());
        uninstall(Some(root.path())).unwrap();
    }

    #[test]
    fn a_config_dir_without_an_identity_is_refused_with_nothing_written() {
        let root = tempfile::tempdir().unwrap();
        let opts = ServiceOptions {
            binary: PathBuf::from("/usr/local/bin/muster"),
            config_dir: root.path().join("never-enrolled"),
            root: Some(root.path().join("target")),
        };
        let err = install(&opts).unwrap_err();
        assert!(matches!(err, AgentError::NotEnrolled(_)), "{err}");
        assert!(!root.path().join("target").exists());
        assert!(!root.path().join("never-enrolled").exists());
    }

    #[test]
    fn paths_are_quoted_for_systemd() {
        let owner = Owner { uid: 0, gid: 0 };
        let text = unit(
            Path::new("/opt/m%1/muster"),
            Path::new("/srv/a $b%c"),
            owner,
        );
        assert!(
            text.contains("ExecStart=/opt/m%%1/muster agent --config-dir \"/srv/a $$b%%c\"\n"),
            "{text}"
        );
        assert!(text.contains("ReadWritePaths=\"/srv/a $b%%c\"\n"), "{text}");
        assert!(!text.contains("User="), "root needs no User=");
        let text = unit(
            Path::new("/usr/bin/muster"),
            Path::new("/home/ann/.muster"),
            Owner {
                uid: 1000,
                gid: 100,
            },
        );
        assert!(text.contains("User=1000\nGroup=100\n"), "{text}");
        assert!(text.contains("ProtectHome=read-only\n"), "{text}");
        let text = unit(
            Path::new("/usr/bin/muster"),
            Path::new("/var/lib/muster"),
            owner,
        );
        assert!(text.contains("ProtectHome=yes\n"), "{text}");
        assert!(text.contains("PrivateTmp=yes\n"), "{text}");
        let text = unit(Path::new("/usr/bin/muster"), Path::new("/tmp/m"), owner);
        assert!(text.contains("PrivateTmp=no\n"), "{text}");
    }
}
