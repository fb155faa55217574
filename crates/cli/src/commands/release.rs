//! `muster release`: signed agent releases (SPEC §10), on the operator's side.
//! `keygen` makes the Ed25519 key pair (the private half stays offline), `sign`
//! writes a binary's manifest, `verify` checks one, `publish` hands a signed
//! binary to a hub (over the API, or straight into its data dir), `list` shows
//! what a hub offers.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use muster_proto::ReleaseInfo;
use muster_release::{Manifest, PublicKey, ReleaseDir, SigningKey};

use crate::connection::{ConnectionArgs, client};
use crate::output::{Format, emit, out, table};

#[derive(Args)]
pub struct ReleaseArgs {
    #[command(subcommand)]
    action: ReleaseCommand,
}

#[derive(Subcommand)]
enum ReleaseCommand {
    /// Make a release signing key pair: DIR/release.key (private, 0600) and DIR/release.pub.
    Keygen {
        /// Directory to write the key pair into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Sign a binary: write its manifest (version, OS, architecture, size, SHA-256, signature).
    Sign {
        /// The private key (release.key).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The version this binary is, e.g. 1.4.0.
        #[arg(long)]
        version: String,
        /// The OS it runs on: linux, macos, windows, freebsd, netbsd, openbsd, illumos.
        #[arg(long)]
        os: String,
        /// Its architecture: x86_64, arm64, armv7, i686, riscv64.
        #[arg(long)]
        arch: String,
        /// Where to write the manifest (default: FILE.manifest.json).
        #[arg(long, value_name = "MANIFEST")]
        out: Option<PathBuf>,
        /// The binary to sign.
        file: PathBuf,
    },
    /// Check a binary against its manifest and signature.
    Verify {
        /// The binary.
        file: PathBuf,
        /// Its manifest (from `release sign`).
        #[arg(long, value_name = "MANIFEST")]
        manifest: PathBuf,
        /// The public key, as `release keygen` printed it (default: the key baked into this binary).
        #[arg(long, conflicts_with = "pubkey_file")]
        pubkey: Option<String>,
        /// A file holding the public key (release.pub).
        #[arg(long, value_name = "FILE")]
        pubkey_file: Option<PathBuf>,
    },
    /// Publish a signed binary: to a running hub (admin key), or into a hub's data dir.
    Publish {
        /// The binary.
        file: PathBuf,
        /// Its manifest (from `release sign`).
        #[arg(long, value_name = "MANIFEST")]
        manifest: PathBuf,
        /// Write straight into <DIR>/releases instead of sending it to a hub.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        conn: ConnectionArgs,
        #[command(flatten)]
        format: Format,
    },
    /// List published releases: a running hub's, or those in a data dir.
    List {
        /// Read <DIR>/releases instead of asking a hub.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        conn: ConnectionArgs,
        #[command(flatten)]
        format: Format,
    },
}

impl ReleaseArgs {
    /// The hub connection, for the subcommands that may talk to a hub.
    pub fn connection_mut(&mut self) -> Option<&mut ConnectionArgs> {
        match &mut self.action {
            ReleaseCommand::Publish { conn, .. } | ReleaseCommand::List { conn, .. } => Some(conn),
            _ => None,
        }
    }
}

pub async fn exec(args: ReleaseArgs) -> Result<()> {
    match args.action {
        ReleaseCommand::Keygen { out } => keygen(&out),
        ReleaseCommand::Sign {
            key,
            version,
            os,
            arch,
            out,
            file,
        } => {
            let pem = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read {}", key.display()))?;
            let key = SigningKey::from_pem(&pem).context("--key")?;
            let manifest = key
                .sign_file(&file, &version, &os, &arch)
                .with_context(|| format!("cannot sign {}", file.display()))?;
            let out = out.unwrap_or_else(|| {
                let mut name = file.clone().into_os_string();
                name.push(".manifest.json");
                PathBuf::from(name)
            });
            let json = serde_json::to_vec_pretty(&manifest)?;
            std::fs::write(&out, json)
                .with_context(|| format!("cannot write {}", out.display()))?;
            out!(
                "Signed {} as muster {} for {}/{}: {}",
                file.display(),
                manifest.version,
                manifest.os,
                manifest.arch,
                out.display()
            )
        }
        ReleaseCommand::Verify {
            file,
            manifest,
            pubkey,
            pubkey_file,
        } => {
            let m = read_manifest(&manifest)?;
            let key = match (pubkey, pubkey_file) {
                (Some(k), _) => PublicKey::parse(&k).context("--pubkey")?,
                (None, Some(f)) => PublicKey::parse(
                    &std::fs::read_to_string(&f)
                        .with_context(|| format!("cannot read {}", f.display()))?,
                )
                .with_context(|| format!("--pubkey-file {}", f.display()))?,
                (None, None) => muster_release::baked_key()?,
            };
            key.verify_file(&m, &file)
                .with_context(|| format!("{} does not verify", file.display()))?;
            out!(
                "OK: {} is muster {} for {}/{}, signed by {key}",
                file.display(),
                m.version,
                m.os,
                m.arch
            )
        }
        ReleaseCommand::Publish {
            file,
            manifest,
            data_dir,
            conn,
            format,
        } => {
            let m = read_manifest(&manifest)?;
            if m.signature.is_empty() {
                bail!(
                    "{} is not signed; sign it with `muster release sign`",
                    manifest.display()
                );
            }
            let info = match data_dir {
                Some(dir) => {
                    if let Ok(key) = muster_release::baked_key() {
                        key.verify(&m).context("the manifest")?;
                    }
                    let published = ReleaseDir::new(dir.join("releases"))
                        .publish(&m, &file)
                        .with_context(|| format!("cannot publish {}", file.display()))?;
                    published.manifest.info()
                }
                None => {
                    let client = client(&conn)?;
                    let bytes = std::fs::read(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    let json = serde_json::to_string(&m)?;
                    client
                        .publish_release(&m.version, &m.os, &m.arch, &json, bytes)
                        .await?
                }
            };
            emit(format, &info, |i| {
                format!(
                    "Published muster {} for {}/{} (sha256 {})",
                    i.version, i.os, i.arch, i.sha256
                )
            })
        }
        ReleaseCommand::List {
            data_dir,
            conn,
            format,
        } => {
            let list = match data_dir {
                Some(dir) => ReleaseDir::new(dir.join("releases"))
                    .list()?
                    .iter()
                    .map(|p| p.manifest.info())
                    .collect(),
                None => client(&conn)?.list_releases().await?,
            };
            emit(format, &list, |l| releases_table(l))
        }
    }
}

fn keygen(dir: &Path) -> Result<()> {
    let private = dir.join("release.key");
    let public = dir.join("release.pub");
    for f in [&private, &public] {
        if f.exists() {
            bail!(
                "{} already exists; move it away first (a lost signing key cannot be recovered, an overwritten one neither)",
                f.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (key, pem) = SigningKey::generate()?;
    let pubkey = key.public_key().to_string();
    muster_files::write_new_synced(&private, pem.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", private.display()))?;
    muster_files::write_new_synced(&public, format!("{pubkey}\n").as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", public.display()))?;
    out!(
        "Private key: {} (keep it offline; it never goes to the hub)",
        private.display()
    )?;
    out!("Public key:  {pubkey}")?;
    out!()?;
    out!("Build binaries that trust it with:")?;
    out!("  MUSTER_RELEASE_PUBKEY={pubkey} cargo build --release")
}

fn read_manifest(path: &Path) -> Result<Manifest> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let m: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a release manifest", path.display()))?;
    m.check()
        .with_context(|| format!("{} is not a valid release manifest", path.display()))?;
    Ok(m)
}

fn releases_table(list: &[ReleaseInfo]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.version.clone(),
                format!("{}/{}", r.os, r.arch),
                r.size.to_string(),
                r.sha256.clone(),
                if r.signed { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    table(&["VERSION", "PLATFORM", "SIZE", "SHA256", "SIGNED"], &rows)
}
