//! Replacing the four credential files as one: each is written with its final
//! mode into `.staging/`, the `COMPLETE` marker last, then all are renamed into
//! place. A crash before the marker leaves the previous identity whole (the staged
//! set is discarded); a crash after it is rolled forward by the next load.

use std::fs;
use std::io;
use std::path::Path;

use super::{
    CA_FILE, CERT_FILE, COMPLETE_MARKER, CREDENTIAL_FILES, ConfigDir, ConfigError, Credentials,
    KEY_FILE, SECRET_MODE, STAGING_DIR, io_err, remove_dir_if_present, sync_dir, write_synced,
};

impl ConfigDir {
    pub(super) fn stage(
        &self,
        staging: &Path,
        creds: &Credentials,
        config_json: &str,
    ) -> Result<(), ConfigError> {
        for (name, mode) in CREDENTIAL_FILES {
            let contents = match name {
                KEY_FILE => creds.key_pem.as_bytes(),
                CERT_FILE => creds.cert_pem.as_bytes(),
                CA_FILE => creds.ca_pem.as_bytes(),
                _ => config_json.as_bytes(),
            };
            write_synced(&staging.join(name), contents, mode)?;
        }
        sync_dir(staging)?;
        // The marker is written last: its presence alone says the set above is whole.
        write_synced(&staging.join(COMPLETE_MARKER), b"", SECRET_MODE)?;
        sync_dir(staging)?;
        sync_dir(&self.path)
    }

    /// Move a complete staged set into place. Idempotent, so `load` can resume it after a
    /// crash part-way: files already moved are simply absent from the staging dir.
    pub(super) fn commit_staging(&self, staging: &Path) -> Result<(), ConfigError> {
        for (name, _) in CREDENTIAL_FILES {
            let from = staging.join(name);
            let to = self.path.join(name);
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("rename into place", &to)(e)),
            }
        }
        sync_dir(&self.path)?;
        remove_dir_if_present(staging)?;
        sync_dir(&self.path)
    }

    pub(super) fn recover_staging(&self) -> Result<(), ConfigError> {
        let staging = self.path.join(STAGING_DIR);
        match fs::symlink_metadata(staging.join(COMPLETE_MARKER)) {
            Ok(_) => {
                tracing::info!(path = %staging.display(), "finishing an interrupted credential update");
                self.commit_staging(&staging)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Never committed: the live files are still the previous identity.
                remove_dir_if_present(&staging)
            }
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                Err(ConfigError::NotADirectory { path: staging })
            }
            Err(e) => Err(io_err("inspect", &staging)(e)),
        }
    }
}
