//! The agent's config dir (SPEC §8): `config.json`, `key.pem`, `cert.pem`, `ca.pem`, and
//! `pending-enrollment.json` while an enrollment is in flight (SPEC §5).
//!
//! Invariant: a reader never sees a half-written file, nor the key of one identity next to
//! the config of another. Single files are replaced by temp file + fsync + rename; the
//! four credential files are staged together in `.staging/` and only moved into place
//! once `.staging/COMPLETE` exists, so a crash is either rolled forward or discarded by
//! the next [`ConfigDir::load`]. Secrets are created with their final mode (0600) and
//! the dir is kept at 0700.
//!
//! Processes coordinate through the advisory lock of [`lock`]: writes, and the cleanup
//! of what an interrupted write left, happen only under the exclusive lock; `load`
//! reads under the shared one.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod lock;
mod staging;
use lock::{DirLock, LOCK_FILE, Mode};

const CONFIG_FILE: &str = "config.json";
const KEY_FILE: &str = "key.pem";
const CERT_FILE: &str = "cert.pem";
const CA_FILE: &str = "ca.pem";
const PENDING_FILE: &str = "pending-enrollment.json";
const PENDING_RENEWAL_FILE: &str = "pending-renewal.json";
/// A self-update's trial in progress (see `update.rs`).
const UPDATE_TRIAL_FILE: &str = "update-trial.json";
const STAGING_DIR: &str = ".staging";
const COMPLETE_MARKER: &str = "COMPLETE";
/// Temp files are `.<name>.tmp-<random>`; the marker lets `remove_all` recognise them.
use muster_files::TEMP_INFIX;

const DIR_MODE: u32 = 0o700;
const SECRET_MODE: u32 = 0o600;
const PUBLIC_MODE: u32 = 0o644;

/// How long a reader waits for a writer to finish before reading without the lock.
/// Writers hold it for milliseconds; one holding it longer is stuck (or stopped), and
/// every file is replaced atomically, so reading then is safe, only cleanup is not.
const READ_WAIT: Duration = if cfg!(test) {
    Duration::from_millis(300)
} else {
    Duration::from_secs(3)
};
/// How long a writer waits for readers and other writers before giving up.
const WRITE_WAIT: Duration = if cfg!(test) {
    Duration::from_millis(300)
} else {
    Duration::from_secs(30)
};

/// The credential set, in the order `store` commits it. `config.json` goes last so that a
/// reader racing an (uninterrupted) commit sees the old config until the PEMs are in place.
const CREDENTIAL_FILES: [(&str, u32); 4] = [
    (KEY_FILE, SECRET_MODE),
    (CERT_FILE, PUBLIC_MODE),
    (CA_FILE, PUBLIC_MODE),
    (CONFIG_FILE, SECRET_MODE),
];

/// Errors of the config dir. Every message is one line naming the path involved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No `--config-dir`, no `MUSTER_CONFIG_DIR` and no `HOME`: the caller must ask the
    /// operator to pass `--config-dir`.
    #[error("cannot locate the config dir: pass --config-dir, or set MUSTER_CONFIG_DIR or HOME")]
    NoConfigDir,
    /// Something other than a directory sits where the config dir (or its staging dir)
    /// must be; nothing was changed.
    #[error("{} exists but is not a directory", path.display())]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },
    /// `config.json` exists but a credential file next to it does not: the dir is
    /// incomplete and the agent must enroll again.
    #[error("{} is missing: the config dir is incomplete, enroll again", path.display())]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// A JSON file exists but does not parse (bad JSON, missing or unknown field).
    #[error("{} is not valid: {source}", path.display())]
    Invalid {
        /// The file that failed to parse.
        path: PathBuf,
        /// What serde rejected.
        source: serde_json::Error,
    },
    /// A value could not be serialized; nothing was written to `path`.
    #[error("cannot encode {}: {source}", path.display())]
    Encode {
        /// The file that was about to be written.
        path: PathBuf,
        /// What serde rejected.
        source: serde_json::Error,
    },
    /// Another muster process held the config dir's lock for longer than a write
    /// waits; nothing was changed, and trying again later is safe.
    #[error("{} is busy: another muster process holds {}; try again", path.display(), path.join(LOCK_FILE).display())]
    Busy {
        /// The config dir.
        path: PathBuf,
    },
    /// An I/O operation failed; for writes, the previous content is intact unless the
    /// failure happened while committing a complete staged set, which the next `load`
    /// finishes.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "read", "create", "rename into place".
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ConfigError {
    move |source| ConfigError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Contents of `config.json` (SPEC §8).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The hub to try first: the one the last session was opened with (the first
    /// URL given, until then). The only hub field of configs written before agents
    /// took several, so those load unchanged.
    pub hub_url: String,
    /// Every hub URL the agent was given, in the operator's order, when it was given
    /// more than one (SPEC §12); empty otherwise, and then not written, so a
    /// single-hub config stays readable by older agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hub_urls: Vec<String>,
    pub agent_id: String,
    pub agent_name: String,
    /// The agent's bearer secret (`mag_…`); never printed by `Debug`.
    pub agent_key: String,
    /// Pin of the hub CA, checked on every connection.
    pub ca_hash: String,
    pub heartbeat_interval_s: u64,
    /// RFC 3339 time of the enrollment that produced this identity.
    pub enrolled_at: String,
    /// Credential generation, advanced by every renewal; a copy of this dir on
    /// another machine falls behind and is detected as a clone.
    #[serde(default)]
    pub generation: i64,
    /// The packs this agent announces, as chosen at `muster install`; `None` (every
    /// config written before the choice existed, or no choice made) announces every
    /// built-in pack. Not written when `None`, so such a config stays readable by
    /// older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packs: Option<Vec<String>>,
}

impl Credentials {
    /// A client calling `url` as this agent (client certificate when `with_cert`,
    /// agent key always); `dir` names the config file in hints about the hub URL.
    pub fn client(
        &self,
        dir: Option<&ConfigDir>,
        url: &str,
        timeout: std::time::Duration,
        with_cert: bool,
    ) -> Result<muster_client::HubClient, muster_client::ClientError> {
        Ok(muster_client::HubClient::with_options(
            url,
            muster_client::Trust::CaPem(self.ca_pem.clone()),
            muster_client::ClientOptions {
                identity: with_cert.then(|| muster_client::ClientIdentity {
                    cert_pem: self.cert_pem.clone(),
                    key_pem: self.key_pem.clone(),
                }),
                timeout: Some(timeout),
                address_hint: dir.map(ConfigDir::hub_url_hint),
                ..Default::default()
            },
        )?
        .with_bearer(self.config.agent_key.clone()))
    }
}

impl AgentConfig {
    /// Every hub this agent may use, the preferred one first, then the others in
    /// the operator's order, each once.
    pub fn hubs(&self) -> Vec<String> {
        crate::hubs::order(&self.hub_url, &self.hub_urls, None)
    }
}

impl fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentConfig")
            .field("hub_url", &self.hub_url)
            .field("hub_urls", &self.hub_urls)
            .field("agent_id", &self.agent_id)
            .field("agent_name", &self.agent_name)
            .field("agent_key", &"<redacted>")
            .field("ca_hash", &self.ca_hash)
            .field("heartbeat_interval_s", &self.heartbeat_interval_s)
            .field("enrolled_at", &self.enrolled_at)
            .field("generation", &self.generation)
            .field("packs", &self.packs)
            .finish()
    }
}

/// One complete agent identity: always loaded and stored as a unit.
#[derive(Clone, PartialEq)]
pub struct Credentials {
    pub config: AgentConfig,
    /// The agent's private key (PKCS#8 PEM); never printed by `Debug`.
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("config", &self.config)
            .field("key_pem", &"<redacted>")
            .field("cert_pem", &self.cert_pem)
            .field("ca_pem", &self.ca_pem)
            .finish()
    }
}

/// An enrollment that was sent but not yet answered (SPEC §5). Kept so a retry reuses the
/// same `enrollment_id` (the hub then returns the same agent without consuming another
/// token use) and the same key, whose CSR the hub may already have signed.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PendingEnrollment {
    pub enrollment_id: String,
    /// The hub this enrollment was sent to; a retry against another hub starts afresh.
    pub hub_url: String,
    /// The key whose CSR was sent; never printed by `Debug`.
    pub key_pem: String,
    pub created_at: String,
    /// The agent whose own credentials (from this dir) the enrollment was sent with;
    /// `None` for one sent with a token, a key or no credential. A retry must use
    /// the same credential, so each kind resumes only its own pending enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// A certificate renewal in flight (its new private key: a secret).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PendingRenewal {
    /// The generation the renewal was asked for.
    pub generation: i64,
    pub key_pem: String,
}

impl fmt::Debug for PendingRenewal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingRenewal")
            .field("generation", &self.generation)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for PendingEnrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingEnrollment")
            .field("enrollment_id", &self.enrollment_id)
            .field("hub_url", &self.hub_url)
            .field("key_pem", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("agent_id", &self.agent_id)
            .finish()
    }
}

/// Handle on the config dir; touches the disk only when a method is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDir {
    path: PathBuf,
}

impl ConfigDir {
    /// `--config-dir`, else `MUSTER_CONFIG_DIR`, else `~/.muster` (from `HOME`); error if
    /// none is set. Empty values count as unset.
    pub fn resolve(flag: Option<&Path>) -> Result<Self, ConfigError> {
        resolve_with(
            flag,
            std::env::var_os("MUSTER_CONFIG_DIR"),
            std::env::var_os("HOME"),
        )
    }

    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `config.json`, the file an operator edits to point the agent at another hub.
    pub fn config_path(&self) -> PathBuf {
        self.path.join(CONFIG_FILE)
    }

    /// What an agent says to check when its hub refuses the connection.
    pub fn hub_url_hint(&self) -> String {
        format!("check hub_url in {}", self.config_path().display())
    }

    /// `Ok(None)` when there is no `config.json` (not enrolled); an error when it is
    /// present but unreadable or invalid, or when a PEM file next to it is missing.
    /// Finishes or discards an interrupted `store` first, when no other process is
    /// writing.
    pub fn load(&self) -> Result<Option<Credentials>, ConfigError> {
        match fs::symlink_metadata(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("inspect", &self.path)(e)),
            Ok(meta) if !meta.is_dir() => {
                return Err(ConfigError::NotADirectory {
                    path: self.path.clone(),
                });
            }
            Ok(_) => {}
        }
        // A `.staging/` may be another process's store in progress: it is finished or
        // discarded only under the exclusive lock, which proves no writer is active.
        let _lock = if fs::symlink_metadata(self.path.join(STAGING_DIR)).is_ok() {
            let held = self.lock_for_reading(Mode::Exclusive);
            if held.is_some() {
                self.recover_staging()?;
            }
            held
        } else {
            self.lock_for_reading(Mode::Shared)
        };

        let config_path = self.path.join(CONFIG_FILE);
        let Some(raw) = read_optional(&config_path)? else {
            return Ok(None);
        };
        let config: AgentConfig =
            serde_json::from_str(&raw).map_err(|source| ConfigError::Invalid {
                path: config_path.clone(),
                source,
            })?;
        Ok(Some(Credentials {
            config,
            key_pem: self.read_required(KEY_FILE)?,
            cert_pem: self.read_required(CERT_FILE)?,
            ca_pem: self.read_required(CA_FILE)?,
        }))
    }

    /// Atomically replace the whole credential set. On error before the commit point the
    /// previous files are untouched; an error during the commit leaves a complete staged
    /// set that the next `load` moves into place.
    pub fn store(&self, creds: &Credentials) -> Result<(), ConfigError> {
        self.ensure_dir()?;
        let _lock = self.lock_for_writing()?;
        let config_json = encode(&creds.config, &self.path.join(CONFIG_FILE))?;
        let staging = self.path.join(STAGING_DIR);
        // A leftover staging dir belongs to an older store; this one supersedes it.
        remove_dir_if_present(&staging)?;
        create_private_dir(&staging)?;
        if let Err(e) = self.stage(&staging, creds, &config_json) {
            // Best effort: a leftover incomplete staging dir is discarded by `load` anyway.
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        self.commit_staging(&staging)
    }

    /// Make `url` the hub tried first, in `config.json` only, when it is not already
    /// and the file still holds the identity `expected` (a renewal or re-enrollment
    /// that happened meanwhile is never overwritten with older values: only
    /// `hub_url` changes). True when the file was rewritten. The file is replaced
    /// atomically, so a failed write leaves the previous one, identity and all.
    pub fn set_preferred_hub(
        &self,
        expected: &AgentConfig,
        url: &str,
    ) -> Result<bool, ConfigError> {
        let _lock = self.lock_for_writing()?;
        if fs::symlink_metadata(self.path.join(STAGING_DIR)).is_ok() {
            // A store was interrupted: the next `load` finishes it; the preference
            // can wait for the next connection.
            return Ok(false);
        }
        let path = self.path.join(CONFIG_FILE);
        let Some(raw) = read_optional(&path)? else {
            return Ok(false);
        };
        let mut current: AgentConfig =
            serde_json::from_str(&raw).map_err(|source| ConfigError::Invalid {
                path: path.clone(),
                source,
            })?;
        if current.hub_url == url
            || current.agent_id != expected.agent_id
            || current.agent_key != expected.agent_key
            || !current.hubs().iter().any(|h| h == url)
        {
            return Ok(false);
        }
        current.hub_url = url.to_owned();
        let json = encode(&current, &path)?;
        write_atomic(&self.path, CONFIG_FILE, json.as_bytes(), SECRET_MODE)?;
        Ok(true)
    }

    /// The enrollment in flight, if any (SPEC §5 idempotency).
    pub fn load_pending(&self) -> Result<Option<PendingEnrollment>, ConfigError> {
        self.load_json(PENDING_FILE)
    }

    /// Record the enrollment in flight; kept until `clear_pending` after it completes.
    pub fn store_pending(&self, p: &PendingEnrollment) -> Result<(), ConfigError> {
        self.store_secret_json(PENDING_FILE, p)
    }

    /// Forget the enrollment in flight; no error when there is none.
    pub fn clear_pending(&self) -> Result<(), ConfigError> {
        self.remove_file(PENDING_FILE)
    }

    /// The renewal in flight: its new key is kept until the new certificate is stored,
    /// so a renewal whose answer was lost is retried with the same key.
    pub fn load_pending_renewal(&self) -> Result<Option<PendingRenewal>, ConfigError> {
        self.load_json(PENDING_RENEWAL_FILE)
    }

    pub fn store_pending_renewal(&self, p: &PendingRenewal) -> Result<(), ConfigError> {
        self.store_secret_json(PENDING_RENEWAL_FILE, p)
    }

    pub fn clear_pending_renewal(&self) -> Result<(), ConfigError> {
        self.remove_file(PENDING_RENEWAL_FILE)
    }

    /// The self-update trial in progress, if any (a crash mid-trial leaves it).
    pub fn load_update_trial<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Option<T>, ConfigError> {
        self.load_json(UPDATE_TRIAL_FILE)
    }

    pub fn store_update_trial<T: Serialize>(&self, trial: &T) -> Result<(), ConfigError> {
        self.store_secret_json(UPDATE_TRIAL_FILE, trial)
    }

    pub fn clear_update_trial(&self) -> Result<(), ConfigError> {
        self.remove_file(UPDATE_TRIAL_FILE)
    }

    fn load_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, ConfigError> {
        let path = self.path.join(name);
        let Some(raw) = read_optional(&path)? else {
            return Ok(None);
        };
        serde_json::from_str(&raw)
            .map(Some)
            .map_err(|source| ConfigError::Invalid { path, source })
    }

    fn store_secret_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), ConfigError> {
        self.ensure_dir()?;
        let _lock = self.lock_for_writing()?;
        let json = encode(value, &self.path.join(name))?;
        write_atomic(&self.path, name, json.as_bytes(), SECRET_MODE)
    }

    fn remove_file(&self, name: &str) -> Result<(), ConfigError> {
        let path = self.path.join(name);
        if fs::symlink_metadata(&path).is_err() {
            // Nothing to remove (or nothing we could remove): no need to wait for the lock.
            return Ok(());
        }
        let _lock = self.lock_for_writing()?;
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    /// Whether the agent could write its credentials here now (a renewal must be
    /// able to): creates and removes a probe file.
    pub fn check_writable(&self) -> Result<(), ConfigError> {
        let probe = self
            .path
            .join(format!(".probe{TEMP_INFIX}{}", std::process::id()));
        muster_files::write_new_synced(&probe, b"", SECRET_MODE)
            .map_err(io_err("write into", &self.path))?;
        match fs::remove_file(&probe) {
            // An unenroll running meanwhile removed it with the rest.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(io_err("remove", &probe)),
        }
    }

    /// Delete the config dir (for unenroll). Only files this module writes are removed; if
    /// anything else is in the dir (say `--config-dir` pointed at a shared directory), the
    /// dir itself is left in place with those files, and a warning is logged.
    pub fn remove_all(&self) -> Result<(), ConfigError> {
        let entries = match fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("list", &self.path)(e)),
        };
        let lock = self.lock_for_writing()?;
        for entry in entries {
            let entry = entry.map_err(io_err("list", &self.path))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if name == STAGING_DIR {
                remove_dir_if_present(&path)?;
            } else if is_owned_file(name) {
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        // Last, while still held: a process waiting on it then finds the file gone
        // and takes a new one (see `lock::lock`).
        match fs::remove_file(self.path.join(LOCK_FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove", &self.path.join(LOCK_FILE))(e));
            }
            _ => {}
        }
        drop(lock);
        match fs::remove_dir(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                tracing::warn!(
                    path = %self.path.display(),
                    "config dir holds files muster did not write; left them in place"
                );
                sync_dir(&self.path)
            }
            Err(e) => Err(io_err("remove", &self.path)(e)),
        }
    }

    /// The lock a reader holds while it reads, or none when another process held it
    /// for all of [`READ_WAIT`] or it cannot be opened (a read-only dir): the reader
    /// then reads the atomically replaced files as they are and cleans nothing up.
    fn lock_for_reading(&self, mode: Mode) -> Option<DirLock> {
        match lock::lock(&self.path, mode, READ_WAIT) {
            Ok(Some(held)) => Some(held),
            Ok(None) => {
                tracing::warn!(
                    path = %self.path.display(),
                    "another muster process is writing the config dir; reading it without waiting longer"
                );
                None
            }
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "cannot lock the config dir; reading without the lock");
                None
            }
        }
    }

    /// The exclusive lock every change to the dir holds; the dir must exist.
    fn lock_for_writing(&self) -> Result<DirLock, ConfigError> {
        lock::lock(&self.path, Mode::Exclusive, WRITE_WAIT)
            .map_err(io_err("lock", &self.path.join(LOCK_FILE)))?
            .ok_or_else(|| ConfigError::Busy {
                path: self.path.clone(),
            })
    }

    /// Create the dir (and parents) as 0700, or tighten an existing one to 0700.
    fn ensure_dir(&self) -> Result<(), ConfigError> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&self.path)
            .map_err(io_err("create", &self.path))?;
        let meta = fs::metadata(&self.path).map_err(io_err("inspect", &self.path))?;
        if !meta.is_dir() {
            return Err(ConfigError::NotADirectory {
                path: self.path.clone(),
            });
        }
        // Drop group and other bits only: an operator who made the dir read-only (0500)
        // meant it, and a store must then fail rather than quietly re-open it.
        let mode = meta.permissions().mode() & 0o7777;
        if mode & !DIR_MODE != 0 {
            fs::set_permissions(&self.path, fs::Permissions::from_mode(mode & DIR_MODE))
                .map_err(io_err("restrict permissions of", &self.path))?;
        }
        Ok(())
    }

    fn read_required(&self, name: &str) -> Result<String, ConfigError> {
        let path = self.path.join(name);
        read_optional(&path)?.ok_or(ConfigError::Missing { path })
    }
}

/// [`ConfigDir::resolve`] with the environment passed in, so tests need not mutate it.
fn resolve_with(
    flag: Option<&Path>,
    env_dir: Option<OsString>,
    home: Option<OsString>,
) -> Result<ConfigDir, ConfigError> {
    if let Some(flag) = flag.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(ConfigDir::new(flag));
    }
    if let Some(dir) = env_dir.filter(|v| !v.is_empty()) {
        return Ok(ConfigDir::new(dir));
    }
    match home.filter(|v| !v.is_empty()) {
        Some(home) => Ok(ConfigDir::new(PathBuf::from(home).join(".muster"))),
        None => Err(ConfigError::NoConfigDir),
    }
}

/// Files this module creates in the config dir, temp files included.
fn is_owned_file(name: &str) -> bool {
    matches!(
        name,
        CONFIG_FILE
            | KEY_FILE
            | CERT_FILE
            | CA_FILE
            | PENDING_FILE
            | PENDING_RENEWAL_FILE
            | UPDATE_TRIAL_FILE
    ) || (name.starts_with('.') && name.contains(TEMP_INFIX))
}

fn encode<T: Serialize>(value: &T, path: &Path) -> Result<String, ConfigError> {
    let mut json = serde_json::to_string_pretty(value).map_err(|source| ConfigError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    json.push('\n');
    Ok(json)
}

fn read_optional(path: &Path) -> Result<Option<String>, ConfigError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

fn create_private_dir(path: &Path) -> Result<(), ConfigError> {
    DirBuilder::new()
        .mode(DIR_MODE)
        .create(path)
        .map_err(io_err("create", path))?;
    // The umask can only narrow 0700, but be exact rather than rely on it.
    fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
        .map_err(io_err("restrict permissions of", path))
}

fn remove_dir_if_present(path: &Path) -> Result<(), ConfigError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("inspect", path)(e)),
        Ok(meta) if !meta.is_dir() => Err(ConfigError::NotADirectory {
            path: path.to_path_buf(),
        }),
        Ok(_) => fs::remove_dir_all(path).map_err(io_err("remove", path)),
    }
}

/// Create `path` (which must not exist) with `mode` from the start, write and fsync it.
fn write_synced(path: &Path, contents: &[u8], mode: u32) -> Result<(), ConfigError> {
    muster_files::write_new_synced(path, contents, mode).map_err(io_err("write", path))
}

/// Replace `dir/name` atomically: temp file in the same dir, fsync, rename, fsync dir.
fn write_atomic(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<(), ConfigError> {
    muster_files::write_atomic(dir, name, contents, mode).map_err(io_err("write", &dir.join(name)))
}

/// Make renames and removals in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), ConfigError> {
    muster_files::sync_dir(dir).map_err(io_err("sync", dir))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
