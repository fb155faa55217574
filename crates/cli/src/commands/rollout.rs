//! `muster agents update` (SPEC §10 "Updates"): send a release to agents in waves
//! and wait for each agent's outcome; a wave with any failure stops the rollout.
//!
//! The hub only sends the order; each agent reports its steps, which the hub
//! stores on the agent. This command reads them back (`agents show`) until every
//! agent of the wave reached a final step newer than its order, or its deadline
//! (plus a margin for the download) passed.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use muster_client::HubClient;
use muster_proto::{AgentInfo, AgentStatus, UpdatePhase, UpdateRequest, codes};
use serde::Serialize;

use crate::output::{Format, emit, table};

/// What `agents update` was asked to do.
pub struct Rollout {
    pub name: Option<String>,
    pub labels: Vec<(String, String)>,
    pub all: bool,
    pub max_parallel: usize,
    pub order: Order,
    pub format: Format,
}

/// What each agent is asked.
#[derive(Debug, Clone)]
pub struct Order {
    pub version: Option<String>,
    pub allow_downgrade: bool,
    pub deadline: Duration,
}

/// One agent's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub name: String,
    pub id: String,
    /// `completed`, `skipped`, `refused`, `rolled_back`, `failed`, `offline`,
    /// `no_release`, `timeout`, `error`.
    pub outcome: String,
    pub from_version: String,
    pub version: String,
    pub reason: String,
}

impl Outcome {
    /// Whether this outcome stops the rollout. An offline agent does not (nothing
    /// was tried on it), but still makes the command fail at the end.
    fn failed(&self) -> bool {
        !matches!(self.outcome.as_str(), "completed" | "skipped" | "offline")
    }
}

#[derive(Debug, Serialize)]
struct Report {
    outcomes: Vec<Outcome>,
    /// Agents not tried because a wave failed.
    untouched: Vec<String>,
    stopped: bool,
}

/// Time an agent gets beyond its trial deadline: the order, the download and the
/// reports travel too.
const MARGIN: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(500);

pub async fn run(client: &HubClient, r: Rollout) -> Result<()> {
    let targets = targets(client, &r).await?;
    if targets.is_empty() {
        bail!("no agent matches");
    }
    let mut outcomes = Vec::new();
    let mut untouched = Vec::new();
    let mut stopped = false;
    for wave in targets.chunks(r.max_parallel.max(1)) {
        if stopped {
            untouched.extend(wave.iter().map(|a| a.name.clone()));
            continue;
        }
        let mut set = tokio::task::JoinSet::new();
        for (i, a) in wave.iter().enumerate() {
            let (client, a, order) = (client.clone(), a.clone(), r.order.clone());
            set.spawn(async move { (i, update_one(&client, &a, &order).await) });
        }
        let mut results: Vec<(usize, Outcome)> = set.join_all().await;
        results.sort_by_key(|(i, _)| *i);
        let results: Vec<Outcome> = results.into_iter().map(|(_, o)| o).collect();
        stopped = results.iter().any(Outcome::failed);
        outcomes.extend(results);
    }
    let report = Report {
        outcomes,
        untouched,
        stopped,
    };
    emit(r.format, &report, |rep| {
        let rows: Vec<Vec<String>> = rep
            .outcomes
            .iter()
            .map(|o| {
                vec![
                    o.name.clone(),
                    o.from_version.clone(),
                    o.version.clone(),
                    o.outcome.clone(),
                    o.reason.clone(),
                ]
            })
            .collect();
        table(&["NAME", "FROM", "TO", "OUTCOME", "REASON"], &rows)
    })?;
    if report.stopped {
        bail!(
            "rollout stopped after a failed wave: {} agent(s) left untouched",
            report.untouched.len()
        );
    }
    let offline = report
        .outcomes
        .iter()
        .filter(|o| o.outcome == "offline")
        .count();
    if offline > 0 {
        bail!("{offline} agent(s) were offline and not updated");
    }
    Ok(())
}

/// The agents the rollout addresses, in name order: one by name, or the live ones
/// carrying every label, or all live ones.
async fn targets(client: &HubClient, r: &Rollout) -> Result<Vec<AgentInfo>> {
    let chosen =
        usize::from(r.name.is_some()) + usize::from(!r.labels.is_empty()) + usize::from(r.all);
    if chosen != 1 {
        bail!("name the agents to update: NAME, --label k=v or --all (exactly one)");
    }
    if let Some(name) = &r.name {
        return Ok(vec![client.agent(name).await?]);
    }
    let mut agents = client.list_agents().await?;
    agents.retain(|a| {
        !matches!(a.status, AgentStatus::Revoked | AgentStatus::Removed)
            && r.labels.iter().all(|(k, v)| a.labels.get(k) == Some(v))
    });
    Ok(agents)
}

async fn update_one(client: &HubClient, a: &AgentInfo, r: &Order) -> Outcome {
    let mut outcome = Outcome {
        name: a.name.clone(),
        id: a.id.clone(),
        outcome: String::new(),
        from_version: a.agent_version.clone(),
        version: r.version.clone().unwrap_or_default(),
        reason: String::new(),
    };
    let req = UpdateRequest {
        version: r.version.clone(),
        allow_downgrade: r.allow_downgrade,
        deadline_s: Some(r.deadline.as_secs().max(1)),
    };
    let order = match client.update_agent(&a.id, &req).await {
        Ok(o) => o,
        Err(e) => {
            outcome.outcome = match e.code() {
                Some(codes::AGENT_OFFLINE) => "offline",
                Some(codes::NO_RELEASE) => "no_release",
                _ => "error",
            }
            .to_owned();
            outcome.reason = e.to_string();
            return outcome;
        }
    };
    outcome.version = order.version.clone();
    let give_up = Instant::now() + r.deadline + MARGIN;
    loop {
        match client.agent(&a.id).await {
            Ok(now) => {
                if let Some(u) = now.update.filter(|u| {
                    u.phase.is_final()
                        && u.version == order.version
                        && not_before(&u.at, &order.requested_at)
                }) {
                    outcome.outcome = u.phase.to_string();
                    outcome.reason = u.message;
                    return outcome;
                }
            }
            Err(e) => outcome.reason = e.to_string(),
        }
        if Instant::now() > give_up {
            outcome.outcome = "timeout".to_owned();
            if outcome.reason.is_empty() {
                outcome.reason = format!(
                    "no final report within {} s",
                    (r.deadline + MARGIN).as_secs()
                );
            }
            return outcome;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether the time `at` is not before `since` (both RFC 3339 from the hub, whose
/// text does not sort: fractions of a second are written only when not zero).
fn not_before(at: &str, since: &str) -> bool {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    match (
        OffsetDateTime::parse(at, &Rfc3339),
        OffsetDateTime::parse(since, &Rfc3339),
    ) {
        (Ok(a), Ok(s)) => a >= s,
        _ => true,
    }
}

/// The update step `agents show` prints.
pub fn update_line(a: &AgentInfo) -> Option<String> {
    let u = a.update.as_ref()?;
    let mut line = format!(
        "{} {} at {}",
        u.phase,
        u.version,
        crate::output::time(&u.at)
    );
    if !u.message.is_empty() {
        line.push_str(": ");
        line.push_str(&u.message);
    }
    Some(line)
}

/// Whether an update step is a failure worth flagging in a listing.
pub fn is_failure(phase: UpdatePhase) -> bool {
    matches!(
        phase,
        UpdatePhase::Refused | UpdatePhase::RolledBack | UpdatePhase::Failed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_times_compare_as_times_not_text() {
        assert!(not_before("2026-11-30T09:39:28.5Z", "2026-11-30T09:39:28Z"));
        assert!(!not_before(
            "2026-11-30T09:39:27.999Z",
            "2026-11-30T09:39:28Z"
        ));
        assert!(not_before("2026-11-30T09:39:28Z", "2026-11-30T09:39:28Z"));
    }
}
