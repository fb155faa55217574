//! A short-lived cache of token records, so a fleet enrolling with one token reads
//! it once and not once per machine.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use muster_store::TokenRecord;

/// Token records read in the last [`CACHE_TTL`], by the keyed hash of their secret,
/// so that a fleet enrolling with one token reads it once and not once per machine.
///
/// Safe because nothing that admits a machine is decided from the cached copy alone:
/// a token's scope (pattern, CIDRs, labels) never changes after it is created, and
/// its state (uses, revocation, expiry) is enforced again by the guarded update that
/// commits each enrollment. A stale copy can only let a refusal come from the commit
/// instead of from here. What a stale copy can still allow, for up to the TTL after a
/// revocation (on another hub, or racing a lookup on this one), is the retry of an
/// enrollment that had already succeeded before it: the same agent, bound to the same
/// key pair, gets its answer again. Revoking a token on this hub drops its entry.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (Instant, TokenRecord)>>,
}

const CACHE_TTL: Duration = Duration::from_secs(2);
/// Enough for every token in use at once; beyond it, lookups simply go to the store.
const CACHE_CAPACITY: usize = 1024;

impl TokenCache {
    pub fn get(&self, hash: &str) -> Option<TokenRecord> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(hash)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, token)| token.clone())
    }

    pub fn put(&self, hash: String, token: &TokenRecord) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        }
        if entries.len() < CACHE_CAPACITY {
            entries.insert(hash, (Instant::now(), token.clone()));
        }
    }

    /// Drop a token that was just revoked or changed.
    pub fn forget(&self, token_id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (_, token)| token.id != token_id);
    }
}
