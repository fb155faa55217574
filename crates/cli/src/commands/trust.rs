//! `muster trust`: rules that let machines enroll without a credential (SPEC §7).

use anyhow::Result;
use clap::{Args, Subcommand};
use muster_proto::TrustRuleInfo;

use crate::connection::{ConnectionArgs, client};
use crate::output::{Format, emit, labels, out, parse_label, table};

#[derive(Args)]
pub struct TrustArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    #[command(subcommand)]
    action: TrustCommand,
}

#[derive(Subcommand)]
enum TrustCommand {
    /// Let machines whose hostname matches and whose source is inside a CIDR enroll
    /// without a credential.
    Add {
        /// Hostname glob, e.g. 'web-*'.
        #[arg(long)]
        pattern: String,
        /// Source network; repeatable. Without one, any source matches (warned).
        #[arg(long = "cidr")]
        cidrs: Vec<String>,
        /// Label given to every agent enrolled through the rule, k=v; repeatable.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Enrollments per hour through this rule; beyond it they wait for approval.
        #[arg(long, default_value_t = 100)]
        max_per_hour: u32,
        #[command(flatten)]
        format: Format,
    },
    /// The rules, with their networks, labels and rate.
    List {
        #[command(flatten)]
        format: Format,
    },
    /// Remove a rule.
    Remove {
        /// The rule's id.
        id: String,
    },
}

pub async fn exec(args: TrustArgs) -> Result<()> {
    let client = client(&args.conn)?;
    match args.action {
        TrustCommand::Add {
            pattern,
            cidrs,
            labels,
            max_per_hour,
            format,
        } => {
            if cidrs.is_empty() {
                crate::output::warn(
                    "a rule without --cidr admits any source; the hostname is only the machine's own claim",
                );
            }
            let rule = client
                .create_trust_rule(&muster_proto::CreateTrustRule {
                    pattern,
                    cidrs,
                    labels: labels.into_iter().collect(),
                    max_per_hour: Some(max_per_hour),
                })
                .await?;
            emit(format, &rule, |r| {
                format!("Added trust rule {} for {}", r.id, r.pattern)
            })
        }
        TrustCommand::List { format } => {
            let rules = client.list_trust_rules().await?;
            emit(format, &rules, |r| rules_table(r))
        }
        TrustCommand::Remove { id } => {
            client.remove_trust_rule(&id).await?;
            out!("Removed trust rule {id}")
        }
    }
}

fn rules_table(rules: &[TrustRuleInfo]) -> String {
    let rows: Vec<Vec<String>> = rules
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.pattern.clone(),
                if r.cidrs.is_empty() {
                    "any".to_owned()
                } else {
                    r.cidrs.join(",")
                },
                labels(&r.labels),
                r.max_per_hour.to_string(),
            ]
        })
        .collect();
    table(&["ID", "PATTERN", "CIDRS", "LABELS", "PER HOUR"], &rows)
}
