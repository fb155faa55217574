//! Installing and removing the rendered service: the enrollment check, where the
//! file goes (under the root or not), what enabling means on disk under a root,
//! and the service manager's own tools otherwise — only on the OS they belong to.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{
    Init, ServiceError, ServiceSpec, User, io, launchd, openbsd, rcd, render, smf, systemd, windows,
};
use crate::AgentError;
use crate::configdir::ConfigDir;

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

/// Install and uninstall under a root for every init system, the enrollment check
/// and what is refused before anything is written.
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
                    hub_urls: Vec::new(),
                    agent_id: "a1".into(),
                    agent_name: "web-01".into(),
                    agent_key: "mag_x".into(),
                    ca_hash: "sha256:00".into(),
                    heartbeat_interval_s: 30,
                    enrolled_at: "2025-01-01T00:00:00Z".into(),
                    generation: 1,
                    packs: None,
                },
                key_pem: "k".into(),
                cert_pem: "c".into(),
                ca_pem: "ca".into(),
            })
            .unwrap();
    }

    fn opts(init: Init, root: &Path, config_dir: &str) -> InstallOptions {
        InstallOptions {
            init: Some(init),
            binary: PathBuf::from("/usr/local/bin/muster"),
            config_dir: PathBuf::from(config_dir),
            root: Some(root.to_path_buf()),
            no_start: false,
        }
    }

    /// Under a root the paths name the target: the identity is looked for under the
    /// root, and the file names the target's paths, not the root's.
    #[test]
    fn install_and_uninstall_under_a_root_for_every_init() {
        let target_dir = "/var/lib/muster agent";
        for init in Init::ALL {
            let root = tempfile::tempdir().unwrap();
            enrolled(&root.path().join("var/lib/muster agent"));
            let installed = install(&opts(init, root.path(), target_dir)).unwrap();
            assert_eq!(installed.path, root.path().join(init.file()));
            assert!(!installed.started);
            let text = std::fs::read_to_string(&installed.path).unwrap();
            assert!(!text.contains(&root.path().display().to_string()), "{text}");
            assert!(text.contains("muster agent"), "{}: {text}", init.name());
            // Installing twice is fine.
            install(&opts(init, root.path(), target_dir)).unwrap();
            let enabled = match init {
                Init::Systemd => Some((systemd::WANTS_LINK, None)),
                Init::FreeBsd => Some((rcd::RC_CONF_D, Some("muster_agent_enable=\"YES\"\n"))),
                Init::NetBsd => Some((rcd::RC_CONF_D, Some("muster_agent=YES\n"))),
                Init::OpenBsd => Some((
                    "etc/rc.conf.local",
                    Some("pkg_scripts=\"${pkg_scripts} muster_agent\"\n"),
                )),
                _ => None,
            };
            if let Some((file, content)) = enabled {
                let path = root.path().join(file);
                match content {
                    Some(want) => assert_eq!(std::fs::read_to_string(&path).unwrap(), want),
                    None => assert_eq!(
                        std::fs::read_link(&path).unwrap(),
                        PathBuf::from("../muster-agent.service")
                    ),
                }
            }
            let (_, removed) = uninstall(Some(init), Some(root.path())).unwrap();
            assert_eq!(removed, installed.path);
            assert!(!installed.path.exists());
            if let Some((file, _)) = enabled {
                let path = root.path().join(file);
                let gone = std::fs::symlink_metadata(&path).is_err()
                    || std::fs::read_to_string(&path).unwrap().is_empty();
                assert!(gone, "{}: {} still enables it", init.name(), path.display());
            }
            uninstall(Some(init), Some(root.path())).unwrap();
        }
    }

    #[test]
    fn the_systemd_unit_under_a_root_names_the_target_paths() {
        let root = tempfile::tempdir().unwrap();
        enrolled(&root.path().join("var/lib/muster agent"));
        let installed =
            install(&opts(Init::Systemd, root.path(), "/var/lib/muster agent")).unwrap();
        let text = std::fs::read_to_string(installed.path).unwrap();
        assert!(
            text.contains(
                "ExecStart=/usr/local/bin/muster agent --config-dir \"/var/lib/muster agent\"\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("ReadWritePaths=\"/var/lib/muster agent\" /usr/local/bin\n"),
            "{text}"
        );
        assert!(text.contains("RestartPreventExitStatus=3\n"), "{text}");
    }

    /// The bug this replaces: under a root, an identity on the running machine at the
    /// same path does not count; only the one under the root does.
    #[test]
    fn under_a_root_the_identity_on_this_machine_does_not_count() {
        let here = tempfile::tempdir().unwrap();
        enrolled(here.path());
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("img");
        let o = opts(Init::Systemd, &target, &here.path().display().to_string());
        let err = install(&o).unwrap_err();
        assert!(matches!(err, AgentError::NotEnrolled(_)), "{err}");
        assert!(!target.exists(), "nothing written");
    }

    #[test]
    fn a_config_dir_without_an_identity_is_refused_with_nothing_written() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("target");
        let err = install(&opts(Init::Systemd, &target, "/never-enrolled")).unwrap_err();
        assert!(matches!(err, AgentError::NotEnrolled(_)), "{err}");
        assert!(!target.exists());
    }

    #[test]
    fn under_a_root_relative_paths_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let err = install(&opts(Init::Systemd, root.path(), "relative/dir"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("absolute path on the target"), "{err}");
    }

    /// `--print` needs no identity and writes nothing.
    #[test]
    fn print_needs_no_enrollment() {
        let root = tempfile::tempdir().unwrap();
        for init in Init::ALL {
            let text = print(&opts(init, root.path(), "/var/lib/muster-agent")).unwrap();
            assert!(text.contains("/usr/local/bin/muster"), "{text}");
        }
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    /// Without a root, another OS's init system is never called.
    #[test]
    fn another_systems_init_is_not_called_without_a_root() {
        let dir = tempfile::tempdir().unwrap();
        enrolled(dir.path());
        let init = if std::env::consts::OS == "macos" {
            Init::Smf
        } else {
            Init::Launchd
        };
        let o = InstallOptions {
            root: None,
            ..opts(init, dir.path(), &dir.path().display().to_string())
        };
        let err = install(&o).unwrap_err().to_string();
        assert!(
            err.contains("is not this machine's service manager"),
            "{err}"
        );
    }
}
