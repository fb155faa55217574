//! API keys, users and logins on the wire (SPEC §11).

use serde::{Deserialize, Serialize};

use crate::{KeyState, Role};

/// `POST /api/v1/keys` (SPEC §11).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::text_schema))]
    pub name: String,
    pub role: Role,
    /// Member keys: agent names this key may see (glob); default all.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::nullable_text_schema))]
    pub agents: Option<String>,
    /// Member keys: probes this key may run.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::text_list_schema))]
    pub probes: Vec<String>,
    /// Lifetime in seconds; `None` never expires.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 315360000))]
    pub expires_s: Option<u64>,
}

/// An API key as listed: never its value.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub role: Role,
    pub agents: Option<String>,
    pub probes: Vec<String>,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub state: KeyState,
}

/// Answer to key creation and rotation: the only time the value is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKey {
    pub key: String,
    pub info: KeyInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// `POST /api/v1/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::text_schema))]
    pub user: String,
    pub password: String,
}

/// `POST /api/v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// A login name, or for single sign-on the person's email address.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::text_schema))]
    pub name: String,
    pub role: Role,
    /// Absent: the user signs in through single sign-on only (SPEC §14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserInfo {
    pub name: String,
    /// The role in force: for single sign-on, the highest of the user's own entry
    /// and the groups that admitted them at their last login.
    pub role: Role,
    pub disabled: bool,
    pub created_at: String,
    /// The role an admin gave this user by name (`users add`); absent when only
    /// groups admit them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_role: Option<Role>,
    /// Whether the user has a password (else single sign-on only).
    #[serde(default)]
    pub password: bool,
    /// Recorded at the first single sign-on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The authorized groups that matched at the last single sign-on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserList {
    pub users: Vec<UserInfo>,
}
