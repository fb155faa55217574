//! Token-free enrollment rules on the wire (SPEC §7).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /api/v1/trust-rules`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTrustRule {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::text_schema))]
    pub pattern: String,
    #[serde(default)]
    pub cidrs: Vec<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::labels_schema))]
    pub labels: BTreeMap<String, String>,
    /// Default 100; beyond it matching machines wait in the approval queue.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub max_per_hour: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrustRuleInfo {
    pub id: String,
    pub pattern: String,
    pub cidrs: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub max_per_hour: u32,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrustRuleList {
    pub rules: Vec<TrustRuleInfo>,
}
