//! `muster login`: check a hub URL, API key and CA hash against the hub, and save
//! them as the profile later admin commands fall back to.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::Args;
use muster_client::{HubClient, Trust};

use crate::connection::{ConnectionArgs, Profile, parse_ca_hash, profile_path, read_ca_file};
use crate::output::out;

#[derive(Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// Where to save the profile (default: ~/.config/muster/profile.json).
    #[arg(long, env = "MUSTER_PROFILE")]
    profile: Option<PathBuf>,
}

pub async fn exec(args: LoginArgs) -> Result<()> {
    let conn = args.conn;
    let hub = conn.hub.context("login needs --hub URL")?;
    let key = conn.api_key.context("login needs --api-key")?;
    let ca_hash = match (&conn.ca_file, &conn.ca_hash) {
        (Some(file), _) => muster_ca::CaHash::of_pem(&read_ca_file(file).context("--ca-file")?)
            .context("--ca-file")?,
        (None, Some(h)) => parse_ca_hash("--ca-hash", h)?,
        (None, None) => anyhow::bail!("login needs --ca-hash or --ca-file to verify the hub"),
    };
    let client = HubClient::new(&hub, Trust::Hash(ca_hash))?.with_bearer(key.clone());
    let who = client.whoami().await?;
    let path = profile_path(args.profile.as_deref())
        .context("cannot find a home directory; use --profile")?;
    let dir = path.parent().unwrap_or(Path::new("."));
    muster_files::create_private_dir_all(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let profile = Profile {
        hub_url: hub.clone(),
        api_key: key,
        ca_hash: ca_hash.to_string(),
    };
    let body = serde_json::to_vec_pretty(&profile).context("encoding the profile")?;
    muster_files::write_atomic_path(&path, &body, muster_files::PRIVATE)
        .with_context(|| format!("cannot write {}", path.display()))?;
    out!(
        "Logged in to {hub} as {} ({}); profile saved to {}",
        who.name.as_deref().unwrap_or("?"),
        who.role.map_or("?", |r| r.as_str()),
        path.display()
    )
}
