//! `muster agent install-service` / `uninstall-service` (SPEC §9, §10): one
//! description of the agent as a service ([`ServiceSpec`]) and one renderer per init
//! system — systemd, launchd, FreeBSD and NetBSD rc.d, OpenBSD rc.d (rcctl), illumos
//! SMF and the Windows service manager — so every platform runs the same command
//! (`muster agent --config-dir D`) with the same restart policy: restart after a
//! failure, 10 s apart, but never after [`EXIT_REVOKED`].
//!
//! With `root` the file is written under that directory, every path in it (binary,
//! config dir) names the target system, the enrollment check reads the config dir
//! under the root, and no process is called (image builds, the bootstrap's
//! `MUSTER_ROOT`, tests). Without it the init system is told to enable (and start)
//! the service, and only when it is the one this OS runs. Nothing is written unless
//! the config dir holds an identity: a service for a machine that is not enrolled
//! would only fail and restart.

mod install;
mod launchd;
mod openbsd;
mod quote;
mod rcd;
mod smf;
pub(crate) mod systemd;
mod windows;

pub use install::{InstallOptions, Installed, install, print, uninstall};
pub(crate) use quote::{sh_quote, xml_escape, xml_text};

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

/// Exit status of `muster agent` when the hub revoked or refused it. Every renderer
/// keeps the service from restarting on it: a revoked machine must not hammer the hub.
pub const EXIT_REVOKED: i32 = 3;

/// Where an operator reads what the service is (systemd `Documentation=`, SMF
/// `<documentation>`, comments elsewhere).
pub const DOCS_URL: &str = "https://github.com/muster/muster";

/// What can go wrong installing or removing the service, each fit for one line.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// `--init auto` found no init system this command can write for.
    #[error(
        "no supported service manager found on this machine ({0}); run `muster agent --config-dir DIR` under your own supervisor, or pick one with --init"
    )]
    NoServiceManager(String),
    /// The `--init` word is not one we know.
    #[error(
        "unknown init system {0:?} (expected auto, systemd, launchd, freebsd, netbsd, openbsd, smf or windows)"
    )]
    UnknownInit(String),
    /// With `--root` the paths name the target system and must not depend on this
    /// machine's current directory.
    #[error("with --root, {what} must be an absolute path on the target system (got {path})")]
    NotAbsolute { what: &'static str, path: PathBuf },
    /// The binary the service would run is not there.
    #[error("{0} is not a file: pass the installed muster binary with --binary")]
    NoBinary(PathBuf),
    /// The init system cannot run a program at such a path, however it is quoted.
    #[error("{init} cannot run a program whose path holds {chars}: {path}")]
    Unrunnable {
        init: &'static str,
        chars: &'static str,
        path: PathBuf,
    },
    /// The init system cannot run the agent as the config dir's owner.
    #[error("{0}")]
    User(String),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A tool of the init system could not be run or failed.
    #[error("{command} failed: {reason} (use --root DIR to only write the file)")]
    Command { command: String, reason: String },
    /// The init system is not the one this OS runs, so it cannot be called.
    #[error(
        "{init} is not this machine's service manager (this is {os}); use --root DIR to only write the file, or --print"
    )]
    WrongOs {
        init: &'static str,
        os: &'static str,
    },
}

pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> ServiceError {
    ServiceError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The init systems we render for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    Systemd,
    Launchd,
    FreeBsd,
    NetBsd,
    OpenBsd,
    Smf,
    Windows,
}

impl Init {
    pub const ALL: [Init; 7] = [
        Init::Systemd,
        Init::Launchd,
        Init::FreeBsd,
        Init::NetBsd,
        Init::OpenBsd,
        Init::Smf,
        Init::Windows,
    ];

    /// The `--init` word.
    pub fn name(self) -> &'static str {
        match self {
            Init::Systemd => "systemd",
            Init::Launchd => "launchd",
            Init::FreeBsd => "freebsd",
            Init::NetBsd => "netbsd",
            Init::OpenBsd => "openbsd",
            Init::Smf => "smf",
            Init::Windows => "windows",
        }
    }

    /// `auto` is `None`.
    pub fn parse(word: &str) -> Result<Option<Init>, ServiceError> {
        if word == "auto" {
            return Ok(None);
        }
        Init::ALL
            .into_iter()
            .find(|i| i.name() == word)
            .map(Some)
            .ok_or_else(|| ServiceError::UnknownInit(word.to_owned()))
    }

    /// The `std::env::consts::OS` whose service manager this is: its tools are
    /// only called there.
    fn os(self) -> &'static str {
        match self {
            Init::Systemd => "linux",
            Init::Launchd => "macos",
            Init::FreeBsd => "freebsd",
            Init::NetBsd => "netbsd",
            Init::OpenBsd => "openbsd",
            Init::Smf => "illumos",
            Init::Windows => "windows",
        }
    }

    /// Where the file goes, relative to the root.
    pub fn file(self) -> &'static str {
        match self {
            Init::Systemd => systemd::PATH,
            Init::Launchd => launchd::PATH,
            Init::FreeBsd => rcd::FREEBSD_PATH,
            Init::NetBsd => rcd::NETBSD_PATH,
            Init::OpenBsd => openbsd::PATH,
            Init::Smf => smf::PATH,
            Init::Windows => windows::PATH,
        }
    }

    /// The init system of this OS (`auto`). Linux counts as systemd when systemd
    /// is running (`/run/systemd/system`), or, under a root, when that root is
    /// not this machine: an image being built runs nothing yet.
    pub fn detect(os: &str, root: Option<&Path>) -> Result<Init, ServiceError> {
        let init = match os {
            "linux" if root.is_some() || Path::new("/run/systemd/system").is_dir() => Init::Systemd,
            "linux" => {
                return Err(ServiceError::NoServiceManager(
                    "Linux without systemd running".to_owned(),
                ));
            }
            "macos" => Init::Launchd,
            "freebsd" => Init::FreeBsd,
            "netbsd" => Init::NetBsd,
            "openbsd" => Init::OpenBsd,
            "illumos" | "solaris" => Init::Smf,
            "windows" => Init::Windows,
            other => return Err(ServiceError::NoServiceManager(other.to_owned())),
        };
        Ok(init)
    }
}

/// The account the agent runs as: the owner of the config dir, since the services
/// keep no privileges and even root cannot then open another user's 0700 dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Looked up in the target's `/etc/passwd` (or `id`): launchd, rc.d and SMF
    /// take a name, systemd takes the numbers.
    pub name: Option<String>,
}

/// When the init system restarts the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Seconds between an exit and the next start: the agent rides out hub
    /// outages itself, so an exit is a local fault worth a pause.
    pub delay_s: u32,
    /// The exit status that must never lead to a restart.
    pub never_on: i32,
    /// At most this many starts within [`RestartPolicy::window_s`], then stop
    /// trying: the agent rides out hub outages itself (it reconnects with backoff
    /// and never exits for them), so a crash loop means something local is broken.
    pub burst: u32,
    pub window_s: u32,
}

/// The agent as a service, independent of any init system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// `muster-agent`; each renderer derives its own spelling (label, rc name, FMRI).
    pub name: &'static str,
    pub description: &'static str,
    /// The `muster` binary, as a path on the system that runs the service.
    pub binary: PathBuf,
    /// The enrolled config dir, as a path on the system that runs the service.
    pub config_dir: PathBuf,
    /// `None`: root (or, on Windows, LocalSystem).
    pub user: Option<User>,
    pub restart: RestartPolicy,
    pub docs_url: &'static str,
}

impl ServiceSpec {
    pub fn new(binary: PathBuf, config_dir: PathBuf, user: Option<User>) -> Self {
        ServiceSpec {
            name: "muster-agent",
            description: "Muster agent (fleet identity and live session)",
            binary,
            config_dir,
            user,
            restart: RestartPolicy {
                delay_s: 10,
                never_on: EXIT_REVOKED,
                burst: 5,
                window_s: 600,
            },
            docs_url: DOCS_URL,
        }
    }

    /// The arguments after the binary, the same on every platform.
    pub fn args(&self) -> Vec<String> {
        vec![
            "agent".to_owned(),
            "--config-dir".to_owned(),
            self.config_dir.display().to_string(),
        ]
    }

    fn user_name(&self, init: Init) -> Result<Option<&str>, ServiceError> {
        match &self.user {
            None => Ok(None),
            Some(User {
                name: Some(name), ..
            }) => Ok(Some(name)),
            Some(User { uid, .. }) => Err(ServiceError::User(format!(
                "{} names the user to run as, and uid {uid} (owner of {}) has no name in /etc/passwd",
                init.name(),
                self.config_dir.display()
            ))),
        }
    }
}

/// The rendered service file.
pub fn render(init: Init, spec: &ServiceSpec, start: bool) -> Result<String, ServiceError> {
    Ok(match init {
        Init::Systemd => {
            systemd::check(spec)?;
            systemd::render(spec)
        }
        Init::Launchd => launchd::render(spec, spec.user_name(init)?),
        Init::FreeBsd => rcd::render_freebsd(spec, spec.user_name(init)?),
        Init::NetBsd => rcd::render_netbsd(spec)?,
        Init::OpenBsd => openbsd::render(spec, spec.user_name(init)?),
        Init::Smf => smf::render(spec, spec.user_name(init)?),
        Init::Windows => windows::render(spec, start),
    })
}
