//! `muster audit`: the tamper-evident audit log (SPEC §11).

use std::collections::HashMap;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use muster_proto::AuditEntryInfo;

use crate::connection::{ConnectionArgs, client};
use crate::duration::parse_duration;
use crate::output::{Format, emit, out, table, time};

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    #[command(subcommand)]
    action: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Entries, newest first.
    List {
        /// Agent id or name.
        #[arg(long)]
        agent: Option<String>,
        /// e.g. key:<id>, agent:<id>, token:<id>, hub.
        #[arg(long)]
        actor: Option<String>,
        /// e.g. agent.enrolled, token.created.
        #[arg(long)]
        action: Option<String>,
        /// RFC 3339 time, or a duration meaning that long ago (e.g. 24h).
        #[arg(long, value_parser = parse_when)]
        since: Option<i64>,
        /// RFC 3339 time, or a duration meaning that long ago (e.g. 1h).
        #[arg(long, value_parser = parse_when)]
        until: Option<i64>,
        /// Only entries older than this seq (the `#` column): pass the last one
        /// listed to see the page before it.
        #[arg(long, value_name = "SEQ")]
        before: Option<i64>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        format: Format,
    },
    /// Walk the whole chain: OK with the count, or the first entry changed, deleted or inserted.
    Verify {
        /// A checkpoint the hub wrote (`<data-dir>/audit-checkpoint.json`, or a
        /// copy from syslog or the webhook): also check that no entry up to the
        /// one it saw was cut off or rewritten since.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<std::path::PathBuf>,
    },
}

/// An RFC 3339 time, or a duration ago, as unix milliseconds.
fn parse_when(s: &str) -> Result<i64, String> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let ago = parse_duration(s)
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a duration like 24h"))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    Ok(now as i64 - ago.as_millis() as i64)
}

pub async fn exec(args: AuditArgs) -> Result<()> {
    let client = client(&args.conn)?;
    match args.action {
        AuditCommand::List {
            agent,
            actor,
            action,
            since,
            until,
            before,
            limit,
            format,
        } => {
            let q = muster_client::AuditQuery {
                agent,
                actor,
                action,
                since_ms: since,
                until_ms: until,
                before,
                limit: Some(limit),
            };
            let entries = client.audit(&q).await?;
            emit(format, &entries, |e| entries_table(e))
        }
        AuditCommand::Verify { checkpoint } => {
            let v = match &checkpoint {
                Some(path) => {
                    client
                        .verify_audit_checkpoint(&read_checkpoint(path)?)
                        .await?
                }
                None => client.verify_audit().await?,
            };
            if !v.ok {
                bail!(
                    "the audit chain is broken at entry {}: {} ({} entries)",
                    v.broken_seq.unwrap_or(0),
                    v.problem.unwrap_or_default(),
                    v.count
                );
            }
            match v.checkpoint_seq {
                Some(seq) => out!(
                    "OK: {} entries verify, and the chain still holds entry {seq} as the checkpoint saw it",
                    v.count
                ),
                None => out!("OK: {} entries verify", v.count),
            }
        }
    }
}

/// A checkpoint file, or a syslog line holding one (`… audit-checkpoint {json}`).
fn read_checkpoint(path: &std::path::Path) -> Result<muster_proto::AuditCheckpoint> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let json = text
        .find('{')
        .map(|i| text[i..].trim())
        .unwrap_or(text.trim());
    serde_json::from_str(json).map_err(|e| {
        anyhow::anyhow!(
            "{} is not an audit checkpoint ({e}); give the hub's <data-dir>/{}",
            path.display(),
            "audit-checkpoint.json"
        )
    })
}

fn entries_table(entries: &[AuditEntryInfo]) -> String {
    let names = names(entries);
    let named =
        |who: &str, given: &Option<String>| match given.as_deref().or(names.get(who).copied()) {
            Some(name) => format!("{who} ({name})"),
            None => who.to_owned(),
        };
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                time(&e.at),
                named(&e.actor, &e.actor_name),
                e.action.clone(),
                named(&e.target, &e.target_name),
                e.source.clone(),
                e.outcome.clone(),
            ]
        })
        .collect();
    table(
        &[
            "SEQ", "AT", "ACTOR", "ACTION", "TARGET", "SOURCE", "OUTCOME",
        ],
        &rows,
    )
}

/// Names for ids the hub did not name (removed keys, requests): an entry's
/// `details.name` names its target (`agent:<id>`, `key:<id>`, `request:<id>`). The
/// newest entry wins; ids named nowhere stay bare.
fn names(entries: &[AuditEntryInfo]) -> HashMap<&str, &str> {
    let mut names = HashMap::new();
    for e in entries {
        if let Some(name) = e.details.get("name").and_then(|n| n.as_str())
            && e.target.contains(':')
        {
            names.entry(e.target.as_str()).or_insert(name);
        }
    }
    names
}
