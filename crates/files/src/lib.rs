//! Durable, mode-exact file writes shared by the hub (secret, hub.json, admin key)
//! and the agent (its config dir).
//!
//! Invariant: a reader sees either the old file or the complete new one, never a
//! partial write, and a secret file is never readable by others, not even for the
//! moment between creating and restricting it.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of files holding secrets.
pub const PRIVATE: u32 = 0o600;
/// Mode of files anyone may read (certificates).
pub const PUBLIC: u32 = 0o644;
/// Marker in the names of temporary files, so cleanups can recognise them.
pub const TEMP_INFIX: &str = ".tmp-";

/// Create `path` (which must not exist) with `mode` from the start, write and fsync it.
pub fn write_new_synced(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    // The umask may have narrowed a public mode; widen it before any byte is written.
    // For a secret this only confirms what `mode` already set.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Replace `dir/name` atomically: temp file in the same dir, fsync, rename, fsync dir.
pub fn write_atomic(dir: &Path, name: &str, contents: &[u8], mode: u32) -> io::Result<()> {
    let temp = dir.join(format!(
        ".{name}{TEMP_INFIX}{}",
        uuid::Uuid::new_v4().simple()
    ));
    let result =
        write_new_synced(&temp, contents, mode).and_then(|()| fs::rename(&temp, dir.join(name)));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(dir)
}

/// [`write_atomic`] for a full path.
pub fn write_atomic_path(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    write_atomic(dir, name, contents, mode)
}

/// Make renames and removals in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create `path` and its missing parents; `path` itself ends up exactly 0700.
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn atomic_write_sets_the_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "s", b"one", PRIVATE).unwrap();
        write_atomic(dir.path(), "s", b"two", PRIVATE).unwrap();
        let p = dir.path().join("s");
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn private_dir_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        create_private_dir_all(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
