//! Signed Muster releases (SPEC §10).
//!
//! An operator makes an Ed25519 key pair once (`muster release keygen`), keeps the
//! private half offline and builds the binaries with `MUSTER_RELEASE_PUBKEY` set to
//! the public half, which this crate bakes into them. `muster release sign` writes a
//! [`Manifest`]: version, OS, architecture, size and SHA-256 of one binary, signed
//! over all of them together, so a genuine old binary cannot be offered as a new
//! version nor a Linux binary as a macOS one. Agents verify a manifest against the
//! baked key before they replace themselves; a build without a key refuses every
//! self-update (fail closed). The hub only stores and serves what was signed
//! elsewhere: it never holds the private key.

mod store;

pub use store::{Published, ReleaseDir, binary_name};

use std::cmp::Ordering;
use std::io::Read;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The release public key baked in at build time, if any.
const BAKED_KEY: Option<&str> = option_env!("MUSTER_RELEASE_PUBKEY");

/// Operating systems a release can be made for, as they appear in URLs and manifests.
pub const KNOWN_OS: &[&str] = &[
    "linux", "macos", "windows", "freebsd", "netbsd", "openbsd", "illumos",
];
/// Architectures, named the way `uname -m` mostly names them (`arm64`, not `aarch64`).
pub const KNOWN_ARCH: &[&str] = &["x86_64", "arm64", "armv7", "i686", "riscv64"];

/// Domain separation: a signature over a release manifest means nothing anywhere else.
const CONTEXT: &str = "muster-release-v1";

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// This binary carries no release key, so it can trust no update.
    #[error(
        "this muster was built without a release key (MUSTER_RELEASE_PUBKEY), so it refuses every self-update; install a signed build or update it by hand"
    )]
    NoKey,
    /// A public or private key that is not one.
    #[error("bad release key: {0}")]
    BadKey(String),
    /// The manifest's signature does not verify under the key.
    #[error("the release signature does not verify against this binary's release key")]
    BadSignature,
    /// The manifest has no signature at all.
    #[error("the release is not signed")]
    Unsigned,
    /// The file is not the one the manifest describes.
    #[error("{what} mismatch: the manifest says {expected}, the file has {actual}")]
    Mismatch {
        what: &'static str,
        expected: String,
        actual: String,
    },
    /// A manifest field that is malformed.
    #[error("invalid release {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What `release sign` writes and the hub serves: one binary for one platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: String,
    pub os: String,
    pub arch: String,
    /// Lowercase hex SHA-256 of the binary.
    pub sha256: String,
    pub size: u64,
    /// Base64 Ed25519 signature over [`signed_message`]; empty when unsigned (a hub
    /// serving its own binary for the bootstrap script, which checks only SHA-256).
    #[serde(default)]
    pub signature: String,
}

impl Manifest {
    /// Check every field's form (not the signature).
    pub fn check(&self) -> Result<(), ReleaseError> {
        parse_version(&self.version)?;
        check_platform(&self.os, &self.arch)?;
        check_sha256(&self.sha256)?;
        Ok(())
    }

    /// How the API lists it (`GET /api/v1/releases`, `muster release list`).
    pub fn info(&self) -> muster_proto::ReleaseInfo {
        muster_proto::ReleaseInfo {
            version: self.version.clone(),
            os: self.os.clone(),
            arch: self.arch.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
            signed: !self.signature.is_empty(),
        }
    }

    /// The bytes the signature covers.
    pub fn signed_message(&self) -> Vec<u8> {
        signed_message(&self.version, &self.os, &self.arch, &self.sha256, self.size)
    }
}

/// What a release signature covers: version, OS, architecture, SHA-256 and size,
/// one per line after a context string, so no field can be shifted into another.
pub fn signed_message(version: &str, os: &str, arch: &str, sha256: &str, size: u64) -> Vec<u8> {
    format!("{CONTEXT}\nversion={version}\nos={os}\narch={arch}\nsha256={sha256}\nsize={size}\n")
        .into_bytes()
}

/// A parsed semantic version; releases are ordered by it.
pub fn parse_version(v: &str) -> Result<semver::Version, ReleaseError> {
    let v = v.strip_prefix('v').unwrap_or(v);
    semver::Version::parse(v).map_err(|e| ReleaseError::Invalid {
        field: "version",
        reason: format!("{v:?} is not a version like 1.2.3 ({e})"),
    })
}

/// Order two version strings; either malformed is an error.
pub fn compare_versions(a: &str, b: &str) -> Result<Ordering, ReleaseError> {
    Ok(parse_version(a)?.cmp(&parse_version(b)?))
}

/// OS and architecture must be ones we name (they become path components on the hub).
pub fn check_platform(os: &str, arch: &str) -> Result<(), ReleaseError> {
    if !KNOWN_OS.contains(&os) {
        return Err(ReleaseError::Invalid {
            field: "os",
            reason: format!("{os:?} is not one of {}", KNOWN_OS.join(", ")),
        });
    }
    if !KNOWN_ARCH.contains(&arch) {
        return Err(ReleaseError::Invalid {
            field: "arch",
            reason: format!("{arch:?} is not one of {}", KNOWN_ARCH.join(", ")),
        });
    }
    Ok(())
}

fn check_sha256(hex: &str) -> Result<(), ReleaseError> {
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(ReleaseError::Invalid {
            field: "sha256",
            reason: "not 64 lowercase hex digits".to_owned(),
        })
    }
}

/// This build's OS, in [`KNOWN_OS`] terms.
pub fn this_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "macos",
        "solaris" | "illumos" => "illumos",
        other => other,
    }
}

/// This build's architecture, in [`KNOWN_ARCH`] terms.
pub fn this_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "arm" => "armv7",
        "x86" => "i686",
        other => other,
    }
}

/// The version this binary reports (in `hello`, enrollment and `--version`).
///
/// Debug builds only: `MUSTER_TEST_VERSION` overrides it, so the update tests can run
/// "a newer release" that is this same binary. Release builds ignore it.
pub fn running_version() -> String {
    if cfg!(debug_assertions)
        && let Ok(v) = std::env::var("MUSTER_TEST_VERSION")
        && parse_version(&v).is_ok()
    {
        return v;
    }
    env!("CARGO_PKG_VERSION").to_owned()
}

/// Lowercase hex SHA-256 and length of a file, read in 64 KiB blocks.
pub fn sha256_file(path: &Path) -> Result<(String, u64), std::io::Error> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The public half: what is baked into binaries and given to `release verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// From its text form: 32 bytes in standard base64 (44 characters).
    pub fn parse(text: &str) -> Result<PublicKey, ReleaseError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| ReleaseError::BadKey("not base64".to_owned()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ReleaseError::BadKey("an Ed25519 public key is 32 bytes".to_owned()))?;
        if key == [0u8; 32] {
            return Err(ReleaseError::BadKey(
                "the all-zero key is not a key".to_owned(),
            ));
        }
        Ok(PublicKey(key))
    }

    /// Verify a manifest's form and signature.
    pub fn verify(&self, manifest: &Manifest) -> Result<(), ReleaseError> {
        manifest.check()?;
        if manifest.signature.is_empty() {
            return Err(ReleaseError::Unsigned);
        }
        let sig = STANDARD
            .decode(&manifest.signature)
            .map_err(|_| ReleaseError::BadSignature)?;
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(&manifest.signed_message(), &sig)
            .map_err(|_| ReleaseError::BadSignature)
    }

    /// Verify a manifest and that `file` is the binary it describes.
    pub fn verify_file(&self, manifest: &Manifest, file: &Path) -> Result<(), ReleaseError> {
        self.verify(manifest)?;
        matches_file(manifest, file)
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

/// Whether `file` has the manifest's size and SHA-256 (no signature check).
pub fn matches_file(manifest: &Manifest, file: &Path) -> Result<(), ReleaseError> {
    let (sha256, size) = sha256_file(file)?;
    if size != manifest.size {
        return Err(ReleaseError::Mismatch {
            what: "size",
            expected: manifest.size.to_string(),
            actual: size.to_string(),
        });
    }
    if sha256 != manifest.sha256 {
        return Err(ReleaseError::Mismatch {
            what: "SHA-256",
            expected: manifest.sha256.clone(),
            actual: sha256,
        });
    }
    Ok(())
}

/// The key this binary trusts for self-updates: the one baked in at build time.
///
/// Debug builds only: `MUSTER_TEST_RELEASE_PUBKEY` stands in for a baked key (tests
/// cannot rebuild the binary per key); a release build has only what it was built
/// with, and without one refuses with [`ReleaseError::NoKey`].
pub fn baked_key() -> Result<PublicKey, ReleaseError> {
    if cfg!(debug_assertions)
        && let Ok(k) = std::env::var("MUSTER_TEST_RELEASE_PUBKEY")
    {
        return PublicKey::parse(&k);
    }
    match BAKED_KEY {
        Some(k) if !k.trim().is_empty() => PublicKey::parse(k),
        _ => Err(ReleaseError::NoKey),
    }
}

/// The private half, kept offline by whoever signs releases.
pub struct SigningKey(Ed25519KeyPair);

const PEM_LABEL: &str = "PRIVATE KEY";

impl SigningKey {
    /// A new key pair, with its private half as PKCS#8 PEM to store (mode 0600).
    pub fn generate() -> Result<(SigningKey, String), ReleaseError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| ReleaseError::BadKey("key generation failed".to_owned()))?;
        let pem = pem_encode(doc.as_ref());
        Ok((SigningKey::from_pkcs8(doc.as_ref())?, pem))
    }

    /// From a PKCS#8 PEM file's text (ours, or `openssl genpkey -algorithm ed25519`).
    pub fn from_pem(text: &str) -> Result<SigningKey, ReleaseError> {
        let body: String = text
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != format!("-----BEGIN {PEM_LABEL}-----"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        let der = STANDARD
            .decode(body)
            .map_err(|_| ReleaseError::BadKey("not a PEM private key".to_owned()))?;
        SigningKey::from_pkcs8(&der)
    }

    fn from_pkcs8(der: &[u8]) -> Result<SigningKey, ReleaseError> {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(SigningKey)
            .map_err(|_| ReleaseError::BadKey("not an Ed25519 PKCS#8 private key".to_owned()))
    }

    pub fn public_key(&self) -> PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.0.public_key().as_ref());
        PublicKey(key)
    }

    /// Sign `file` as `version` for `os`/`arch`.
    pub fn sign_file(
        &self,
        file: &Path,
        version: &str,
        os: &str,
        arch: &str,
    ) -> Result<Manifest, ReleaseError> {
        let (sha256, size) = sha256_file(file)?;
        let mut manifest = Manifest {
            version: version.to_owned(),
            os: os.to_owned(),
            arch: arch.to_owned(),
            sha256,
            size,
            signature: String::new(),
        };
        manifest.check()?;
        manifest.signature = STANDARD.encode(self.0.sign(&manifest.signed_message()).as_ref());
        Ok(manifest)
    }
}

fn pem_encode(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {PEM_LABEL}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {PEM_LABEL}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn binary(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join("muster");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_signed_release_verifies_and_every_field_is_covered() {
        let dir = tempfile::tempdir().unwrap();
        let file = binary(dir.path(), b"binary one");
        let (generated, pem) = SigningKey::generate().unwrap();
        let key = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(key.public_key(), generated.public_key());
        let public = PublicKey::parse(&key.public_key().to_string()).unwrap();
        let m = key.sign_file(&file, "1.2.0", "linux", "x86_64").unwrap();
        public.verify_file(&m, &file).unwrap();

        // Replaying a genuine signature under another version, platform, size or hash.
        let tampered = [
            Manifest {
                version: "1.3.0".into(),
                ..m.clone()
            },
            Manifest {
                os: "macos".into(),
                ..m.clone()
            },
            Manifest {
                arch: "arm64".into(),
                ..m.clone()
            },
            Manifest {
                size: m.size + 1,
                ..m.clone()
            },
            Manifest {
                sha256: "0".repeat(64),
                ..m.clone()
            },
        ];
        for t in &tampered {
            assert!(
                matches!(public.verify(t), Err(ReleaseError::BadSignature)),
                "{t:?}"
            );
        }
        // Another key, no signature, a different file.
        let (other, _) = SigningKey::generate().unwrap();
        assert!(matches!(
            other.public_key().verify(&m),
            Err(ReleaseError::BadSignature)
        ));
        let unsigned = Manifest {
            signature: String::new(),
            ..m.clone()
        };
        assert!(matches!(
            public.verify(&unsigned),
            Err(ReleaseError::Unsigned)
        ));
        let swapped = binary(dir.path(), b"binary two");
        assert!(matches!(
            public.verify_file(&m, &swapped),
            Err(ReleaseError::Mismatch { .. })
        ));
    }

    #[test]
    fn malformed_fields_and_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = binary(dir.path(), b"x");
        let (key, _) = SigningKey::generate().unwrap();
        assert!(key.sign_file(&file, "latest", "linux", "x86_64").is_err());
        assert!(key.sign_file(&file, "1.0.0", "../etc", "x86_64").is_err());
        assert!(key.sign_file(&file, "1.0.0", "linux", "aarch64").is_err());
        assert!(PublicKey::parse("AAAA").is_err());
        assert!(PublicKey::parse(&STANDARD.encode([0u8; 32])).is_err());
        assert!(
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
    }

    #[test]
    fn versions_order_semantically() {
        assert_eq!(
            compare_versions("0.10.0", "0.9.1").unwrap(),
            Ordering::Greater
        );
        assert_eq!(
            compare_versions("v1.0.0", "1.0.0").unwrap(),
            Ordering::Equal
        );
        assert_eq!(
            compare_versions("1.0.0-rc.1", "1.0.0").unwrap(),
            Ordering::Less
        );
        assert!(compare_versions("1.0", "1.0.0").is_err());
    }

    #[test]
    fn platform_names_are_ours() {
        check_platform(this_os(), this_arch()).unwrap();
    }
}
