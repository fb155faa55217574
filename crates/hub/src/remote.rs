//! The sessions other hubs hold, as this hub last read them from the database
//! (SPEC §12 "one fleet view"): the agents' presence rows and the hubs' leases.
//!
//! Invariant: an entry counts only while its hub's lease is live; a hub that stopped
//! renewing (killed, cut off) takes its agents offline here within one lease period
//! even before anyone rewrites their rows. Depends on nothing in the crate, so the
//! registry can hold it.

use std::collections::HashMap;
use std::sync::Arc;

use muster_proto::AgentHealth;
use muster_store::{HubRecord, PresenceRecord};

/// An agent's session on another hub.
#[derive(Debug, Clone)]
pub struct RemoteSession {
    /// Shared by every entry of the same hub: a hub holds thousands.
    pub hub: Arc<str>,
    pub health: AgentHealth,
    pub problems: Vec<String>,
}

#[derive(Default)]
pub struct Remote {
    /// Connected agents by id, on hubs other than this one.
    agents: HashMap<String, RemoteSession>,
    /// Every other hub's lease expiry (unix ms); `i64::MIN` for one that stopped.
    leases: HashMap<Arc<str>, i64>,
    /// Every other hub's URL, as its lease gives it (where probes are forwarded).
    addresses: HashMap<Arc<str>, String>,
    /// Every hub id seen, so that entries share one copy of each.
    names: std::collections::HashSet<Arc<str>>,
}

impl Remote {
    /// The session `agent_id` holds on another live hub, if any.
    pub fn get(&self, agent_id: &str, now: i64) -> Option<&RemoteSession> {
        self.agents
            .get(agent_id)
            .filter(|s| self.is_live(&s.hub, now))
    }

    /// The live hub holding `agent_id`'s session, and its URL.
    pub fn holder(&self, agent_id: &str, now: i64) -> Option<(Arc<str>, String)> {
        let s = self.get(agent_id, now)?;
        let address = self.addresses.get(&s.hub)?;
        Some((s.hub.clone(), address.clone()))
    }

    pub fn is_live(&self, hub: &str, now: i64) -> bool {
        self.leases.get(hub).is_some_and(|&expires| expires > now)
    }

    /// Apply presence rows read from the database (`me` is this hub: its own rows
    /// are the registry's business). Returns the agents whose entry changed.
    pub fn apply(&mut self, me: &str, rows: &[PresenceRecord]) -> Vec<String> {
        let mut changed = Vec::new();
        for r in rows {
            if r.hub == me || !r.connected {
                if self.agents.remove(&r.agent_id).is_some() {
                    changed.push(r.agent_id.clone());
                }
                continue;
            }
            let hub = self.hub_name(&r.hub);
            let fresh = RemoteSession {
                hub,
                health: r.health,
                problems: r.problems.clone(),
            };
            let same = self.agents.get(&r.agent_id).is_some_and(|old| {
                old.hub == fresh.hub && old.health == fresh.health && old.problems == fresh.problems
            });
            if !same {
                self.agents.insert(r.agent_id.clone(), fresh);
                changed.push(r.agent_id.clone());
            }
        }
        changed
    }

    /// Replace the other hubs' leases with `hubs` (as listed, `me` left out);
    /// returns the hubs whose sessions stopped counting at `now` since the last call.
    pub fn set_leases(&mut self, me: &str, hubs: &[HubRecord], now: i64) -> Vec<Arc<str>> {
        let was_live: Vec<Arc<str>> = self
            .leases
            .keys()
            .filter(|h| self.is_live(h, now))
            .cloned()
            .collect();
        let mut leases = HashMap::with_capacity(hubs.len());
        let mut addresses = HashMap::with_capacity(hubs.len());
        for h in hubs.iter().filter(|h| h.lease.id != me) {
            let name = self.hub_name(&h.lease.id);
            addresses.insert(name.clone(), h.lease.address.clone());
            let expires = if h.stopped_at.is_some() {
                i64::MIN
            } else {
                h.lease.expires_at
            };
            leases.insert(name, expires);
        }
        self.leases = leases;
        self.addresses = addresses;
        was_live
            .into_iter()
            .filter(|h| !self.is_live(h, now))
            .collect()
    }

    /// Agents held by `hub` (whose lease just ran out, say).
    pub fn agents_on(&self, hub: &str) -> Vec<String> {
        self.agents
            .iter()
            .filter(|(_, s)| &*s.hub == hub)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Sessions on live hubs by health, leaving out agents `skip` says this hub
    /// holds itself (moved here, their old row not yet rewritten): (online, degraded).
    pub fn health_counts(&self, now: i64, skip: impl Fn(&str) -> bool) -> (i64, i64) {
        let (mut online, mut degraded) = (0, 0);
        for (id, s) in &self.agents {
            if !self.is_live(&s.hub, now) || skip(id) {
                continue;
            }
            match s.health {
                AgentHealth::Ok => online += 1,
                AgentHealth::Degraded => degraded += 1,
            }
        }
        (online, degraded)
    }

    /// The one `Arc` for a hub's id.
    fn hub_name(&mut self, id: &str) -> Arc<str> {
        if let Some(name) = self.names.get(id) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(id);
        self.names.insert(name.clone());
        name
    }
}
