//! Published releases on the hub's disk: `<data-dir>/releases/<version>/<os>-<arch>/`
//! holding the binary (`muster`, `muster.exe` on Windows) and its `manifest.json`.
//!
//! Publishing writes the binary and manifest into a temporary directory beside the
//! final one and renames it into place, so a reader sees a release whole or not at
//! all. Directory names come only from checked manifests (known OS and architecture,
//! a semantic version), never from a request's raw text.

use std::path::{Path, PathBuf};

use crate::{Manifest, ReleaseError, matches_file, parse_version};

/// The name of the published binary for `os`.
pub fn binary_name(os: &str) -> &'static str {
    if os == "windows" {
        "muster.exe"
    } else {
        "muster"
    }
}

const MANIFEST: &str = "manifest.json";

/// One published release: its manifest and where its binary is.
#[derive(Debug, Clone)]
pub struct Published {
    pub manifest: Manifest,
    pub binary: PathBuf,
}

/// The `releases/` directory of a hub.
#[derive(Debug, Clone)]
pub struct ReleaseDir {
    root: PathBuf,
}

impl ReleaseDir {
    pub fn new(root: impl Into<PathBuf>) -> ReleaseDir {
        ReleaseDir { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    fn dir(&self, version: &str, os: &str, arch: &str) -> PathBuf {
        self.root.join(version).join(format!("{os}-{arch}"))
    }

    /// Store `file` as the release `manifest` describes. The file must match the
    /// manifest's size and SHA-256; the signature is the caller's business (a hub
    /// built with a release key checks it, see `PublicKey::verify`). Publishing the
    /// same version and platform again replaces it.
    pub fn publish(&self, manifest: &Manifest, file: &Path) -> Result<Published, ReleaseError> {
        manifest.check()?;
        matches_file(manifest, file)?;
        let version = parse_version(&manifest.version)?.to_string();
        let manifest = Manifest {
            version,
            ..manifest.clone()
        };
        let final_dir = self.dir(&manifest.version, &manifest.os, &manifest.arch);
        let parent = final_dir.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&parent)?;
        let staging = tempfile::Builder::new()
            .prefix(".publish-")
            .tempdir_in(&parent)?;
        let binary = staging.path().join(binary_name(&manifest.os));
        std::fs::copy(file, &binary)?;
        // The copy must still be what was checked (the source could change under us).
        matches_file(&manifest, &binary)?;
        let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
        std::fs::write(staging.path().join(MANIFEST), json)?;
        for f in [&binary, &staging.path().join(MANIFEST)] {
            std::fs::File::open(f)?.sync_all()?;
        }
        let staged = staging.keep();
        if final_dir.exists() {
            let old = parent.join(format!(
                ".replaced-{}-{}",
                std::process::id(),
                manifest.arch
            ));
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(&final_dir, &old)?;
            std::fs::rename(&staged, &final_dir)?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&staged, &final_dir)?;
        }
        std::fs::File::open(&parent)?.sync_all()?;
        Ok(Published {
            binary: final_dir.join(binary_name(&manifest.os)),
            manifest,
        })
    }

    /// The release of exactly this version for this platform, if published.
    pub fn find(
        &self,
        version: &str,
        os: &str,
        arch: &str,
    ) -> Result<Option<Published>, ReleaseError> {
        let version = parse_version(version)?.to_string();
        crate::check_platform(os, arch)?;
        self.load(&self.dir(&version, os, arch))
    }

    /// The highest version published for this platform.
    pub fn latest(&self, os: &str, arch: &str) -> Result<Option<Published>, ReleaseError> {
        crate::check_platform(os, arch)?;
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut best: Option<(semver::Version, Published)> = None;
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(version) = parse_version(&name) else {
                continue;
            };
            if best.as_ref().is_some_and(|(b, _)| *b >= version) {
                continue;
            }
            if let Some(p) = self.load(&entry.path().join(format!("{os}-{arch}")))? {
                best = Some((version, p));
            }
        }
        Ok(best.map(|(_, p)| p))
    }

    /// Every published release, newest first.
    pub fn list(&self) -> Result<Vec<Published>, ReleaseError> {
        let mut out = Vec::new();
        let versions = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for version in versions {
            let version = version?;
            if version
                .file_name()
                .to_str()
                .is_none_or(|n| parse_version(n).is_err())
            {
                continue;
            }
            for platform in std::fs::read_dir(version.path())? {
                if let Some(p) = self.load(&platform?.path())? {
                    out.push(p);
                }
            }
        }
        out.sort_by(|a, b| {
            let va = parse_version(&a.manifest.version).ok();
            let vb = parse_version(&b.manifest.version).ok();
            vb.cmp(&va).then_with(|| {
                (&a.manifest.os, &a.manifest.arch).cmp(&(&b.manifest.os, &b.manifest.arch))
            })
        });
        Ok(out)
    }

    fn load(&self, dir: &Path) -> Result<Option<Published>, ReleaseError> {
        let text = match std::fs::read(dir.join(MANIFEST)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|e| ReleaseError::Invalid {
                field: "manifest",
                reason: format!("{}: {e}", dir.join(MANIFEST).display()),
            })?;
        manifest.check()?;
        Ok(Some(Published {
            binary: dir.join(binary_name(&manifest.os)),
            manifest,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::SigningKey;

    #[test]
    fn publish_find_latest_and_list() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("bin");
        std::fs::write(&file, b"a binary").unwrap();
        let (key, _) = SigningKey::generate().unwrap();
        let dir = ReleaseDir::new(tmp.path().join("releases"));
        assert!(dir.latest("linux", "x86_64").unwrap().is_none());
        for v in ["0.9.0", "0.10.0", "0.2.0"] {
            let m = key.sign_file(&file, v, "linux", "x86_64").unwrap();
            dir.publish(&m, &file).unwrap();
        }
        let m = key.sign_file(&file, "0.11.0", "macos", "arm64").unwrap();
        dir.publish(&m, &file).unwrap();
        let latest = dir.latest("linux", "x86_64").unwrap().unwrap();
        assert_eq!(latest.manifest.version, "0.10.0");
        assert_eq!(std::fs::read(&latest.binary).unwrap(), b"a binary");
        assert!(dir.find("0.9.0", "linux", "x86_64").unwrap().is_some());
        assert!(dir.find("0.9.0", "linux", "arm64").unwrap().is_none());
        assert!(dir.find("../x", "linux", "x86_64").is_err());
        assert_eq!(dir.list().unwrap().len(), 4);
        // Replacing a published release, and a file that is not the manifest's.
        dir.publish(
            &key.sign_file(&file, "0.9.0", "linux", "x86_64").unwrap(),
            &file,
        )
        .unwrap();
        std::fs::write(&file, b"something else").unwrap();
        assert!(dir.publish(&m, &file).is_err());
        assert_eq!(dir.list().unwrap().len(), 4);
    }
}
