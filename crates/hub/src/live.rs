//! The fleet as watchers see it: counts by status (stored state combined with this
//! hub's session registry, the way an agent's status is computed everywhere), and
//! the loop that sends the coalesced change notes of `events.rs` every
//! [`FLUSH_EVERY`] with fresh counts.
//!
//! Session status is per hub: an agent connected to another hub sharing the
//! database counts as offline here (fleet-wide status is issue 12).

use std::sync::Arc;
use std::time::Duration;

use muster_proto::{AgentStatus, FleetSummary, StatusCounts};

use crate::clock::now_ms;
use crate::events::FLUSH_EVERY;
use crate::state::AppState;

/// The fleet counted by status: one grouped query and one pass over the registry,
/// cheap for 100,000 agents.
pub async fn fleet_counts(state: &AppState) -> muster_store::Result<FleetSummary> {
    let stored = state.store.agent_counts(now_ms()).await?;
    let (online, degraded) = state.sessions.health_counts();
    // A session lives only while its agent is active; a revocation committed a
    // moment ago may still have one, so the live counts are capped by the stored.
    let online = online.min(stored.active);
    let degraded = degraded.min(stored.active - online);
    let counts = StatusCounts {
        online,
        degraded,
        offline: stored.active - online - degraded,
        revoked: stored.revoked,
        cloned: stored.cloned,
        pending: stored.pending,
    };
    Ok(FleetSummary {
        counts,
        total: stored.active + stored.revoked + stored.cloned,
    })
}

/// Counts of a list of statuses (a scoped member's view, counted from its agents).
pub fn count_statuses(statuses: impl IntoIterator<Item = AgentStatus>) -> FleetSummary {
    let mut c = StatusCounts::default();
    let mut total = 0;
    for s in statuses {
        total += 1;
        match s {
            AgentStatus::Online => c.online += 1,
            AgentStatus::Degraded => c.degraded += 1,
            AgentStatus::Offline => c.offline += 1,
            AgentStatus::Revoked => c.revoked += 1,
            AgentStatus::Cloned => c.cloned += 1,
            AgentStatus::Removed | AgentStatus::Pending => total -= 1,
        }
    }
    FleetSummary { counts: c, total }
}

/// Send the notes gathered since the last pass, every [`FLUSH_EVERY`], until `stop`.
/// The database is asked for counts only when something changed and someone
/// watches.
pub async fn notify_loop(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let (notes, approvals) = state.events.take();
        if notes.is_empty() && !approvals {
            continue;
        }
        match fleet_counts(&state).await {
            Ok(summary) => state.events.deliver(
                &notes,
                Some(summary.counts),
                approvals.then_some(summary.counts.pending),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not count the fleet for watchers");
                state.events.deliver(&notes, None, None);
                // Do not retry at once against a database that fails.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
