//! A hub's first start and every start after it (SPEC §2, §3).
//!
//! Order matters, so that a failed or refused start changes nothing: the secret is
//! checked against the database before anything is written; a generated secret is
//! written to disk before the database is bound to it; the CA and the secret check
//! are inserted together or not at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use muster_ca::Authority;
use muster_files::{PRIVATE, PUBLIC, create_private_dir_all, write_atomic_path};
use muster_proto::API_KEY_PREFIX;
use muster_store::{ApiKeyRecord, AuditStore, IntegrationStore, MetaStore, SqlStore, Store};
use serde::Serialize;

use crate::audit::{self, AuditExt};
use crate::clock::now_ms;
use crate::secrets::{Keys, SECRET_CHECK_KEY, display_prefix, generate_hub_secret, random_body};
use crate::state::AppState;
use crate::{HubError, HubOptions, redact_url};

pub const INITIAL_ADMIN_KEY_FILE: &str = "initial-admin-key";
const SECRET_FILE: &str = "secret";
const CA_CERT_KEY: &str = "ca_cert_pem";
const CA_KEY_KEY: &str = "ca_key_encrypted";
const ADMIN_KEY_META: &str = "initial_admin_key_id";
/// Binds the CA key's ciphertext to its purpose, so it cannot be swapped for another
/// encrypted value.
const CA_KEY_AAD: &[u8] = b"muster ca private key";

pub struct Prepared {
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub ca: Authority,
    /// Held as long as the hub runs (SPEC §12).
    pub lock: DataDirLock,
}

/// The lock that makes a hub the only one on its data dir (SPEC §12): an exclusive
/// `flock` on `<data-dir>/hub.lock`, released by the kernel however the process
/// ends, so a crash never leaves a stale lock. The file stays empty (a refused
/// start must change nothing); the owner's pid, for the message a second hub
/// gets, is in its `hub.json`.
pub struct DataDirLock {
    _file: std::fs::File,
}

const LOCK_FILE: &str = "hub.lock";

/// Take the data dir's lock, or say which process holds it. Taken before anything
/// in the data dir is read or written, so a refused second hub changes nothing
/// (in particular, never rewrites `hub.json`).
pub fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock, HubError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io("open", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read(data_dir.join("hub.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["pid"].as_u64())
                .and_then(|p| u32::try_from(p).ok());
            Err(HubError::Locked {
                data_dir: data_dir.to_path_buf(),
                pid,
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io("lock", &path)(e)),
    }
}

/// This hub's id, kept in `<data-dir>/hub-id` (made on first start): the session
/// history rows it opens carry it, so that after a crash it closes only its own.
pub fn hub_id(data_dir: &Path) -> Result<String, HubError> {
    let path = data_dir.join("hub-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        Ok(_) | Err(_) => {
            let id = uuid::Uuid::new_v4().to_string();
            write_atomic_path(&path, format!("{id}\n").as_bytes(), PUBLIC)
                .map_err(io("write", &path))?;
            Ok(id)
        }
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> HubError {
    let path = path.to_path_buf();
    move |source| HubError::Io {
        action,
        path,
        source,
    }
}

pub async fn prepare(opts: &HubOptions) -> Result<Prepared, HubError> {
    let data_dir = &opts.data_dir;
    create_private_dir_all(data_dir).map_err(io("create data dir", data_dir))?;
    let lock = lock_data_dir(data_dir)?;

    let secret_path = data_dir.join(SECRET_FILE);
    let (secret, generated) = match &opts.secret {
        Some(s) => (s.clone(), false),
        None => match std::fs::read_to_string(&secret_path) {
            Ok(s) => (s.trim().to_owned(), false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (generate_hub_secret(), true),
            Err(e) => return Err(io("read", &secret_path)(e)),
        },
    };
    let mut keys = Keys::derive(secret.as_bytes()).map_err(|e| HubError::Secret(e.to_string()))?;

    let db_url = match &opts.db_url {
        Some(url) => url.clone(),
        None => {
            let path = data_dir.join("muster.db");
            precreate_private(&path)?;
            format!("sqlite://{}", path.display())
        }
    };
    tracing::info!(db = %redact_url(&db_url), "opening database");
    let store: Arc<dyn Store> =
        Arc::new(SqlStore::connect_with_pool(&db_url, keys.audit_key(), opts.db_pool).await?);

    let ca = match store.get_meta(SECRET_CHECK_KEY).await? {
        Some(check) => {
            if !keys.matches_check(&check) {
                if data_dir.join("secret.new").exists() {
                    return Err(HubError::Invalid(
                        "a secret rotation was interrupted after the database changed: move <data-dir>/secret.new over <data-dir>/secret and start again".to_owned(),
                    ));
                }
                return Err(HubError::WrongSecret);
            }
            load_ca(store.as_ref(), &keys).await?
        }
        None => {
            if generated {
                write_atomic_path(&secret_path, format!("{secret}\n").as_bytes(), PRIVATE)
                    .map_err(io("write", &secret_path))?;
                tracing::warn!(
                    path = %secret_path.display(),
                    "generated the hub secret; back this file up: without it the database cannot be opened"
                );
            }
            let ca = Authority::generate("Muster CA")?;
            let created = store
                .init_meta(&[
                    (SECRET_CHECK_KEY, keys.check_value()),
                    (CA_CERT_KEY, ca.cert_pem().to_owned()),
                    (
                        CA_KEY_KEY,
                        keys.encrypt(ca.key_pem().as_bytes(), CA_KEY_AAD),
                    ),
                ])
                .await?;
            if created {
                tracing::info!(ca_hash = %ca.hash(), "created the hub CA");
                ca
            } else {
                // Another hub on the same database won the race: use its CA.
                let check = store.get_meta(SECRET_CHECK_KEY).await?.unwrap_or_default();
                if !keys.matches_check(&check) {
                    return Err(HubError::WrongSecret);
                }
                load_ca(store.as_ref(), &keys).await?
            }
        }
    };

    let previous = store.get_meta(crate::secrets::PREVIOUS_HASH_KEYS).await?;
    keys.load_previous(previous.as_deref())
        .map_err(|_| HubError::WrongSecret)?;

    let ca_path = data_dir.join("ca.pem");
    write_atomic_path(&ca_path, ca.cert_pem().as_bytes(), PUBLIC).map_err(io("write", &ca_path))?;
    ensure_initial_admin_key(store.as_ref(), &keys, data_dir).await?;
    Ok(Prepared {
        store,
        keys,
        ca,
        lock,
    })
}

/// SQLite creates its file with the umask's mode; ours holds hashes and ciphertext,
/// so it is created 0600 first (the WAL files inherit its mode).
fn precreate_private(path: &Path) -> Result<(), HubError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io("create", path)(e)),
    }
}

async fn load_ca(store: &dyn Store, keys: &Keys) -> Result<Authority, HubError> {
    let missing = || HubError::Invalid("the database has a hub secret check but no CA".to_owned());
    let cert = store.get_meta(CA_CERT_KEY).await?.ok_or_else(missing)?;
    let key_ct = store.get_meta(CA_KEY_KEY).await?.ok_or_else(missing)?;
    let key = keys
        .decrypt(&key_ct, CA_KEY_AAD)
        .map_err(|_| HubError::WrongSecret)?;
    let key = String::from_utf8(key).map_err(|_| HubError::WrongSecret)?;
    Ok(Authority::from_pem(&cert, &key)?)
}

/// At first start, an admin API key written to `<data-dir>/initial-admin-key`, so
/// the operator (and the CLI on this machine) can act at once. Its value is never
/// logged; its path is.
async fn ensure_initial_admin_key(
    store: &dyn Store,
    keys: &Keys,
    data_dir: &Path,
) -> Result<(), HubError> {
    if store.get_meta(ADMIN_KEY_META).await?.is_some() {
        return Ok(());
    }
    let value = format!("{API_KEY_PREFIX}{}", random_body());
    let path = data_dir.join(INITIAL_ADMIN_KEY_FILE);
    // The file first: a key in the database that nobody can read is useless.
    write_atomic_path(&path, format!("{value}\n").as_bytes(), PRIVATE)
        .map_err(io("write", &path))?;
    let now = now_ms();
    let record = ApiKeyRecord {
        id: uuid::Uuid::new_v4().to_string(),
        hash: keys.hash_secret(&value),
        prefix: display_prefix(&value),
        name: "initial-admin".to_owned(),
        role: muster_proto::Role::Admin.as_str().to_owned(),
        agents_glob: None,
        probes: Vec::new(),
        expires_at: None,
        revoked_at: None,
        created_at: now,
        last_used_at: None,
    };
    let audit = audit::by_hub("key.created", format!("key:{}", record.id))
        .at(now)
        .details(serde_json::json!({"name": record.name, "role": record.role}));
    store.create_api_key(&record, Some(&audit)).await?;
    store
        .init_meta(&[(ADMIN_KEY_META, record.id.clone())])
        .await?;
    tracing::info!(path = %path.display(), "wrote the initial admin API key");
    Ok(())
}

/// Where a running hub tells local tools to find it (`<data-dir>/hub.json`).
#[derive(Debug, Clone, Serialize)]
pub struct HubFiles {
    pub url: String,
    pub ca_file: PathBuf,
    pub ca_hash: String,
    pub pid: u32,
    #[serde(skip)]
    pub admin_key_file: PathBuf,
}

pub fn write_hub_json(data_dir: &Path, url: &str, state: &AppState) -> Result<HubFiles, HubError> {
    let abs = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let files = HubFiles {
        url: url.to_owned(),
        ca_file: abs.join("ca.pem"),
        ca_hash: state.ca_hash.to_string(),
        pid: std::process::id(),
        admin_key_file: abs.join(INITIAL_ADMIN_KEY_FILE),
    };
    let path = data_dir.join("hub.json");
    let body = serde_json::to_vec_pretty(&files).unwrap_or_default();
    write_atomic_path(&path, &body, PRIVATE).map_err(io("write", &path))?;
    Ok(files)
}

/// `MUSTER_ADMIN_USER` / `MUSTER_ADMIN_PASSWORD`: an admin user, made once (a user
/// removed later is not brought back by the next start).
pub async fn ensure_admin_user(
    state: &AppState,
    name: &str,
    password: &str,
) -> Result<(), HubError> {
    const MARK: &str = "bootstrap_admin_user";
    if state.store.get_meta(MARK).await?.is_some() {
        return Ok(());
    }
    let req = muster_proto::CreateUserRequest {
        name: name.to_owned(),
        role: muster_proto::Role::Admin,
        password: Some(password.to_owned()),
    };
    crate::accounts::add_user(
        state,
        req,
        "hub".to_owned(),
        std::net::IpAddr::from([127, 0, 0, 1]),
    )
    .await
    .map_err(|f| HubError::Invalid(format!("MUSTER_ADMIN_USER: {}", f.message)))?;
    state.store.init_meta(&[(MARK, name.to_owned())]).await?;
    tracing::info!(user = %name, "created the admin user from MUSTER_ADMIN_USER");
    Ok(())
}

/// `muster hub rotate-secret`: re-encrypt and re-key everything under a new hub
/// secret, in one transaction, with the hub stopped. Values hashed under the old
/// secret (tokens, keys, sessions) keep working: the old hash key is carried along,
/// encrypted under the new secret, until those values are replaced. Returns the
/// number of audit entries re-signed.
pub async fn rotate_secret(
    opts: &HubOptions,
    new_secret: Option<String>,
) -> Result<(usize, Option<String>), HubError> {
    let data_dir = &opts.data_dir;
    // A running hub holds the lock: rotating under it would leave it with keys
    // that no longer open its own database.
    let _lock = lock_data_dir(data_dir)?;
    let secret_path = data_dir.join(SECRET_FILE);
    let from_file = opts.secret.is_none();
    let old_secret = match &opts.secret {
        Some(s) => s.clone(),
        None => std::fs::read_to_string(&secret_path)
            .map_err(io("read", &secret_path))?
            .trim()
            .to_owned(),
    };
    let new_secret = match new_secret {
        Some(s) => s,
        None if from_file => generate_hub_secret(),
        None => {
            return Err(HubError::Invalid(
                "the secret comes from MUSTER_SECRET: give the new one in MUSTER_NEW_SECRET"
                    .to_owned(),
            ));
        }
    };
    let mut old =
        Keys::derive(old_secret.as_bytes()).map_err(|e| HubError::Secret(e.to_string()))?;
    let new = Keys::derive(new_secret.as_bytes()).map_err(|e| HubError::Secret(e.to_string()))?;
    let db_url = opts
        .db_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("muster.db").display()));
    let store = SqlStore::connect(&db_url, old.audit_key()).await?;
    let check = store.get_meta(SECRET_CHECK_KEY).await?.unwrap_or_default();
    if !old.matches_check(&check) {
        return Err(HubError::WrongSecret);
    }
    let verdict = store.verify_audit().await?;
    if let Some((seq, why)) = verdict.broken {
        return Err(HubError::Invalid(format!(
            "the audit chain is broken at entry {seq} ({why}); re-signing it would hide that. Investigate first"
        )));
    }
    old.load_previous(
        store
            .get_meta(crate::secrets::PREVIOUS_HASH_KEYS)
            .await?
            .as_deref(),
    )
    .map_err(|_| HubError::WrongSecret)?;
    let ca_ct = store
        .get_meta(CA_KEY_KEY)
        .await?
        .ok_or_else(|| HubError::Invalid("the database holds no CA".to_owned()))?;
    let ca_key = old
        .decrypt(&ca_ct, CA_KEY_AAD)
        .map_err(|_| HubError::WrongSecret)?;
    // The new secret is on disk before the database depends on it.
    let staged = data_dir.join("secret.new");
    if from_file {
        write_atomic_path(&staged, format!("{new_secret}\n").as_bytes(), PRIVATE)
            .map_err(io("write", &staged))?;
    }
    // The SSO client secret set through the hub (SPEC §14) is re-encrypted too.
    let sso_secret = match store.get_meta(muster_store::SSO_CLIENT_SECRET_KEY).await? {
        Some(ct) => Some(
            old.decrypt(&ct, crate::oidc::settings::SECRET_AAD)
                .map_err(|_| HubError::WrongSecret)?,
        ),
        None => None,
    };
    // So are the integrations' secrets (SPEC §15), each bound to its name.
    let mut integration_secrets = Vec::new();
    for i in store.list_integrations().await? {
        if let Some(sealed) = &i.secret {
            let resealed = crate::integrations::reseal(&old, &new, &i.name, sealed)
                .map_err(|_| HubError::WrongSecret)?;
            integration_secrets.push((i.name, resealed));
        }
    }
    let audit = audit::by_hub("hub.secret_rotated", "hub");
    let mut meta = vec![
        (SECRET_CHECK_KEY, new.check_value()),
        (CA_KEY_KEY, new.encrypt(&ca_key, CA_KEY_AAD)),
        (crate::secrets::PREVIOUS_HASH_KEYS, new.seal_previous(&old)),
    ];
    if let Some(plain) = &sso_secret {
        meta.push((
            muster_store::SSO_CLIENT_SECRET_KEY,
            new.encrypt(plain, crate::oidc::settings::SECRET_AAD),
        ));
    }
    let signed = store
        .rotate_secret(&meta, &integration_secrets, new.audit_key(), &audit)
        .await?;
    if from_file {
        std::fs::rename(&staged, &secret_path).map_err(io("move into place", &secret_path))?;
        Ok((signed, None))
    } else {
        Ok((signed, Some(new_secret)))
    }
}
