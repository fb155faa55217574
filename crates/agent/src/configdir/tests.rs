//! The config dir's invariants: modes, atomic replacement, staging rolled forward or
//! discarded, the lock between readers and writers, and what a failed store keeps.

use super::*;

fn creds(n: u32) -> Credentials {
    Credentials {
        config: AgentConfig {
            hub_url: "https://hub.example:8443".into(),
            hub_urls: Vec::new(),
            agent_id: format!("agent-{n}"),
            agent_name: format!("name-{n}"),
            agent_key: format!("mag_secret{n}"),
            ca_hash: "sha256:abc".into(),
            heartbeat_interval_s: 30,
            enrolled_at: "2025-01-01T00:00:00Z".into(),
            generation: 1,
            packs: None,
        },
        key_pem: format!("-----BEGIN PRIVATE KEY-----\nkey{n}\n-----END PRIVATE KEY-----\n"),
        cert_pem: format!("-----BEGIN CERTIFICATE-----\ncert{n}\n-----END CERTIFICATE-----\n"),
        ca_pem: format!("-----BEGIN CERTIFICATE-----\nca{n}\n-----END CERTIFICATE-----\n"),
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Lay out a staging dir as an interrupted `store` of `c` would have left it.
fn fake_staging(dir: &Path, c: &Credentials, files: &[&str], complete: bool) {
    let staging = dir.join(STAGING_DIR);
    fs::create_dir(&staging).unwrap();
    for name in files {
        let body = match *name {
            KEY_FILE => c.key_pem.clone(),
            CERT_FILE => c.cert_pem.clone(),
            CA_FILE => c.ca_pem.clone(),
            _ => serde_json::to_string_pretty(&c.config).unwrap(),
        };
        fs::write(staging.join(name), body).unwrap();
    }
    if complete {
        fs::write(staging.join(COMPLETE_MARKER), "").unwrap();
    }
}

#[test]
fn round_trip_with_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ConfigDir::new(tmp.path().join("a/b/muster"));
    assert!(dir.load().unwrap().is_none());
    dir.store(&creds(1)).unwrap();
    assert_eq!(dir.load().unwrap(), Some(creds(1)));

    assert_eq!(mode(dir.path()), 0o700);
    assert_eq!(mode(&dir.path().join(CONFIG_FILE)), 0o600);
    assert_eq!(mode(&dir.path().join(KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.path().join(CERT_FILE)), 0o644);
    assert_eq!(mode(&dir.path().join(CA_FILE)), 0o644);
    assert!(!dir.path().join(STAGING_DIR).exists());
    let json = fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap();
    assert!(
        json.contains("\n  \"agent_id\": \"agent-1\""),
        "pretty JSON: {json}"
    );

    dir.store(&creds(2)).unwrap();
    assert_eq!(dir.load().unwrap(), Some(creds(2)));
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != LOCK_FILE)
        .collect();
    assert_eq!(names.len(), 4, "no temp or staging leftovers: {names:?}");
}

#[test]
fn loose_dir_mode_is_tightened() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("muster");
    fs::create_dir(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    ConfigDir::new(&path).store(&creds(1)).unwrap();
    assert_eq!(mode(&path), 0o700);
}

#[test]
fn debug_redacts_secrets() {
    let c = creds(7);
    let shown = format!("{c:?}");
    assert!(!shown.contains("mag_secret7"), "{shown}");
    assert!(!shown.contains("key7"), "{shown}");
    assert!(shown.contains("agent-7"));
    let p = PendingEnrollment {
        enrollment_id: "e1".into(),
        hub_url: "https://h".into(),
        key_pem: "SECRETKEY".into(),
        created_at: "now".into(),
        agent_id: None,
    };
    assert!(!format!("{p:?}").contains("SECRETKEY"));
}

#[test]
fn complete_staging_is_rolled_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ConfigDir::new(tmp.path());
    dir.store(&creds(1)).unwrap();
    // Crash after two of the four renames: key and cert already moved.
    fake_staging(tmp.path(), &creds(2), &[CA_FILE, CONFIG_FILE], true);
    fs::write(tmp.path().join(KEY_FILE), &creds(2).key_pem).unwrap();
    fs::write(tmp.path().join(CERT_FILE), &creds(2).cert_pem).unwrap();

    assert_eq!(dir.load().unwrap(), Some(creds(2)));
    assert!(!tmp.path().join(STAGING_DIR).exists());
}

/// A store in progress in another process (it holds the exclusive lock) is not a
/// leftover: reading must neither delete nor finish it.
#[test]
fn load_leaves_a_writers_staging_and_temp_files_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ConfigDir::new(tmp.path());
    dir.store(&creds(1)).unwrap();
    let writer = lock::lock(tmp.path(), Mode::Exclusive, Duration::ZERO)
        .unwrap()
        .unwrap();
    fake_staging(tmp.path(), &creds(2), &[KEY_FILE, CERT_FILE], false);
    let temp = tmp
        .path()
        .join(format!(".{PENDING_FILE}{TEMP_INFIX}writer"));
    fs::write(&temp, "half").unwrap();

    assert_eq!(dir.load().unwrap(), Some(creds(1)));
    assert!(tmp.path().join(STAGING_DIR).join(CERT_FILE).exists());
    assert!(temp.exists());

    // Once the writer is gone (crashed), what it left is stale and discarded.
    drop(writer);
    assert_eq!(dir.load().unwrap(), Some(creds(1)));
    assert!(!tmp.path().join(STAGING_DIR).exists());
}

#[test]
fn writers_wait_for_readers_and_give_up_on_a_stuck_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ConfigDir::new(tmp.path());
    dir.store(&creds(1)).unwrap();
    let reader = lock::lock(tmp.path(), Mode::Shared, Duration::ZERO)
        .unwrap()
        .unwrap();
    let err = dir.store(&creds(2)).unwrap_err();
    assert!(matches!(err, ConfigError::Busy { .. }), "{err}");
    assert!(err.to_string().contains(".lock"), "{err}");
    assert_eq!(
        dir.load().unwrap(),
        Some(creds(1)),
        "readers share the lock"
    );

    let released = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        drop(reader);
    });
    dir.store(&creds(2)).unwrap();
    released.join().unwrap();
    assert_eq!(dir.load().unwrap(), Some(creds(2)));
}

#[test]
fn incomplete_staging_is_discarded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ConfigDir::new(tmp.path());
    dir.store(&creds(1)).unwrap();
    fake_staging(
        tmp.path(),
        &creds(2),
        &[KEY_FILE, CERT_FILE, CA_FILE, CONFIG_FILE],
        false,
    );

    assert_eq!(dir.load().unwrap(), Some(creds(1)));
    assert!(!tmp.path().join(STAGING_DIR).exists());
}

fn running_as_root() -> bool {
    // Root ignores permission bits: probe rather than ask for the uid.
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o500)).unwrap();
    let writable = fs::write(tmp.path().join("probe"), "").is_ok();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).unwrap();
    writable
}

#[test]
fn failed_store_into_read_only_dir_keeps_previous() {
    if running_as_root() {
        eprintln!("skipped: permission bits do not bind root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("muster");
    let dir = ConfigDir::new(&path);
    dir.store(&creds(1)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o500)).unwrap();
    let err = dir.store(&creds(2)).unwrap_err();
    assert!(err.to_string().contains("muster"), "{err}");
    assert_eq!(mode(&path), 0o500, "a read-only dir is not re-opened");
    assert_eq!(dir.load().unwrap(), Some(creds(1)));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn failed_store_keeps_previous_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ConfigDir::new(tmp.path());
    dir.store(&creds(1)).unwrap();
    // A file where the staging dir must go: staging cannot start.
    fs::write(tmp.path().join(STAGING_DIR), "in the way").unwrap();
    let err = dir.store(&creds(2)).unwrap_err();
    assert!(err.to_string().contains(".staging"), "{err}");
    fs::remove_file(tmp.path().join(STAGING_DIR)).unwrap();
    assert_eq!(dir.load().unwrap(), Some(creds(1)));
}

#[test]
fn store_into_a_file_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    fs::write(&file, "x").unwrap();
    let err = ConfigDir::new(&file).store(&creds(1)).unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");
    let err = ConfigDir::new(file.join("below"))
        .store(&creds(1))
        .unwrap_err();
    assert!(err.to_string().contains("below"), "{err}");
}

#[test]
fn load_reports_the_bad_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ConfigDir::new(tmp.path());
    dir.store(&creds(1)).unwrap();
    fs::remove_file(tmp.path().join(CERT_FILE)).unwrap();
    let err = dir.load().unwrap_err();
    assert!(matches!(err, ConfigError::Missing { .. }));
    assert!(err.to_string().contains("cert.pem"), "{err}");

    dir.store(&creds(1)).unwrap();
    let json = fs::read_to_string(tmp.path().join(CONFIG_FILE)).unwrap();
    let extra = json.replacen('{', "{\n  \"surprise\": 1,", 1);
    fs::write(tmp.path().join(CONFIG_FILE), extra).unwrap();
    let err = dir.load().unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { .. }));
    assert!(err.to_string().contains("config.json"), "{err}");
    assert!(!err.to_string().contains('\n'), "one line: {err}");
}

#[test]
fn pending_lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ConfigDir::new(tmp.path().join("m"));
    assert_eq!(dir.load_pending().unwrap(), None);
    dir.clear_pending().unwrap();
    let p = PendingEnrollment {
        enrollment_id: "e1".into(),
        hub_url: "https://h".into(),
        key_pem: "KEY".into(),
        created_at: "2025-01-01T00:00:00Z".into(),
        agent_id: Some("agent-1".into()),
    };
    dir.store_pending(&p).unwrap();
    assert_eq!(mode(&dir.path().join(PENDING_FILE)), 0o600);
    assert_eq!(mode(dir.path()), 0o700);
    assert_eq!(dir.load_pending().unwrap(), Some(p));
    // A pending enrollment alone is not an identity.
    assert!(dir.load().unwrap().is_none());
    dir.clear_pending().unwrap();
    assert_eq!(dir.load_pending().unwrap(), None);
}

#[test]
fn remove_all_spares_foreign_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ConfigDir::new(tmp.path().join("m"));
    dir.store(&creds(1)).unwrap();
    dir.remove_all().unwrap();
    assert!(!dir.path().exists(), "the lock file goes too");
    dir.remove_all().unwrap();

    dir.store(&creds(1)).unwrap();
    fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    dir.remove_all().unwrap();
    assert!(dir.load().unwrap().is_none());
    assert!(dir.path().join("notes.txt").exists());
}

#[test]
fn resolve_precedence() {
    let flag = Path::new("/from/flag");
    let env = || Some(OsString::from("/from/env"));
    let home = || Some(OsString::from("/home/u"));
    let resolved = |f: Option<&Path>, e, h| resolve_with(f, e, h).map(|d| d.path().to_path_buf());
    assert_eq!(resolved(Some(flag), env(), home()).unwrap(), flag);
    assert_eq!(
        resolved(None, env(), home()).unwrap(),
        Path::new("/from/env")
    );
    assert_eq!(
        resolved(None, Some(OsString::new()), home()).unwrap(),
        Path::new("/home/u/.muster")
    );
    assert_eq!(
        resolved(None, None, home()).unwrap(),
        Path::new("/home/u/.muster")
    );
    assert!(matches!(
        resolve_with(None, None, None),
        Err(ConfigError::NoConfigDir)
    ));
}

#[test]
fn a_config_from_before_several_hubs_loads_and_a_single_hub_one_is_written_as_before() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ConfigDir::new(tmp.path().join("m"));
    dir.store(&creds(1)).unwrap();
    // What agents wrote before hub_urls existed: hub_url alone.
    let old = r#"{
  "hub_url": "https://hub.example:8443",
  "agent_id": "agent-1",
  "agent_name": "name-1",
  "agent_key": "mag_secret1",
  "ca_hash": "sha256:abc",
  "heartbeat_interval_s": 30,
  "enrolled_at": "2025-01-01T00:00:00Z",
  "generation": 1
}
"#;
    fs::write(dir.path().join(CONFIG_FILE), old).unwrap();
    let loaded = dir.load().unwrap().unwrap();
    assert_eq!(loaded, creds(1));
    assert_eq!(loaded.config.hubs(), vec!["https://hub.example:8443"]);
    // Stored again, it is the same file: an older agent can still read it.
    dir.store(&loaded).unwrap();
    let json = fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap();
    assert_eq!(json, old);
}

#[test]
fn the_preferred_hub_is_recorded_in_place_without_touching_the_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ConfigDir::new(tmp.path().join("m"));
    let mut c = creds(1);
    c.config.hub_urls = vec!["https://a:1".into(), "https://b:1".into()];
    c.config.hub_url = "https://a:1".into();
    dir.store(&c).unwrap();

    assert!(dir.set_preferred_hub(&c.config, "https://b:1").unwrap());
    let now = dir.load().unwrap().unwrap();
    assert_eq!(now.config.hub_url, "https://b:1");
    assert_eq!(now.config.hubs(), vec!["https://b:1", "https://a:1"]);
    assert_eq!(now.key_pem, c.key_pem);
    assert_eq!(now.config.agent_key, c.config.agent_key);
    assert_eq!(mode(&dir.path().join(CONFIG_FILE)), 0o600);
    // Unchanged: no write.
    assert!(!dir.set_preferred_hub(&c.config, "https://b:1").unwrap());
    // Not one of its hubs, or another identity in the file now: left alone.
    assert!(!dir.set_preferred_hub(&c.config, "https://evil:1").unwrap());
    let other = creds(2);
    assert!(!dir.set_preferred_hub(&other.config, "https://a:1").unwrap());
    assert_eq!(dir.load().unwrap().unwrap().config.hub_url, "https://b:1");
}

#[test]
fn a_failed_preference_write_keeps_the_previous_config() {
    if running_as_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = ConfigDir::new(tmp.path().join("m"));
    let mut c = creds(1);
    c.config.hub_urls = vec!["https://a:1".into(), "https://b:1".into()];
    c.config.hub_url = "https://a:1".into();
    dir.store(&c).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o500)).unwrap();
    assert!(dir.set_preferred_hub(&c.config, "https://b:1").is_err());
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(dir.load().unwrap().unwrap(), c);
}
