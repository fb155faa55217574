//! Env-file mode for containers (SPEC §8): `muster agent --env-file FILE`.
//!
//! The durable identity is two lines in FILE, `MUSTER_AGENT_ID` and
//! `MUSTER_AGENT_KEY`; the certificate and its private key are made afresh at every
//! start and held in a private (0700) working dir that dies with the container.
//!
//! - no key in FILE: enroll with `MUSTER_ENROLL_TOKEN`, then rewrite FILE in place:
//!   set the id and key (replacing existing lines), comment out the consumed token,
//!   create parent dirs, mode 0600. If FILE cannot be written, warn and carry on with
//!   the credentials in memory (they will not survive a restart).
//! - a key in FILE: no enrollment; the key fetches a certificate for a new key pair
//!   and stays the same. The hub is verified by `MUSTER_CA_HASH`, which the first
//!   enrollment writes too (from the CA the token's pin verified) when it is unset.
//! - neither, or the hub unreachable at first enrollment: a clear error.
//!
//! Values come from FILE, else from the process environment (so a container can
//! pass the token as a variable and keep only the result in a mounted file).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use crate::configdir::ConfigDir;
use crate::facts::FactSources;
use crate::{AgentError, EnrollOptions};

const KEYS: [&str; 6] = [
    "MUSTER_HUB_URL",
    "MUSTER_CA_HASH",
    "MUSTER_ENROLL_TOKEN",
    "MUSTER_AGENT_NAME",
    "MUSTER_AGENT_ID",
    "MUSTER_AGENT_KEY",
];

/// An env file as lines, so rewriting it keeps everything else as it was.
#[derive(Debug, Clone, Default)]
pub struct EnvFile {
    lines: Vec<String>,
}

impl EnvFile {
    /// Read FILE; a missing file is empty (it will be created).
    pub fn read(path: &Path) -> Result<Self, AgentError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(EnvFile::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EnvFile::default()),
            Err(e) => Err(AgentError::Usage(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// The file's text as lines (what [`read`](Self::read) does after reading).
    pub fn parse(text: &str) -> Self {
        EnvFile {
            lines: text.lines().map(str::to_owned).collect(),
        }
    }

    /// `KEY=value` pairs; `export KEY=…`, quotes and blank values are handled.
    pub fn values(&self) -> BTreeMap<String, String> {
        self.lines
            .iter()
            .filter_map(|l| parse_line(l))
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    /// Set `key=value`, replacing every existing line for it, or appending.
    pub fn set(&mut self, key: &str, value: &str) {
        let line = format!("{key}={value}");
        let mut placed = false;
        self.lines.retain_mut(|l| match parse_line(l) {
            Some((k, _)) if k == key => {
                if placed {
                    false
                } else {
                    *l = line.clone();
                    placed = true;
                    true
                }
            }
            _ => true,
        });
        if !placed {
            self.lines.push(line);
        }
    }

    /// Comment out `key`'s line, saying why.
    pub fn comment_out(&mut self, key: &str, why: &str) {
        for l in &mut self.lines {
            if parse_line(l).is_some_and(|(k, _)| k == key) {
                *l = format!("# {why}: {l}");
            }
        }
    }

    pub fn text(&self) -> String {
        let mut t = self.lines.join("\n");
        t.push('\n');
        t
    }

    /// Write atomically, mode 0600, creating parent dirs.
    pub fn write(&self, path: &Path) -> Result<(), AgentError> {
        let fail =
            |e: std::io::Error| AgentError::Usage(format!("cannot write {}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        muster_files::write_atomic_path(path, self.text().as_bytes(), muster_files::PRIVATE)
            .map_err(fail)
    }
}

fn parse_line(line: &str) -> Option<(String, String)> {
    let t = line.trim();
    if t.starts_with('#') {
        return None;
    }
    let t = t.strip_prefix("export ").unwrap_or(t);
    let (k, v) = t.split_once('=')?;
    let v = v.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
        .unwrap_or(v);
    Some((k.trim().to_owned(), v.to_owned()))
}

/// Values from FILE, falling back to the process environment.
fn settings(file: &EnvFile) -> BTreeMap<String, String> {
    let mut values = file.values();
    for key in KEYS {
        if !values.contains_key(key)
            && let Ok(v) = std::env::var(key)
            && !v.is_empty()
        {
            values.insert(key.to_owned(), v);
        }
    }
    values
}

/// What `muster agent --env-file` runs.
pub struct EnvFileOptions {
    pub path: PathBuf,
    /// Where the certificate and key live while running; default: a private temp dir.
    pub work_dir: Option<PathBuf>,
    pub fact_sources: FactSources,
}

pub async fn run(
    opts: EnvFileOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let (dir, _cleanup) = work_dir(opts.work_dir.as_deref())?;
    prepare(&opts, &dir).await?;
    crate::session::run(&dir, opts.fact_sources.clone(), shutdown).await
}

/// Enroll or fetch a certificate, and persist what must survive; returns the
/// working config dir holding the credentials.
pub async fn prepare(opts: &EnvFileOptions, dir: &ConfigDir) -> Result<(), AgentError> {
    let path = &opts.path;
    let mut file = EnvFile::read(path)?;
    let values = settings(&file);
    let missing = |k: &str| {
        AgentError::Usage(format!(
            "{k} is not set in {} or the environment",
            path.display()
        ))
    };
    let hub_url = values
        .get("MUSTER_HUB_URL")
        .ok_or_else(|| missing("MUSTER_HUB_URL"))?;
    let key = values.get("MUSTER_AGENT_KEY");
    let token = values.get("MUSTER_ENROLL_TOKEN");
    if key.is_none() && token.is_none() {
        return Err(AgentError::Usage(format!(
            "{} has neither MUSTER_AGENT_KEY (an enrolled agent) nor MUSTER_ENROLL_TOKEN (to enroll); nothing to run as",
            path.display()
        )));
    }
    // Several hubs of one fleet: comma-separated, tried in order (SPEC §12).
    let hub_urls = crate::hubs::parse_list(std::slice::from_ref(hub_url), "MUSTER_HUB_URL")?;
    let enroll = EnrollOptions {
        hub_urls,
        token: if key.is_some() { None } else { token.cloned() },
        key: key.cloned(),
        keep_agent_key: key.is_some(),
        name: values.get("MUSTER_AGENT_NAME").cloned(),
        ca_hash: values.get("MUSTER_CA_HASH").cloned(),
        fact_sources: Some(opts.fact_sources.clone()),
        ..Default::default()
    };
    let report = crate::enroll(&enroll, dir).await.map_err(|e| match e {
        AgentError::Client(muster_client::ClientError::Unreachable { url, detail, .. }) => {
            AgentError::Usage(format!(
                "cannot reach the hub at {url} to {}: {detail}",
                if key.is_some() {
                    "fetch a certificate"
                } else {
                    "enroll"
                }
            ))
        }
        other => other,
    })?;
    if key.is_none() {
        let creds = dir
            .load()?
            .ok_or_else(|| AgentError::Internal("enrolled but no credentials stored".to_owned()))?;
        file.set("MUSTER_AGENT_ID", &report.agent_id);
        file.set("MUSTER_AGENT_KEY", &creds.config.agent_key);
        // The token's pin verified this CA; a restart (with no token) needs the hash.
        if !values.contains_key("MUSTER_CA_HASH") {
            file.set("MUSTER_CA_HASH", &creds.config.ca_hash);
        }
        file.comment_out(
            "MUSTER_ENROLL_TOKEN",
            &format!(
                "consumed by agent {} at {}",
                report.agent_id,
                crate::now_rfc3339()
            ),
        );
        match file.write(path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), agent_id = %report.agent_id, "enrolled; identity saved to the env file")
            }
            Err(e) => tracing::warn!(
                error = %e,
                "enrolled, but the identity could not be saved: running with in-memory credentials that will not survive a restart"
            ),
        }
    }
    Ok(())
}

/// Removes the private working dir when the agent stops.
pub struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

fn work_dir(explicit: Option<&Path>) -> Result<(ConfigDir, Cleanup), AgentError> {
    match explicit {
        Some(p) => Ok((ConfigDir::new(p), Cleanup(None))),
        None => {
            let p = std::env::temp_dir().join(format!(
                "muster-agent-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ));
            muster_files::create_private_dir_all(&p)
                .map_err(|e| AgentError::Usage(format!("cannot create {}: {e}", p.display())))?;
            Ok((ConfigDir::new(&p), Cleanup(Some(p))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_replaced_in_place_and_the_rest_kept() {
        let mut f = EnvFile {
            lines: vec![
                "# my container".to_owned(),
                "MUSTER_HUB_URL=https://hub:8443".to_owned(),
                "export MUSTER_ENROLL_TOKEN=\"met_x.y\"".to_owned(),
                "MUSTER_AGENT_KEY=".to_owned(),
                "OTHER=1".to_owned(),
            ],
        };
        let v = f.values();
        assert_eq!(
            v.get("MUSTER_ENROLL_TOKEN").map(String::as_str),
            Some("met_x.y")
        );
        assert!(
            !v.contains_key("MUSTER_AGENT_KEY"),
            "blank values are unset"
        );
        f.set("MUSTER_AGENT_KEY", "mag_k");
        f.set("MUSTER_AGENT_ID", "id-1");
        f.comment_out("MUSTER_ENROLL_TOKEN", "consumed");
        let text = f.text();
        assert!(text.starts_with("# my container\nMUSTER_HUB_URL=https://hub:8443\n# consumed: export MUSTER_ENROLL_TOKEN="));
        assert!(text.contains("\nMUSTER_AGENT_KEY=mag_k\nOTHER=1\nMUSTER_AGENT_ID=id-1\n"));
        assert!(!f.values().contains_key("MUSTER_ENROLL_TOKEN"));
    }
}
