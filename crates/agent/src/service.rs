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

mod launchd;
mod openbsd;
mod rcd;
mod smf;
mod systemd;
mod windows;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::AgentError;
use crate::configdir::ConfigDir;

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

pub struct InstallOptions {
    /// `None`: detect from this OS.
    pub init: Option<Init>,
    /// The `muster` binary the service runs (made absolute without a root).
    pub binary: PathBuf,
    /// The enrolled config dir (made absolute without a root).
    pub config_dir: PathBuf,
    /// Write under this directory, with paths naming the target; call nothing.
    pub root: Option<PathBuf>,
    /// Enable but do not start.
    pub no_start: bool,
}

/// What [`install`] did.
#[derive(Debug)]
pub struct Installed {
    pub init: Init,
    pub path: PathBuf,
    /// Whether the init system was told to start it now.
    pub started: bool,
}

/// The service file as [`install`] would write it, written nowhere and with no
/// enrollment check (`--print`).
pub fn print(opts: &InstallOptions) -> Result<String, AgentError> {
    let (init, spec) = prepare(opts)?;
    Ok(render(init, &spec, !opts.no_start)?)
}

/// On the system the paths name: `path` itself, or `path` under `root`.
fn on_target(root: Option<&Path>, path: &Path) -> PathBuf {
    match root {
        Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_path_buf(),
    }
}

fn prepare(opts: &InstallOptions) -> Result<(Init, ServiceSpec), AgentError> {
    let root = opts.root.as_deref();
    let init = match opts.init {
        Some(init) => init,
        None => Init::detect(std::env::consts::OS, root)?,
    };
    let windows = init == Init::Windows;
    let absolute = |what: &'static str, p: &Path| -> Result<PathBuf, ServiceError> {
        // Windows paths are not absolute by this OS's rules; they are written as given.
        if windows || p.is_absolute() {
            Ok(p.to_path_buf())
        } else if root.is_some() {
            Err(ServiceError::NotAbsolute {
                what,
                path: p.to_path_buf(),
            })
        } else {
            std::path::absolute(p).map_err(|e| io("resolve", p, e))
        }
    };
    let binary = absolute("--binary", &opts.binary)?;
    let config_dir = absolute("--config-dir", &opts.config_dir)?;
    let user = if windows {
        None
    } else {
        owner(root, &on_target(root, &config_dir))?
    };
    Ok((init, ServiceSpec::new(binary, config_dir, user)))
}

/// The owner of the config dir, when it exists and is not root.
#[cfg(unix)]
fn owner(root: Option<&Path>, dir: &Path) -> Result<Option<User>, ServiceError> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("inspect", dir, e)),
    };
    if meta.uid() == 0 {
        return Ok(None);
    }
    Ok(Some(User {
        uid: meta.uid(),
        gid: meta.gid(),
        name: user_name(root, meta.uid()),
    }))
}

#[cfg(not(unix))]
fn owner(_root: Option<&Path>, _dir: &Path) -> Result<Option<User>, ServiceError> {
    Ok(None)
}

/// The name of `uid` on the target: its `/etc/passwd`, else (on this machine only)
/// `id -nu`, which also asks directory services (macOS keeps people there).
fn user_name(root: Option<&Path>, uid: u32) -> Option<String> {
    let passwd = on_target(root, Path::new("/etc/passwd"));
    let from_file = std::fs::read_to_string(passwd).ok().and_then(|text| {
        text.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?;
            (id.parse() == Ok(uid)).then(|| name.to_owned())
        })
    });
    if from_file.is_some() || root.is_some() {
        return from_file;
    }
    let out = Command::new("id")
        .args(["-nu", &uid.to_string()])
        .output()
        .ok()?;
    let name = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !name.is_empty()).then_some(name)
}

/// Write the service file (and, without a root, enable and start it). Refuses,
/// with nothing written, when the config dir holds no identity or the binary
/// cannot be the one to run.
pub fn install(opts: &InstallOptions) -> Result<Installed, AgentError> {
    let (init, spec) = prepare(opts)?;
    let root = opts.root.as_deref();
    let dir = on_target(root, &spec.config_dir);
    if ConfigDir::new(&dir).load()?.is_none() {
        return Err(AgentError::NotEnrolled(dir));
    }
    if root.is_none() {
        // The init system's tools are only called on the OS they belong to.
        if init.os() != std::env::consts::OS {
            return Err(ServiceError::WrongOs {
                init: init.name(),
                os: std::env::consts::OS,
            }
            .into());
        }
        if !spec.binary.is_file() {
            return Err(ServiceError::NoBinary(spec.binary).into());
        }
    }
    let text = render(init, &spec, !opts.no_start)?;
    let path = on_target(root, Path::new("/").join(init.file()).as_path());
    write(&path, &text, mode(init))?;
    let started = match root {
        Some(root) => {
            enable_offline(init, root)?;
            false
        }
        None => {
            activate(init, &path, !opts.no_start)?;
            !opts.no_start
        }
    };
    Ok(Installed {
        init,
        path,
        started,
    })
}

/// Scripts run by the init system are executable; the rest are plain files.
fn mode(init: Init) -> u32 {
    match init {
        Init::FreeBsd | Init::NetBsd | Init::OpenBsd => 0o755,
        _ => muster_files::PUBLIC,
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), ServiceError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    muster_files::write_atomic_path(path, text.as_bytes(), mode).map_err(|e| io("write", path, e))
}

/// Under a root: what enabling means on disk, without the init system running.
fn enable_offline(init: Init, root: &Path) -> Result<(), ServiceError> {
    match init {
        Init::Systemd => systemd::enable_offline(root),
        Init::FreeBsd | Init::NetBsd => rcd::enable_offline(init, root),
        Init::OpenBsd => openbsd::enable_offline(root),
        // launchd loads every plist in /Library/LaunchDaemons at boot, and SMF
        // imports site manifests at boot; Windows has no offline form.
        Init::Launchd | Init::Smf | Init::Windows => Ok(()),
    }
}

/// Without a root: tell the running init system.
fn activate(init: Init, path: &Path, start: bool) -> Result<(), ServiceError> {
    let p = path.display().to_string();
    match init {
        Init::Systemd => {
            run("systemctl", &["daemon-reload"])?;
            if start {
                run("systemctl", &["enable", "--now", systemd::UNIT])
            } else {
                run("systemctl", &["enable", systemd::UNIT])
            }
        }
        Init::Launchd => {
            let target = format!("system/{}", launchd::LABEL);
            run("launchctl", &["enable", &target])?;
            if start {
                // A plist already loaded must be unloaded before it can be reloaded.
                let _ = run("launchctl", &["bootout", &target]);
                run("launchctl", &["bootstrap", "system", &p])?;
            }
            Ok(())
        }
        Init::FreeBsd | Init::NetBsd => {
            rcd::enable_offline(init, Path::new("/"))?;
            if start {
                run(&p, &["restart"])?;
            }
            Ok(())
        }
        Init::OpenBsd => {
            run("rcctl", &["enable", openbsd::NAME])?;
            if start {
                run("rcctl", &["restart", openbsd::NAME])?;
            }
            Ok(())
        }
        Init::Smf => {
            run("svccfg", &["import", &p])?;
            if start {
                run("svcadm", &["enable", smf::FMRI])?;
            }
            Ok(())
        }
        Init::Windows => run(
            "powershell.exe",
            &["-NoProfile", "-ExecutionPolicy", "Bypass", "-File", &p],
        ),
    }
}

/// Stop and remove the service; the path of the file that is (or was) there.
pub fn uninstall(init: Option<Init>, root: Option<&Path>) -> Result<(Init, PathBuf), AgentError> {
    let init = match init {
        Some(init) => init,
        None => Init::detect(std::env::consts::OS, root)?,
    };
    let path = on_target(root, Path::new("/").join(init.file()).as_path());
    if root.is_none() {
        if init.os() != std::env::consts::OS {
            return Err(ServiceError::WrongOs {
                init: init.name(),
                os: std::env::consts::OS,
            }
            .into());
        }
        // Stopping fails when it never ran; removing the files is what matters.
        deactivate(init);
    }
    let mut files = vec![path.clone()];
    if let Some(extra) = match init {
        Init::Systemd => Some(systemd::WANTS_LINK),
        Init::FreeBsd | Init::NetBsd => Some(rcd::RC_CONF_D),
        _ => None,
    } {
        files.push(on_target(root, Path::new("/").join(extra).as_path()));
    }
    for p in files {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &p, e).into()),
        }
    }
    match (init, root) {
        (Init::Systemd, None) => {
            let _ = run("systemctl", &["daemon-reload"]);
        }
        (Init::OpenBsd, Some(root)) => openbsd::disable_offline(root)?,
        _ => {}
    }
    Ok((init, path))
}

fn deactivate(init: Init) {
    let _ = match init {
        Init::Systemd => run("systemctl", &["disable", "--now", systemd::UNIT]),
        Init::Launchd => run(
            "launchctl",
            &["bootout", &format!("system/{}", launchd::LABEL)],
        ),
        Init::FreeBsd => run("service", &[rcd::NAME, "onestop"]),
        Init::NetBsd => run(&format!("/{}", rcd::NETBSD_PATH), &["onestop"]),
        Init::OpenBsd => run("rcctl", &["stop", openbsd::NAME])
            .and_then(|()| run("rcctl", &["disable", openbsd::NAME])),
        Init::Smf => run("svcadm", &["disable", "-s", smf::FMRI])
            .and_then(|()| run("svccfg", &["delete", smf::FMRI])),
        Init::Windows => run("sc.exe", &["stop", windows::NAME])
            .and_then(|()| run("sc.exe", &["delete", windows::NAME])),
    };
}

fn run(program: &str, args: &[&str]) -> Result<(), ServiceError> {
    let command = format!("{program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|e| ServiceError::Command {
            command: command.clone(),
            reason: e.to_string(),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(ServiceError::Command {
            command,
            reason: status.to_string(),
        })
    }
}

/// A string as one POSIX sh word: bare when it holds only characters sh leaves
/// alone, else in single quotes (a `'` inside becomes `'\''`).
pub(crate) fn sh_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Text for a double-quoted XML attribute value (or element content).
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Text for XML element content: only `&` and `<` must be escaped (`>` too, for
/// the `]]>` sequence); quotes stay readable.
pub(crate) fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
