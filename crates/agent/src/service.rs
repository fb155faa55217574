//! `muster agent install-service` / `uninstall-service` (SPEC §9): a systemd unit
//! that runs `muster agent` for a config dir, restarts it on failure, and starts it
//! after the network is up.
//!
//! With `--root DIR` everything happens under DIR and systemd is not called (tests,
//! image builds); without it, `systemctl` enables and starts the unit.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::AgentError;

pub const UNIT_NAME: &str = "muster-agent.service";

/// Exit status of `muster agent` when the hub revoked or refused it. The unit tells
/// systemd not to restart on it: a revoked machine must not hammer the hub.
pub const EXIT_REVOKED: i32 = 3;

pub struct ServiceOptions {
    pub binary: PathBuf,
    pub config_dir: PathBuf,
    /// Install under this directory instead of `/`, without calling systemctl.
    pub root: Option<PathBuf>,
}

/// The unit file's text.
pub fn unit(binary: &Path, config_dir: &Path) -> String {
    format!(
        "[Unit]\n\
         Description=Muster agent (fleet identity and live session)\n\
         Documentation=https://github.com/muster/muster\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={} agent --config-dir {}\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         # {EXIT_REVOKED}: the hub revoked this agent; restarting cannot help.\n\
         RestartPreventExitStatus={EXIT_REVOKED}\n\
         Environment=MUSTER_LOG=info\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        quote(binary),
        quote(config_dir)
    )
}

/// systemd's quoting for a path argument.
fn quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
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

pub fn install(opts: &ServiceOptions) -> Result<PathBuf, AgentError> {
    let dir = unit_dir(opts.root.as_deref());
    std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
    let text = unit(&opts.binary, &opts.config_dir);
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

    #[test]
    fn install_and_uninstall_under_a_root() {
        let root = tempfile::tempdir().unwrap();
        let opts = ServiceOptions {
            binary: PathBuf::from("/usr/local/bin/muster"),
            config_dir: PathBuf::from("/etc/muster agent"),
            root: Some(root.path().to_path_buf()),
        };
        let path = install(&opts).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(
                "ExecStart=/usr/local/bin/muster agent --config-dir \"/etc/muster agent\""
            )
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
}
