//! Agent binaries the hub hands out (SPEC §10), and the limits on handing them out.
//!
//! What it keeps: the published manifests it read (briefly, so a download never
//! re-reads or re-hashes anything), the hub's own executable (opened once at start,
//! hashed once on first use, always served from that same open file, so a binary
//! replaced on disk is never served under the old hash), and the limits an
//! unauthenticated downloader meets: so many downloads per minute per source and so
//! many in flight at once. Knows nothing of `AppState`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use muster_release::{Manifest, Published, ReleaseDir, ReleaseError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes read from disk per chunk of a download.
const CHUNK: usize = 128 * 1024;
/// How long a manifest read from disk is believed: a release published straight
/// into the data dir (`muster release publish --data-dir`) shows within this.
const MANIFEST_TTL: Duration = Duration::from_secs(5);
/// Manifests kept at most (a request names any version it likes).
const MANIFEST_CAP: usize = 256;
/// Sources whose downloads are counted at most; past it, expired counts are
/// dropped and, if none are, unknown sources wait for the window.
const SOURCE_CAP: usize = 100_000;
/// The window downloads are counted over.
const WINDOW: Duration = Duration::from_secs(60);

/// Downloads one source may start per minute, by default: a machine installs once,
/// and a re-run with an unchanged binary downloads nothing.
pub const DOWNLOADS_PER_SOURCE: u32 = 10;
/// Downloads in flight at once, by default, from all sources.
pub const DOWNLOADS_IN_FLIGHT: usize = 128;
/// Longest a download may hold its slot: 100 MB at about 1 Mbit/s.
pub const MAX_DOWNLOAD_TIME: Duration = Duration::from_secs(15 * 60);

/// A binary ready to stream: the open file and what it must be.
pub struct Servable {
    pub file: Arc<std::fs::File>,
    pub manifest: Manifest,
}

/// A lookup in the releases directory and when it was made (absence is cached too).
type Cached = (Instant, Option<Published>);

/// Why a download may not start now.
pub enum Refused {
    /// This source started its share this minute; retry after this many seconds.
    SourceLimit(u64),
    /// Too many downloads in flight.
    Busy,
}

/// The hub's own executable, offered when nothing is published for its platform.
struct OwnBinary {
    file: Arc<std::fs::File>,
    /// The file's identity when it was opened: a change means it was written in
    /// place, and the hash no longer describes it.
    stamp: (u64, Option<SystemTime>),
    hashed: tokio::sync::OnceCell<Option<Manifest>>,
}

/// Everything about serving agent binaries.
pub struct Downloads {
    releases: ReleaseDir,
    own: Option<OwnBinary>,
    /// By (version, OS, arch).
    manifests: Mutex<HashMap<(String, String, String), Cached>>,
    /// By (OS, arch).
    latest: Mutex<HashMap<(String, String), Cached>>,
    per_source: u32,
    counts: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    in_flight: Arc<Semaphore>,
    /// Downloads started (served with 200), for `/metrics` and the tests.
    pub started: AtomicU64,
    /// Downloads refused by the limits.
    pub refused: AtomicU64,
}

fn stamp(file: &std::fs::File) -> std::io::Result<(u64, Option<SystemTime>)> {
    let m = file.metadata()?;
    Ok((m.len(), m.modified().ok()))
}

impl Downloads {
    /// `own` is the executable to offer for the hub's own platform (the running
    /// one, unless a test names another); it is opened now and kept open.
    pub fn new(
        releases: ReleaseDir,
        own: Option<&Path>,
        per_source: u32,
        in_flight: usize,
    ) -> Downloads {
        let own = own.and_then(|path| match open_own(path) {
            Ok(own) => Some(own),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "cannot open the hub's own binary; the bootstrap script works only for published releases");
                None
            }
        });
        Downloads {
            releases,
            own,
            manifests: Mutex::default(),
            latest: Mutex::default(),
            per_source: per_source.max(1),
            counts: Mutex::default(),
            in_flight: Arc::new(Semaphore::new(in_flight.max(1))),
            started: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Forget cached manifests (after a publish).
    pub fn forget(&self) {
        lock(&self.manifests).clear();
        lock(&self.latest).clear();
    }

    /// The newest release for a platform: the highest published, else (for the
    /// hub's own platform) the hub's own binary, unsigned.
    pub async fn latest(&self, os: &str, arch: &str) -> Result<Option<Manifest>, ReleaseError> {
        muster_release::check_platform(os, arch)?;
        let key = (os.to_owned(), arch.to_owned());
        let cached = lock(&self.latest)
            .get(&key)
            .filter(|(at, _)| at.elapsed() < MANIFEST_TTL)
            .map(|(_, p)| p.clone());
        let published = match cached {
            Some(p) => p,
            None => {
                let dir = self.releases.clone();
                let (o, a) = key.clone();
                let p = blocking(move || dir.latest(&o, &a)).await?;
                lock(&self.latest).insert(key, (Instant::now(), p.clone()));
                p
            }
        };
        match published {
            Some(p) => Ok(Some(p.manifest)),
            None => self.own_manifest(os, arch).await,
        }
    }

    /// Exactly this release: published, or the hub's own binary when it is that
    /// version and platform.
    pub async fn find(
        &self,
        version: &str,
        os: &str,
        arch: &str,
    ) -> Result<Option<Servable>, ReleaseError> {
        let version = muster_release::parse_version(version)?.to_string();
        muster_release::check_platform(os, arch)?;
        let key = (version.clone(), os.to_owned(), arch.to_owned());
        let cached = lock(&self.manifests)
            .get(&key)
            .filter(|(at, _)| at.elapsed() < MANIFEST_TTL)
            .map(|(_, p)| p.clone());
        let published = match cached {
            Some(p) => p,
            None => {
                let dir = self.releases.clone();
                let (v, o, a) = key.clone();
                let p = blocking(move || dir.find(&v, &o, &a)).await?;
                let mut cache = lock(&self.manifests);
                if cache.len() >= MANIFEST_CAP {
                    cache.clear();
                }
                cache.insert(key, (Instant::now(), p.clone()));
                p
            }
        };
        if let Some(p) = published {
            let binary = p.binary.clone();
            let size = p.manifest.size;
            let file = blocking(move || {
                let file = std::fs::File::open(&binary)?;
                // A binary cut short or grown on disk is no longer the release.
                if file.metadata()?.len() != size {
                    return Err(std::io::Error::other(format!(
                        "{} is not the size its manifest says",
                        binary.display()
                    )));
                }
                Ok(file)
            })
            .await?;
            return Ok(Some(Servable {
                file: Arc::new(file),
                manifest: p.manifest,
            }));
        }
        match (&self.own, self.own_manifest(os, arch).await?) {
            (Some(own), Some(m)) if m.version == version => {
                // Written in place since it was hashed: the hash no longer holds.
                if stamp(&own.file)? != own.stamp {
                    return Err(ReleaseError::Io(std::io::Error::other(
                        "the hub's own binary was changed in place since the hub started; restart the hub",
                    )));
                }
                Ok(Some(Servable {
                    file: own.file.clone(),
                    manifest: m,
                }))
            }
            _ => Ok(None),
        }
    }

    /// The hub's own binary as a release of this version, for its own platform only.
    async fn own_manifest(&self, os: &str, arch: &str) -> Result<Option<Manifest>, ReleaseError> {
        let Some(own) = &self.own else {
            return Ok(None);
        };
        if os != muster_release::this_os() || arch != muster_release::this_arch() {
            return Ok(None);
        }
        let manifest = own
            .hashed
            .get_or_init(|| async {
                let file = own.file.clone();
                match blocking(move || hash_open_file(&file)).await {
                    Ok((sha256, size)) => Some(Manifest {
                        version: muster_release::running_version(),
                        os: os.to_owned(),
                        arch: arch.to_owned(),
                        sha256,
                        size,
                        signature: String::new(),
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot hash the hub's own binary");
                        None
                    }
                }
            })
            .await;
        Ok(manifest.clone())
    }

    /// Admit one download from `source` (an address as `rules::source_bucket`
    /// counts it): the permit is held while it streams.
    pub fn admit(&self, source: IpAddr) -> Result<OwnedSemaphorePermit, Refused> {
        let refused = |r| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Err(r)
        };
        {
            let now = Instant::now();
            let mut counts = lock(&self.counts);
            if counts.len() >= SOURCE_CAP {
                counts.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            }
            if counts.len() >= SOURCE_CAP && !counts.contains_key(&source) {
                return refused(Refused::SourceLimit(WINDOW.as_secs()));
            }
            let entry = counts.entry(source).or_insert((now, 0));
            if now.duration_since(entry.0) >= WINDOW {
                *entry = (now, 0);
            }
            if entry.1 >= self.per_source {
                let left = WINDOW.saturating_sub(now.duration_since(entry.0));
                return refused(Refused::SourceLimit(left.as_secs().max(1)));
            }
            entry.1 += 1;
        }
        match self.in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                self.started.fetch_add(1, Ordering::Relaxed);
                Ok(permit)
            }
            Err(_) => {
                // Not started: it does not count against the source.
                if let Some(entry) = lock(&self.counts).get_mut(&source) {
                    entry.1 = entry.1.saturating_sub(1);
                }
                refused(Refused::Busy)
            }
        }
    }
}

impl Downloads {
    /// Prometheus lines for `/metrics`.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP muster_agent_downloads_total Agent binary downloads by result.\n\
             # TYPE muster_agent_downloads_total counter\n\
             muster_agent_downloads_total{{result=\"started\"}} {}\n\
             muster_agent_downloads_total{{result=\"refused\"}} {}\n",
            self.started.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

fn open_own(path: &Path) -> std::io::Result<OwnBinary> {
    let file = std::fs::File::open(path)?;
    let stamp = stamp(&file)?;
    Ok(OwnBinary {
        file: Arc::new(file),
        stamp,
        hashed: tokio::sync::OnceCell::new(),
    })
}

/// SHA-256 and length of an open file, by positional reads (the file is shared).
fn hash_open_file(file: &std::fs::File) -> std::io::Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok((muster_release::hex(&hasher.finalize()), offset))
}

/// The body of a download: `size` bytes of `file` read in chunks off the async
/// threads, holding `permit` until the last byte is sent, the client goes away, or
/// `max_time` passes (a client that reads slowly or stops reading must not keep a
/// download slot forever: past it the slot is freed and the body ends broken).
/// A file shorter than `size` ends the body early too, which the client sees as a
/// broken transfer, never as a complete one.
pub fn stream(
    file: Arc<std::fs::File>,
    size: u64,
    permit: OwnedSemaphorePermit,
    max_time: Duration,
) -> Body {
    let slot = Arc::new(Mutex::new(Some(permit)));
    let (done, dropped) = tokio::sync::oneshot::channel::<()>();
    let expire = slot.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(max_time) => drop(lock(&expire).take()),
            _ = dropped => {}
        }
    });
    let broken = |why: &'static str| Err(std::io::Error::other(why));
    let state = (file, 0u64, slot, done);
    let chunks =
        futures_util::stream::unfold(state, move |(file, offset, slot, done)| async move {
            if offset >= size {
                return None;
            }
            if lock(&slot).is_none() {
                return Some((
                    broken("the download took too long"),
                    (file, size, slot, done),
                ));
            }
            let want = usize::try_from((size - offset).min(CHUNK as u64)).unwrap_or(CHUNK);
            let reader = file.clone();
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                let n = reader.read_at(&mut buf, offset)?;
                buf.truncate(n);
                Ok::<_, std::io::Error>(buf)
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
            match read {
                Ok(buf) if buf.is_empty() => Some((
                    broken("the binary is shorter than its manifest"),
                    (file, size, slot, done),
                )),
                Ok(buf) => {
                    let next = offset + buf.len() as u64;
                    Some((Ok(Bytes::from(buf)), (file, next, slot, done)))
                }
                Err(e) => Some((Err(e), (file, size, slot, done))),
            }
        });
    Body::from_stream(chunks)
}

/// Where an uploaded release is written while it arrives: inside the releases
/// directory, so publishing it is a rename on the same file system.
pub fn upload_dir(releases: &ReleaseDir) -> PathBuf {
    releases.path().join(".uploads")
}

async fn blocking<T: Send + 'static, E: From<std::io::Error> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| E::from(std::io::Error::other(e)))?
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn each_source_gets_its_share_and_the_total_is_capped() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Downloads::new(ReleaseDir::new(tmp.path()), None, 2, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let p1 = d.admit(a).ok().unwrap();
        let _p2 = d.admit(a).ok().unwrap();
        assert!(matches!(d.admit(a), Err(Refused::SourceLimit(s)) if s >= 1));
        let _p3 = d.admit(b).ok().unwrap();
        // Three in flight: the next is refused without using up c's share.
        assert!(matches!(d.admit(c), Err(Refused::Busy)));
        drop(p1);
        let _p4 = d.admit(c).ok().unwrap();
        let _p5 = d.admit(c).ok();
        assert_eq!(d.started.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_download_that_takes_too_long_gives_its_slot_back() {
        use futures_util::StreamExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("bin");
        std::fs::write(&path, vec![0u8; 3 * CHUNK]).unwrap();
        let d = Downloads::new(ReleaseDir::new(tmp.path()), None, 10, 1);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        let permit = d.admit(ip).ok().unwrap();
        let body = stream(file, 3 * CHUNK as u64, permit, Duration::from_millis(100));
        let mut chunks = body.into_data_stream();
        assert!(chunks.next().await.unwrap().is_ok());
        assert!(matches!(d.admit(ip), Err(Refused::Busy)));
        // The client stops reading; the slot comes back, and the body ends broken.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(d.admit(ip).is_ok());
        assert!(chunks.next().await.unwrap().is_err());
    }
}
