//! Enrollment with a token (SPEC §4): valid, not used up, hostname inside the
//! token's pattern, source inside one of its CIDRs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use muster_proto::codes;
use muster_store::{TokenRecord, TokenState};

use super::{Context, Grant, Method};
use crate::error::{ApiFailure, ApiResult};
use crate::rules::{cidrs_contain, hostname_matches};
use crate::state::{AppState, now_ms};

pub struct TokenMethod {
    token: TokenRecord,
}

impl TokenMethod {
    /// Find the token by the keyed hash of its secret part; the pin after the `.`
    /// is for the agent and is not part of the secret.
    pub async fn lookup(state: &AppState, value: &str) -> ApiResult<Self> {
        let secret = value.split_once('.').map_or(value, |(s, _)| s);
        let hash = state.keys.hash_secret(secret);
        if let Some(token) = state.tokens.get(&hash) {
            return Ok(TokenMethod { token });
        }
        let token = crate::auth::by_hash(state, secret, |h| async move {
            state.store.find_token_by_hash(&h).await
        })
        .await?
        .ok_or_else(|| {
            ApiFailure::unauthorized(codes::TOKEN_UNKNOWN, "unknown enrollment token")
        })?;
        state.tokens.put(hash, &token);
        Ok(TokenMethod { token })
    }
}

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
    fn get(&self, hash: &str) -> Option<TokenRecord> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(hash)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, token)| token.clone())
    }

    fn put(&self, hash: String, token: &TokenRecord) {
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

#[async_trait]
impl Method for TokenMethod {
    fn credential(&self) -> String {
        format!("token:{}", self.token.id)
    }

    fn may_retry(&self) -> bool {
        self.token.revoked_at.is_none()
    }

    async fn authorize(&self, cx: &Context<'_>) -> ApiResult<Grant> {
        let t = &self.token;
        match t.state(now_ms()) {
            TokenState::Active => {}
            TokenState::Revoked => {
                return Err(ApiFailure::unauthorized(
                    codes::TOKEN_REVOKED,
                    "the enrollment token was revoked",
                ));
            }
            TokenState::Expired => {
                return Err(ApiFailure::unauthorized(
                    codes::TOKEN_EXPIRED,
                    "the enrollment token has expired; ask for a new one",
                ));
            }
            TokenState::Exhausted => {
                return Err(ApiFailure::unauthorized(
                    codes::TOKEN_EXHAUSTED,
                    "the enrollment token has no uses left",
                ));
            }
        }
        if let Some(pattern) = &t.pattern
            && !hostname_matches(pattern, cx.hostname)
        {
            return Err(ApiFailure::forbidden(
                codes::HOSTNAME_NOT_ALLOWED,
                format!("hostname {:?} is not allowed by this token", cx.hostname),
            ));
        }
        if !t.cidrs.is_empty() && !cidrs_contain(&t.cidrs, cx.source) {
            return Err(ApiFailure::forbidden(
                codes::SOURCE_NOT_ALLOWED,
                format!("source address {} is not allowed by this token", cx.source),
            ));
        }
        Ok(Grant {
            credential: self.credential(),
            consume_token: Some(t.id.clone()),
            labels: t.labels.clone(),
            may_replace_live: t.allow_replace,
            consume_rule: None,
            complete_request: None,
            existing_agent: None,
        })
    }
}
