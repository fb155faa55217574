//! Enrollment by trust rule (SPEC §7): no credential, but the hostname matches a
//! rule's glob and the source address is inside one of its CIDRs. The hostname is
//! the machine's own claim; the source CIDR is the real check. Each rule admits at
//! most `max_per_hour` machines an hour; beyond that they wait in the approval queue.

use std::net::IpAddr;

use async_trait::async_trait;
use muster_store::TrustRuleRecord;

use super::{Context, Grant, Method};
use crate::error::ApiResult;
use crate::rules::{cidrs_contain, hostname_matches};
use crate::state::AppState;

pub struct TrustRuleMethod {
    rule: TrustRuleRecord,
}

/// The first rule (oldest first) admitting `hostname` from `source`.
pub async fn matching(
    state: &AppState,
    hostname: &str,
    source: IpAddr,
) -> ApiResult<Option<TrustRuleMethod>> {
    let rules = state.store.list_trust_rules().await?;
    Ok(rules
        .into_iter()
        .find(|r| {
            hostname_matches(&r.pattern, hostname)
                && (r.cidrs.is_empty() || cidrs_contain(&r.cidrs, source))
        })
        .map(|rule| TrustRuleMethod { rule }))
}

#[async_trait]
impl Method for TrustRuleMethod {
    fn credential(&self) -> String {
        format!("rule:{}", self.rule.id)
    }

    fn may_retry(&self) -> bool {
        true
    }

    async fn authorize(&self, _cx: &Context<'_>) -> ApiResult<Grant> {
        Ok(Grant {
            credential: self.credential(),
            consume_rule: Some(self.rule.id.clone()),
            labels: self.rule.labels.clone(),
            ..Grant::default()
        })
    }
}
