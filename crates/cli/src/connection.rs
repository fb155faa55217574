//! How admin commands find the hub (SPEC §11): flags or environment first, then
//! `muster login`'s saved profile, then the `hub.json` and `initial-admin-key` a hub
//! writes into `./muster-data` on its own machine. Each setting falls back
//! independently.
//!
//! Only admin commands take these flags. They are accepted after the command name
//! (`muster tokens list --hub URL`, via [`ConnectionArgs`]) and before it
//! (`muster --hub URL tokens list`, via [`LeadingConnection`], which `main` hands to
//! the admin command or refuses for any other).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use clap::Args;
use muster_ca::CaHash;
use muster_client::{HubClient, Trust};
use serde::{Deserialize, Serialize};

/// The hub connection of an admin command.
#[derive(Args, Clone, Debug, Default)]
pub struct ConnectionArgs {
    /// Hub URL, e.g. https://hub.example:8443.
    #[arg(long, global = true, env = "MUSTER_HUB_URL")]
    pub hub: Option<String>,
    /// Admin or member API key (mak_…).
    #[arg(long, global = true, env = "MUSTER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The hub CA's hash (sha256:…), as `muster hub ca-hash` prints it.
    #[arg(long, global = true, env = "MUSTER_CA_HASH")]
    pub ca_hash: Option<String>,
    /// The hub's CA certificate (PEM).
    #[arg(long, global = true, env = "MUSTER_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// The same flags written before the command name. Hidden from `muster --help`
/// (each admin command lists them) and without environment variables, so that a
/// value here is always one the operator typed.
#[derive(Args, Clone, Debug, Default)]
pub struct LeadingConnection {
    #[arg(long = "hub", id = "leading_hub", hide = true)]
    hub: Option<String>,
    #[arg(long = "api-key", id = "leading_api_key", hide = true)]
    api_key: Option<String>,
    #[arg(long = "ca-hash", id = "leading_ca_hash", hide = true)]
    ca_hash: Option<String>,
    #[arg(long = "ca-file", id = "leading_ca_file", hide = true)]
    ca_file: Option<PathBuf>,
}

impl LeadingConnection {
    /// Whether any flag was given.
    pub fn is_given(&self) -> bool {
        self.hub.is_some()
            || self.api_key.is_some()
            || self.ca_hash.is_some()
            || self.ca_file.is_some()
    }

    /// Fill `conn` from these flags. A flag typed here wins over the command's own
    /// value, which may only have come from the environment.
    pub fn apply(self, conn: &mut ConnectionArgs) {
        conn.hub = self.hub.or(conn.hub.take());
        conn.api_key = self.api_key.or(conn.api_key.take());
        conn.ca_hash = self.ca_hash.or(conn.ca_hash.take());
        conn.ca_file = self.ca_file.or(conn.ca_file.take());
    }
}

/// What `muster login` saves.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub hub_url: String,
    pub api_key: String,
    pub ca_hash: String,
}

/// The subset of `hub.json` the CLI reads.
#[derive(Deserialize)]
struct HubJson {
    url: String,
    ca_hash: String,
}

/// Where the profile lives: `explicit`, else `MUSTER_PROFILE`, else
/// `$XDG_CONFIG_HOME/muster/profile.json` or `~/.config/muster/profile.json`.
pub fn profile_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("MUSTER_PROFILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("muster").join("profile.json"))
}

fn load_profile() -> Option<Profile> {
    let text = std::fs::read_to_string(profile_path(None)?).ok()?;
    serde_json::from_str(&text).ok()
}

/// The hub on this machine, from the files it writes at start.
fn local_hub() -> Option<(HubJson, Option<String>)> {
    let dir = std::env::var_os("MUSTER_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./muster-data"));
    let hub: HubJson =
        serde_json::from_str(&std::fs::read_to_string(dir.join("hub.json")).ok()?).ok()?;
    let key = std::fs::read_to_string(dir.join(muster_hub::INITIAL_ADMIN_KEY_FILE))
        .ok()
        .map(|k| k.trim().to_owned());
    Some((hub, key))
}

/// The CA in `--ca-file`, read as PEM.
pub fn read_ca_file(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// A CA hash as the operator typed it.
pub fn parse_ca_hash(flag: &str, value: &str) -> Result<CaHash> {
    CaHash::parse(value).with_context(|| format!("{flag} {value:?}"))
}

fn trust_from(conn: &ConnectionArgs, fallback_hash: Option<&str>) -> Result<Trust> {
    if let Some(file) = &conn.ca_file {
        return Ok(Trust::CaPem(read_ca_file(file).context("--ca-file")?));
    }
    match conn.ca_hash.as_deref().or(fallback_hash) {
        Some(h) => Ok(Trust::Hash(parse_ca_hash("--ca-hash", h)?)),
        None => Err(anyhow!(
            "cannot verify the hub: pass --ca-hash (print it with `muster hub ca-hash` on the hub) or --ca-file, or run `muster login`"
        )),
    }
}

/// An authenticated client for admin commands.
pub fn client(conn: &ConnectionArgs) -> Result<HubClient> {
    let profile = load_profile();
    let local = local_hub();
    let hub = conn
        .hub
        .clone()
        .or_else(|| profile.as_ref().map(|p| p.hub_url.clone()))
        .or_else(|| local.as_ref().map(|(h, _)| h.url.clone()))
        .context("no hub given: use --hub URL (or MUSTER_HUB_URL), run `muster login`, or run this on the hub's machine")?;
    let key = conn
        .api_key
        .clone()
        .or_else(|| profile.as_ref().map(|p| p.api_key.clone()))
        .or_else(|| local.as_ref().and_then(|(_, k)| k.clone()))
        .context("no API key given: use --api-key (or MUSTER_API_KEY), or run `muster login`")?;
    let fallback_hash = profile
        .as_ref()
        .map(|p| p.ca_hash.clone())
        .or_else(|| local.as_ref().map(|(h, _)| h.ca_hash.clone()));
    let trust = trust_from(conn, fallback_hash.as_deref())?;
    Ok(HubClient::new(&hub, trust)?.with_bearer(key))
}
