//! `muster enroll`: enroll this machine with a hub (SPEC §5). It talks to the hub as
//! the machine, not as an admin, so it has its own `--hub`, `--ca-hash` and
//! `--ca-file` and none of the admin connection's fallbacks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Args;

use crate::duration::parse_duration;
use crate::failure::Stop;
use crate::output::{out, parse_label, time};

#[derive(Args)]
pub struct EnrollArgs {
    /// Hub URL, e.g. https://hub.example:8443; repeatable (or comma-separated) for
    /// several hubs of one fleet: tried in order until one answers, and all kept for
    /// the agent (default: the hubs of the credentials already in the config dir).
    #[arg(
        long = "hub",
        value_name = "URL",
        env = "MUSTER_HUB_URL",
        value_delimiter = ','
    )]
    hubs: Vec<String>,
    /// Enrollment token (met_…); it carries the hub's CA pin.
    #[arg(long, env = "MUSTER_ENROLL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Admin API key (mak_…) instead of a token.
    #[arg(long, visible_alias = "api-key")]
    key: Option<String>,
    /// The hub CA's hash (sha256:…), as `muster hub ca-hash` prints it.
    #[arg(long, env = "MUSTER_CA_HASH")]
    ca_hash: Option<String>,
    /// The hub's CA certificate (PEM).
    #[arg(long, env = "MUSTER_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Agent name (default: the hostname).
    #[arg(long)]
    name: Option<String>,
    /// Where to write this machine's identity (default: ~/.muster).
    #[arg(long, env = "MUSTER_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Label for this agent, k=v; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Skip verifying the hub (labs only): anyone on the path can read the credential.
    #[arg(long)]
    insecure_skip_verify: bool,
    /// With no credential the request waits for an admin: wait this long for it.
    #[arg(long, value_parser = parse_duration)]
    wait: Option<Duration>,
    /// Make this machine a new agent although its config dir holds credentials
    /// (without it, `enroll` re-enrolls as the agent it is): the old identity is
    /// unenrolled at its hub first.
    #[arg(long)]
    force: bool,
}

pub async fn exec(args: EnrollArgs) -> Result<()> {
    let dir = muster_agent::configdir::ConfigDir::resolve(args.config_dir.as_deref())?;
    let hub_urls = if args.hubs.is_empty() {
        match dir.load() {
            Ok(Some(creds)) => creds.config.hubs(),
            _ => {
                return Err(anyhow!(
                    "--hub URL is required (e.g. --hub https://hub.example:8443)"
                ));
            }
        }
    } else {
        muster_agent::hubs::parse_list(&args.hubs, "--hub")?
    };
    let resume = resume_command(&args, &hub_urls, dir.path());
    let opts = muster_agent::EnrollOptions {
        hub_urls,
        token: args.token,
        key: args.key,
        name: args.name,
        ca_hash: args.ca_hash,
        ca_file: args.ca_file,
        insecure_skip_verify: args.insecure_skip_verify,
        labels: args.labels.into_iter().collect(),
        wait: args.wait,
        keep_agent_key: false,
        force: args.force,
        fact_sources: None,
        packs: None,
    };
    let report = match muster_agent::enroll(&opts, &dir).await {
        Ok(r) => r,
        Err(muster_agent::AgentError::Pending { request_id }) => {
            return Err(Stop::Pending(format!(
                "enrollment request {request_id} is waiting for an admin's approval: an admin \
                 runs `muster approvals approve {request_id}`; then run `{resume}` here (or run \
                 it now to wait for the approval)"
            ))
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(old) = &report.unenrolled {
        out!("Unenrolled the previous identity {old}")?;
    }
    out!(
        "{} {} ({}) with {}",
        if report.created {
            "Enrolled"
        } else {
            "Re-enrolled"
        },
        report.name,
        report.agent_id,
        report.hub_url
    )?;
    out!("Credentials written to {}", report.config_dir.display())?;
    out!("Certificate expires {}", time(&report.cert_expires_at))
}

/// The `muster enroll` line that picks a queued request up again, as it can be pasted
/// into a shell: the same hub, the same way of verifying it (nothing secret), the same
/// config dir (its pending enrollment holds the key the request is bound to), name
/// and labels, and `--wait` so it returns once an admin has decided.
fn resume_command(args: &EnrollArgs, hub_urls: &[String], config_dir: &Path) -> String {
    let absolute = |p: &Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let mut words = vec!["muster".to_owned(), "enroll".to_owned()];
    let mut flag = |name: &str, value: &str| {
        words.push(name.to_owned());
        words.push(shell_word(value));
    };
    for hub in hub_urls {
        flag("--hub", hub);
    }
    if let Some(hash) = &args.ca_hash {
        flag("--ca-hash", hash);
    }
    if let Some(file) = &args.ca_file {
        flag("--ca-file", &absolute(file));
    }
    if args.config_dir.is_some() {
        flag("--config-dir", &absolute(config_dir));
    }
    if let Some(name) = &args.name {
        flag("--name", name);
    }
    for (k, v) in &args.labels {
        flag("--label", &format!("{k}={v}"));
    }
    flag("--wait", "10m");
    if args.insecure_skip_verify {
        words.push("--insecure-skip-verify".to_owned());
    }
    words.join(" ")
}

/// `s` as one POSIX shell word: bare when it is plainly safe, else single-quoted.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn shell_words_survive_a_shell() {
        assert_eq!(shell_word("https://h:8443"), "https://h:8443");
        assert_eq!(shell_word("/srv/my dir"), "'/srv/my dir'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
