//! How admin commands find the hub (SPEC §11): flags or environment first, then
//! `muster login`'s saved profile, then the `hub.json` and `initial-admin-key` a hub
//! writes into `./muster-data` on its own machine.
//!
//! A saved credential belongs to the hub it was saved for: the profile's key and CA
//! hash go only to the profile's URL, `initial-admin-key` and `hub.json`'s hash
//! only to that hub's URL. `--hub` naming another hub without `--api-key` is an
//! error, never a key sent to the wrong place. When no `--hub` is given and the
//! profile and `./muster-data` name different hubs, the profile wins (SPEC §11's
//! order) and a note on stderr says which hub is used and how to pick the other.
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

/// The hub on this machine, from the files it writes at start: `hub.json`, the
/// initial admin key, and the path they were read from (for messages).
fn local_hub() -> Option<(HubJson, Option<String>, PathBuf)> {
    let dir = std::env::var_os("MUSTER_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./muster-data"));
    let hub: HubJson =
        serde_json::from_str(&std::fs::read_to_string(dir.join("hub.json")).ok()?).ok()?;
    let key = std::fs::read_to_string(dir.join(muster_hub::INITIAL_ADMIN_KEY_FILE))
        .ok()
        .map(|k| k.trim().to_owned());
    Some((hub, key, dir.join("hub.json")))
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

/// Where a hub URL came from, and the saved credentials that belong to it.
struct Saved {
    url: String,
    key: Option<String>,
    ca_hash: Option<String>,
    /// Where it was read from, as messages name it.
    what: String,
}

/// URLs compared as the hub writes them: no trailing slash, host case-insensitive.
fn same_hub(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// An authenticated client for admin commands.
pub fn client(conn: &ConnectionArgs) -> Result<HubClient> {
    let profile = load_profile().map(|p| Saved {
        url: p.hub_url,
        key: Some(p.api_key),
        ca_hash: Some(p.ca_hash),
        what: "the saved profile (muster login)".to_owned(),
    });
    let local = local_hub().map(|(h, key, path)| Saved {
        url: h.url,
        key,
        ca_hash: Some(h.ca_hash),
        what: path.display().to_string(),
    });
    let hub = match (&conn.hub, &profile, &local) {
        (Some(hub), _, _) => hub.clone(),
        (None, Some(p), Some(l)) if !same_hub(&p.url, &l.url) => {
            crate::output::warn(&format!(
                "using {} from {}; {} names {} (pass --hub to choose it)",
                p.url, p.what, l.what, l.url
            ));
            p.url.clone()
        }
        (None, Some(p), _) => p.url.clone(),
        (None, None, Some(l)) => l.url.clone(),
        (None, None, None) => anyhow::bail!(
            "no hub given: use --hub URL (or MUSTER_HUB_URL), run `muster login`, or run this on the hub's machine"
        ),
    };
    // Saved settings only for the hub they were saved for.
    let saved = [profile, local]
        .into_iter()
        .flatten()
        .find(|s| same_hub(&s.url, &hub));
    let key = match (&conn.api_key, &saved) {
        (Some(k), _) => k.clone(),
        (None, Some(Saved { key: Some(k), .. })) => k.clone(),
        (None, _) => anyhow::bail!(
            "no API key for {hub}: use --api-key (or MUSTER_API_KEY), or run `muster login --hub {hub} --api-key KEY --ca-hash HASH`"
        ),
    };
    let fallback_hash = saved.as_ref().and_then(|s| s.ca_hash.clone());
    let trust = trust_from(conn, fallback_hash.as_deref())?;
    Ok(HubClient::new(&hub, trust)?.with_bearer(key))
}
