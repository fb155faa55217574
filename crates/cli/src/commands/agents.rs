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
    /// An agent's packs (probes) and their state; `approve PACK` / `deny PACK`
    /// decide on a pack that needs more than the hub grants (SPEC §15).
    Packs {
        /// The agent's id or name.
        id: String,
        /// approve or deny.
        #[arg(value_parser = ["approve", "deny"], requires = "pack")]
        decision: Option<String>,
        /// The pack to decide on, e.g. system.
        pack: Option<String>,
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
    /// Set and remove an agent's labels in one change, e.g. `label web-01 env=prod
    /// team-`; prints the labels it has afterwards.
    Label {
        /// The agent's id or name.
        id: String,
        /// k=v sets label k to v; k- removes label k.
        #[arg(required = true, value_parser = parse_label_change)]
        changes: Vec<LabelChange>,
        #[command(flatten)]
        format: Format,
    },
    /// Update agents to a published release over their live sessions, in waves; a
    /// wave with any failure stops the rollout (SPEC §10).
    Update {
        /// The agent's id or name (or use --label / --all).
        name: Option<String>,
        /// Every live agent with this label, k=v; repeatable (all must match).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Every live agent in the fleet.
        #[arg(long)]
        all: bool,
        /// The release to install (default: the newest published for each agent's platform).
        #[arg(long)]
        version: Option<String>,
        /// How many agents update at once (one wave).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        max_parallel: u32,
        /// Allow installing a version older than the running one.
        #[arg(long)]
        allow_downgrade: bool,
        /// How long a new binary has to reach the hub before the agent rolls back.
        #[arg(long, default_value = "2m", value_parser = crate::duration::parse_duration)]
        deadline: std::time::Duration,
        #[command(flatten)]
        format: Format,
    },
}

/// One word of `agents label`.
#[derive(Clone, Debug)]
enum LabelChange {
    Set(String, String),
    Remove(String),
}

/// `k=v` sets, `k-` removes (as kubectl spells it).
fn parse_label_change(s: &str) -> Result<LabelChange, String> {
    if s.contains('=') {
        return parse_label(s).map(|(k, v)| LabelChange::Set(k, v));
    }
    match s.strip_suffix('-') {
        Some(k) if !k.is_empty() => Ok(LabelChange::Remove(k.to_owned())),
        _ => Err(format!(
            "invalid label change {s:?}: expected key=value to set or key- to remove"
        )),
    }
}

/// The states an agent in the fleet view can be in (`status` in `agents list
/// --json`). Not `removed`: removed agents leave the fleet view (SPEC §6), so that
/// filter could only ever list nothing.
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
        AgentsCommand::Packs {
            id,
            decision,
            pack,
            format,
        } => {
            let packs = match (decision, pack) {
                (Some(d), Some(p)) => client.decide_pack(&id, &p, &d).await?,
                _ => client.agent_probes(&id).await?,
            };
            emit(format, &packs, |p| {
                let rows: Vec<Vec<String>> = p
                    .packs
                    .iter()
                    .map(|x| {
                        vec![
                            x.pack.name.clone(),
                            x.pack.version.clone(),
                            x.state.clone(),
                            x.pack.needs.join(", "),
                            x.pack.probes.len().to_string(),
                            x.pack.reason.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                crate::output::table(
                    &["PACK", "VERSION", "STATE", "NEEDS", "PROBES", "REASON"],
                    &rows,
                )
            })
        }
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
            // History is extra: a hub without it (older) still shows the agent.
            let sessions = if format.json {
                Vec::new()
            } else {
                client
                    .agent_sessions(&a.id)
                    .await
                    .map(|h| h.sessions)
                    .unwrap_or_default()
            };
            emit(format, &a, |a| {
                agent_text(a) + &sessions_text(&sessions[..sessions.len().min(5)])
            })
        }
        AgentsCommand::Revoke { id } => {
            let a = client.revoke_agent(&id).await?;
            out!("Revoked agent {} ({})", a.name, a.id)
        }
        AgentsCommand::Remove { id } => {
            let a = client.remove_agent(&id).await?;
            out!("Removed agent {} ({})", a.name, a.id)
        }
        AgentsCommand::Label {
            id,
            changes,
            format,
        } => {
            let mut change = muster_proto::ChangeLabelsRequest::default();
            for c in changes {
                match c {
                    LabelChange::Set(k, v) => {
                        change.set.insert(k, v);
                    }
                    LabelChange::Remove(k) => change.remove.push(k),
                }
            }
            let a = client.change_labels(&id, &change).await?;
            emit(format, &a, |a| {
                format!(
                    "Labels of {} ({}): {}",
                    a.name,
                    a.id,
                    if a.labels.is_empty() {
                        "none".to_owned()
                    } else {
                        labels(&a.labels)
                    }
                )
            })
        }
        AgentsCommand::Update {
            name,
            labels,
            all,
            version,
            max_parallel,
            allow_downgrade,
            deadline,
            format,
        } => {
            let rollout = super::rollout::Rollout {
                name,
                labels,
                all,
                max_parallel: max_parallel as usize,
                order: super::rollout::Order {
                    version,
                    allow_downgrade,
                    deadline,
                },
                format,
            };
            super::rollout::run(&client, rollout).await
        }
    }
}

/// The last sessions under `agents show`: when, from where, how it ended.
fn sessions_text(sessions: &[muster_proto::SessionInfo]) -> String {
    if sessions.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nRecent sessions:\n");
    for s in sessions {
        let end = match (&s.disconnected_at, &s.reason) {
            (Some(at), Some(why)) => format!("until {} ({why})", time(at)),
            (Some(at), None) => format!("until {}", time(at)),
            (None, _) => "open".to_owned(),
        };
        out.push_str(&format!(
            "  {}  from {}  {end}\n",
            time(&s.connected_at),
            s.address
        ));
    }
    out
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
                version_cell(a),
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
            "VERSION",
            "LAST SEEN",
            "LABELS",
        ],
        &rows,
    )
}

/// The version, marked when outdated or when its last update failed.
fn version_cell(a: &AgentInfo) -> String {
    let mut cell = a.agent_version.clone();
    if a.outdated {
        cell.push_str(" OUTDATED");
    }
    if let Some(u) = a
        .update
        .as_ref()
        .filter(|u| super::rollout::is_failure(u.phase))
    {
        cell.push_str(&format!(" ({} {})", u.phase, u.version));
    }
    cell
}

fn agent_text(a: &AgentInfo) -> String {
    let mut lines = vec![
        format!("Name:          {}", a.name),
        format!("ID:            {}", a.id),
        if a.problems.is_empty() {
            format!("Status:        {}", a.status)
        } else {
            format!("Status:        {} ({})", a.status, a.problems.join("; "))
        },
        format!("Hostname:      {}", a.hostname),
        format!("IP:            {}", a.ip),
        format!("OS:            {}", a.os_info),
        format!("Arch:          {}", a.arch),
        format!(
            "Agent version: {}{}",
            a.agent_version,
            if a.outdated { " (outdated)" } else { "" }
        ),
        format!(
            "Last update:   {}",
            super::rollout::update_line(a).unwrap_or_else(|| "never".to_owned())
        ),
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
