//! `muster approvals`: the queue of enrollments without a credential and renewals
//! past the grace (SPEC §7).

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use muster_proto::ApprovalInfo;

use crate::connection::{ConnectionArgs, client};
use crate::output::{Format, emit, out, table};

#[derive(Args)]
pub struct ApprovalsArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    #[command(subcommand)]
    action: ApprovalsCommand,
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// Requests waiting for a decision: hostname, source, facts, age.
    List {
        #[command(flatten)]
        format: Format,
    },
    /// Approve one request, or every waiting one whose hostname matches --pattern.
    Approve {
        /// The request's id.
        #[arg(required_unless_present = "pattern")]
        id: Option<String>,
        /// Approve every waiting request whose hostname matches this glob.
        #[arg(long, conflicts_with = "id")]
        pattern: Option<String>,
    },
    /// Deny a request; the agent is told the reason.
    Deny {
        /// The request's id.
        id: String,
        /// Told to the waiting agent.
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn exec(args: ApprovalsArgs) -> Result<()> {
    let client = client(&args.conn)?;
    match args.action {
        ApprovalsCommand::List { format } => {
            let list = client.list_approvals().await?;
            emit(format, &list, |l| approvals_table(l))
        }
        ApprovalsCommand::Approve { id, pattern } => match (id, pattern) {
            (_, Some(p)) => {
                let approved = client.approve_matching(&p).await?;
                out!("Approved {} request(s) matching {p:?}", approved.len())
            }
            (Some(id), None) => {
                let r = client.approve(&id).await?;
                out!("Approved {} ({} from {})", r.id, r.hostname, r.source)
            }
            (None, None) => bail!("give a request id or --pattern"),
        },
        ApprovalsCommand::Deny { id, reason } => {
            let r = client.deny(&id, reason.as_deref()).await?;
            out!("Denied {} ({} from {})", r.id, r.hostname, r.source)
        }
    }
}

fn approvals_table(list: &[ApprovalInfo]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let facts = r
                .facts
                .as_ref()
                .map(|f| format!("{} {} {}", f.os_info, f.arch, f.ip))
                .unwrap_or_default();
            vec![
                r.id.clone(),
                r.kind.to_string(),
                r.hostname.clone(),
                r.source.clone(),
                facts,
                format!("{}s", r.age_s),
            ]
        })
        .collect();
    table(&["ID", "KIND", "HOSTNAME", "SOURCE", "FACTS", "AGE"], &rows)
}
