//! Re-enrollment with the credentials an agent already holds (SPEC §6 "renamed
//! host"): its agent key proves it is that agent, so it keeps its UUID whatever its
//! new name, and needs no token.

use async_trait::async_trait;
use muster_proto::codes;
use muster_store::{AgentRecord, AgentState};

use super::{Context, Grant, Method};
use crate::auth::agent_by_key;
use crate::clones::cloned_refusal;
use crate::error::{ApiFailure, ApiResult};
use crate::state::AppState;

pub struct ExistingMethod {
    agent: AgentRecord,
}

impl ExistingMethod {
    pub async fn lookup(state: &AppState, value: &str) -> ApiResult<Self> {
        match agent_by_key(state, value).await? {
            // A locked identity is not renewed by re-enrolling either: two machines
            // hold it, and new credentials would go to whichever asked first.
            Some(agent) if agent.state == AgentState::Active && agent.cloned_at.is_some() => {
                Err(cloned_refusal())
            }
            Some(agent) if agent.state == AgentState::Active => Ok(ExistingMethod { agent }),
            Some(_) => Err(ApiFailure::forbidden(
                codes::AGENT_REVOKED,
                "this agent was revoked; enroll again with a token to get a new identity",
            )),
            None => Err(ApiFailure::unauthorized(
                codes::KEY_INVALID,
                "the agent key is not valid (replaced or unknown)",
            )),
        }
    }
}

#[async_trait]
impl Method for ExistingMethod {
    fn credential(&self) -> String {
        format!("agent:{}", self.agent.id)
    }

    fn may_retry(&self) -> bool {
        false
    }

    async fn authorize(&self, _cx: &Context<'_>) -> ApiResult<Grant> {
        Ok(Grant {
            credential: self.credential(),
            existing_agent: Some(self.agent.clone()),
            ..Grant::default()
        })
    }
}
