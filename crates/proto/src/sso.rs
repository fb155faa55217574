//! Single sign-on (SPEC §14): the provider settings an admin sets, the groups that
//! admit their members, and how the hub reports them. The secret goes in, never out.

use serde::{Deserialize, Serialize};

use crate::Role;

/// `PUT /api/v1/sso`: the OpenID Connect provider. `issuer` or `entra_tenant` (the
/// Microsoft Entra preset, which makes the issuer) must be given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetSsoRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Microsoft Entra tenant ID: the issuer becomes
    /// `https://login.microsoftonline.com/<tenant>/v2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra_tenant: Option<String>,
    pub client_id: String,
    /// Stored encrypted under the hub secret; never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// The provider's name on the sign-in button ("Sign in with …").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The claim that lists a user's groups (default `groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    /// Scopes asked for besides `openid` (default `profile email`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

/// `GET /api/v1/sso`: what the hub signs in with, and where that came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SsoInfo {
    /// Whether single sign-on is configured at all.
    pub enabled: bool,
    /// `environment` (`MUSTER_OIDC_*`, which wins) or `hub` (`muster sso set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Whether a client secret is set (its value is never shown).
    #[serde(default)]
    pub client_secret_set: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Where the provider must send people back (register it there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    /// Whether the password form is offered (`--password-login`).
    pub password_login: bool,
}

/// `POST /api/v1/sso/groups`: members of this provider group may sign in with `role`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSsoGroupRequest {
    /// The value in the groups claim (Entra: the group's object ID).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::text_schema))]
    pub id: String,
    /// A name for people.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::text_schema))]
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SsoGroupInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SsoGroupList {
    pub groups: Vec<SsoGroupInfo>,
}
