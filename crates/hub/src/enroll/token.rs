//! Enrollment with a token (SPEC §4): valid, not used up, hostname inside the
//! token's pattern, source inside one of its CIDRs.

use async_trait::async_trait;
use muster_proto::codes;
use muster_store::{TokenRecord, TokenState};

use super::{Context, Grant, Method};
use crate::auth::by_hash;
use crate::clock::now_ms;
use crate::error::{ApiFailure, ApiResult};
use crate::rules::{cidrs_contain, hostname_matches};
use crate::state::AppState;

pub struct TokenMethod {
    token: TokenRecord,
}

impl TokenMethod {
    /// Find the token by the keyed hash of its secret part; the pin after the `.`
    /// is for the agent and is not part of the secret.
    pub async fn lookup(state: &AppState, value: &str) -> ApiResult<Self> {
        let secret = secret_part(value);
        let hash = state.keys.hash_secret(secret);
        if let Some(token) = state.tokens.get(&hash) {
            return Ok(TokenMethod { token });
        }
        let token = by_hash(state, secret, |h| async move {
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

/// The secret of a token value `met_<secret>.<pin>`: what the hub hashes and looks
/// up. The pin is the agent's business and is never part of the lookup.
pub(crate) fn secret_part(value: &str) -> &str {
    value.split_once('.').map_or(value, |(s, _)| s)
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
