//! `muster agents`: the fleet (SPEC §6).

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use muster_proto::AgentInfo;

use crate::connection::{ConnectionArgs, client};
use crate::output::{Format, emit, labels, out, parse_label, table, time, time_or};

#[derive(Args)]
pub struct AgentsArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    #[command(subcommand)]
    action: AgentsCommand,
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// List the fleet.
    List {
        /// Only agents in this state.
        #[arg(long, value_enum)]
        status: Option<AgentStatus>,
        /// Only agents with this label, k=v; repeatable (all must match).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        #[command(flatten)]
        format: Format,
    },
    /// Show one agent by id or name.
    Show {
        /// The agent's id or name.
        id: String,
        #[command(flatten)]
        format: Format,
    },
    /// Revoke an agent's credentials at once; its UUID never comes back.
    Revoke {
        /// The agent's id or name.
        id: String,
    },
    /// Remove an agent from the fleet view (credentials revoked, history kept).
    Remove {
        /// The agent's id or name.
        id: String,
    },
}

/// The states the hub reports an agent in (`status` in `agents list --json`).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum AgentStatus {
    /// In a live session, healthy.
    Online,
    /// Not in a session.
    Offline,
    /// In a live session, reporting problems.
    Degraded,
    /// Locked: a copy of its identity was caught on a second machine.
    Cloned,
    /// Credentials revoked; the UUID never comes back.
    Revoked,
    /// Gone from the fleet view; history kept.
    Removed,
}

impl AgentStatus {
    fn matches(self, status: &str) -> bool {
        self.to_possible_value()
            .is_some_and(|v| v.get_name() == status)
    }
}

pub async fn exec(args: AgentsArgs) -> Result<()> {
    let client = client(&args.conn)?;
    match args.action {
        AgentsCommand::List {
            status,
            labels,
            format,
        } => {
            let mut agents = client.list_agents().await?;
            agents.retain(|a| {
                status.is_none_or(|s| s.matches(a.status.as_str()))
                    && labels.iter().all(|(k, v)| a.labels.get(k) == Some(v))
            });
            emit(format, &agents, |a| agents_table(a))
        }
        AgentsCommand::Show { id, format } => {
            let a = client.agent(&id).await?;
            emit(format, &a, agent_text)
        }
        AgentsCommand::Revoke { id } => {
            let a = client.revoke_agent(&id).await?;
            out!("Revoked agent {} ({})", a.name, a.id)
        }
        AgentsCommand::Remove { id } => {
            let a = client.remove_agent(&id).await?;
            out!("Removed agent {} ({})", a.name, a.id)
        }
    }
}

fn agents_table(agents: &[AgentInfo]) -> String {
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.id.clone(),
                a.status.to_string(),
                a.hostname.clone(),
                a.ip.clone(),
                time_or(a.last_seen_at.as_deref(), "never"),
                labels(&a.labels),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ID",
            "STATUS",
            "HOSTNAME",
            "IP",
            "LAST SEEN",
            "LABELS",
        ],
        &rows,
    )
}

fn agent_text(a: &AgentInfo) -> String {
    let mut lines = vec![
        format!("Name:          {}", a.name),
        format!("ID:            {}", a.id),
        format!("Status:        {}", a.status),
        format!("Hostname:      {}", a.hostname),
        format!("IP:            {}", a.ip),
        format!("OS:            {}", a.os_info),
        format!("Arch:          {}", a.arch),
        format!("Agent version: {}", a.agent_version),
        format!("Labels:        {}", labels(&a.labels)),
        format!("Enrolled:      {}", time(&a.enrolled_at)),
        format!(
            "Last seen:     {}",
            time_or(a.last_seen_at.as_deref(), "never")
        ),
        format!(
            "Cert expires:  {}",
            time_or(a.cert_expires_at.as_deref(), "-")
        ),
    ];
    for i in &a.interfaces {
        lines.push(format!(
            "Interface:     {} {} {}{}",
            i.name,
            i.mac.as_deref().unwrap_or("-"),
            i.addresses.join(" "),
            if i.is_management { " (management)" } else { "" }
        ));
    }
    lines.join("\n")
}
