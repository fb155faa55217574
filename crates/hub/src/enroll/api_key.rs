//! Enrollment with an admin API key (SPEC §5 `--key`): the key's holder may enroll
//! any machine and replace a live one.

use async_trait::async_trait;
use muster_proto::codes;
use muster_store::ApiKeyRecord;

use super::{Context, Grant, Method};
use crate::auth::api_key;
use crate::error::{ApiFailure, ApiResult};
use crate::state::AppState;

pub struct ApiKeyMethod {
    key: ApiKeyRecord,
}

impl ApiKeyMethod {
    pub async fn lookup(state: &AppState, value: &str) -> ApiResult<Self> {
        let key = api_key(state, value).await?;
        Ok(ApiKeyMethod { key })
    }
}

#[async_trait]
impl Method for ApiKeyMethod {
    fn credential(&self) -> String {
        format!("key:{}", self.key.id)
    }

    fn may_retry(&self) -> bool {
        true
    }

    async fn authorize(&self, _cx: &Context<'_>) -> ApiResult<Grant> {
        if self.key.role != "admin" {
            return Err(ApiFailure::forbidden(
                codes::FORBIDDEN,
                "only admin API keys may enroll machines",
            ));
        }
        Ok(Grant {
            credential: self.credential(),
            may_replace_live: true,
            ..Grant::default()
        })
    }
}
