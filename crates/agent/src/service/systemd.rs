//! The systemd unit: restarts on failure but not on `EXIT_REVOKED` and not
//! forever, starts after the network is up, and confines the agent to what it
//! needs: its config dir, the network, no privileges. Verified with
//! `systemd-analyze verify` (tests).

use std::path::Path;

use super::{ServiceError, ServiceSpec, io};

pub const UNIT: &str = "muster-agent.service";
pub const PATH: &str = "etc/systemd/system/muster-agent.service";
/// What `systemctl enable` creates for `WantedBy=multi-user.target`.
pub const WANTS_LINK: &str = "etc/systemd/system/multi-user.target.wants/muster-agent.service";

/// The unit file's text.
pub fn render(spec: &ServiceSpec) -> String {
    let binary = spec.binary.as_path();
    let config_dir = spec.config_dir.as_path();
    let restart_sec = spec.restart.delay_s;
    let never = spec.restart.never_on;
    let burst = spec.restart.burst;
    let window = spec.restart.window_s;
    let arg = quote(config_dir, true);
    let dir = quote(config_dir, false);
    // Run as root, the agent updates itself (SPEC §10): it writes the new binary beside
    // the running one and keeps `<binary>.previous`, so that directory must be
    // writable too. Run as another user it cannot replace a root-owned binary anyway;
    // `sudo muster update` does that.
    let writable = match (&spec.user, binary.parent()) {
        (None, Some(bin_dir)) if bin_dir != config_dir && !bin_dir.as_os_str().is_empty() => {
            format!(
                "# Its binary's directory too: self-update swaps the binary beside itself.\n\
             ReadWritePaths={dir} {}\n",
                quote(bin_dir, false)
            )
        }
        _ => format!("ReadWritePaths={dir}\n"),
    };
    let user = match &spec.user {
        None => String::new(),
        // Numeric ids: systemd accepts them and no user database lookup is needed.
        Some(owner) => format!(
            "# The owner of the config dir; the agent needs no more than its files.\n\
             User={}\nGroup={}\n",
            owner.uid, owner.gid
        ),
    };
    format!(
        "[Unit]\n\
         Description={description}\n\
         Documentation={docs}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         # The agent waits out hub outages itself; repeated exits mean a local fault,\n\
         # so stop after {burst} starts in {window} s.\n\
         StartLimitIntervalSec={window}\n\
         StartLimitBurst={burst}\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={} agent --config-dir {arg}\n\
         Restart=on-failure\n\
         RestartSec={restart_sec}\n\
         # {never}: the hub revoked or refused this agent; restarting cannot help.\n\
         RestartPreventExitStatus={never}\n\
         Environment=MUSTER_LOG=info\n\
         {user}\
         UMask=0077\n\
         # Confinement: the agent reads the system, writes only its config dir, talks\n\
         # TCP/TLS to the hub (netlink to list interfaces) and needs no capability.\n\
         NoNewPrivileges=yes\n\
         CapabilityBoundingSet=\n\
         AmbientCapabilities=\n\
         ProtectSystem=strict\n\
         {writable}\
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
        description = spec.description,
        docs = spec.docs_url,
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

/// systemd refuses an executable path with quotes, backslashes or control
/// characters ("Executable name contains special characters"): say so now rather
/// than write a unit it will not start.
pub fn check(spec: &ServiceSpec) -> Result<(), ServiceError> {
    let path = spec.binary.display().to_string();
    if path
        .chars()
        .any(|c| matches!(c, '"' | '\'' | '\\') || c.is_control())
    {
        return Err(ServiceError::Unrunnable {
            init: "systemd",
            chars: "quotes, backslashes or control characters",
            path: spec.binary.clone(),
        });
    }
    Ok(())
}

/// What `systemctl enable` does, without needing systemd.
pub fn enable_offline(root: &Path) -> Result<(), ServiceError> {
    let link = root.join(WANTS_LINK);
    let wants = link.parent().unwrap_or(root);
    std::fs::create_dir_all(wants).map_err(|e| io("create", wants, e))?;
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(format!("../{UNIT}"), &link).map_err(|e| io("link", &link, e))
}
