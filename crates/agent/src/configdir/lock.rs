//! The config dir's advisory lock, `<config-dir>/.lock`, taken by every muster process
//! that touches the dir (`muster agent`, `status`, `enroll`, `unenroll`).
//!
//! Invariant: whatever changes the dir (a store, a removal, finishing or discarding a
//! leftover staging set) holds the exclusive lock, so a reader's cleanup can never
//! delete another process's write in progress. Readers hold the shared lock while they
//! read, so they see no half-committed credential set. Locks are held around one
//! operation, never for a process's lifetime: a running `muster agent` leaves the dir
//! free for `muster status` between its reads and writes.
//!
//! The lock is `flock(2)` through `std::fs::File::lock*`: it ends when the file is
//! closed, including when the process dies, so a crash never leaves the dir locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

pub(super) const LOCK_FILE: &str = ".lock";

/// How often a waiting process tries the lock again.
const RETRY_EVERY: Duration = Duration::from_millis(20);

/// A held lock; dropping it (closing the file) releases it.
#[derive(Debug)]
pub(super) struct DirLock {
    _file: File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Many readers at once, no writer.
    Shared,
    /// One writer, no readers.
    Exclusive,
}

/// Take the lock on `dir` (which must exist), waiting at most `wait`. `Ok(None)` when
/// another process held it all that time.
pub(super) fn lock(dir: &Path, mode: Mode, wait: Duration) -> io::Result<Option<DirLock>> {
    let path = dir.join(LOCK_FILE);
    let deadline = Instant::now() + wait;
    loop {
        let file = open(&path)?;
        let attempt = match mode {
            Mode::Shared => file.try_lock_shared(),
            Mode::Exclusive => file.try_lock(),
        };
        match attempt {
            // An unenroll deletes the lock file while holding it: a lock on that
            // unlinked file no longer excludes anyone, so take the new one instead.
            Ok(()) if same_file(&file, &path)? => return Ok(Some(DirLock { _file: file })),
            Ok(()) => continue,
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(RETRY_EVERY);
    }
}

/// Open the lock file, creating it (0600) when missing. A reader without write access
/// to the dir can still lock an existing lock file opened read-only.
fn open(path: &Path) -> io::Result<File> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => Ok(f),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            File::open(path)
        }
        Err(e) => Err(e),
    }
}

fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(held.dev() == now.dev() && held.ino() == now.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shared_locks_coexist_and_exclude_a_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let a = lock(tmp.path(), Mode::Shared, Duration::ZERO).unwrap();
        let b = lock(tmp.path(), Mode::Shared, Duration::ZERO).unwrap();
        assert!(a.is_some() && b.is_some());
        assert!(
            lock(tmp.path(), Mode::Exclusive, Duration::from_millis(50))
                .unwrap()
                .is_none()
        );
        drop((a, b));
        let w = lock(tmp.path(), Mode::Exclusive, Duration::ZERO).unwrap();
        assert!(w.is_some());
        assert!(
            lock(tmp.path(), Mode::Shared, Duration::ZERO)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_lock_on_a_deleted_lock_file_is_not_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let old = File::open(tmp.path())
            .and_then(|_| open(&tmp.path().join(LOCK_FILE)))
            .unwrap();
        std::fs::remove_file(tmp.path().join(LOCK_FILE)).unwrap();
        assert!(!same_file(&old, &tmp.path().join(LOCK_FILE)).unwrap());
        let held = lock(tmp.path(), Mode::Exclusive, Duration::ZERO).unwrap();
        assert!(held.is_some());
        assert!(tmp.path().join(LOCK_FILE).exists());
    }
}
