//! Integrations (SPEC §15): external HTTPS APIs the hub itself probes. What an
//! admin creates, how the hub shows one (the secret goes in, never out: only
//! whether one is set), "test connection", and running a probe against one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The only probe an `http` integration offers: a GET of a path under its URL.
pub const HTTP_GET: &str = "http.get";

/// The largest response body a probe returns (bytes); more is cut and marked.
pub const INTEGRATION_BODY_MAX: usize = 256 * 1024;

/// `POST /api/v1/integrations`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateIntegrationRequest {
    /// Lower-case letters, digits, `.`, `_`, `-`; at most 63 characters.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$"))]
    pub name: String,
    /// `http`: a generic HTTPS API.
    #[cfg_attr(feature = "openapi", schema(pattern = "^http$"))]
    pub kind: String,
    /// The base URL: `https://` (`http://` only on a loopback address), no
    /// credentials, query or fragment. Every probe stays under it.
    pub url: String,
    /// `none`, `bearer`, `basic` or `header`.
    pub auth: String,
    /// The header carrying the secret when `auth` is `header` (e.g. `X-Api-Key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_name: Option<String>,
    /// The bearer token, `user:password` for basic, or the header's value. Stored
    /// encrypted under the hub secret; never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl std::fmt::Debug for CreateIntegrationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateIntegrationRequest")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("auth", &self.auth)
            .field("header_name", &self.header_name)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// An integration as the hub shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntegrationInfo {
    pub name: String,
    pub kind: String,
    pub url: String,
    pub auth: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_name: Option<String>,
    /// Whether a secret is stored (its value is never shown).
    pub secret_set: bool,
    /// `untested`, `connected` or `error`.
    pub status: String,
    /// Why the last test failed: one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tested_at: Option<String>,
    pub created_at: String,
    /// What it offers, e.g. `http.get`.
    pub probes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntegrationList {
    pub integrations: Vec<IntegrationInfo>,
}

/// `POST /api/v1/integrations/{name}/test`: the outcome (also stored as the
/// integration's status).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntegrationTestResult {
    /// `connected` or `error`.
    pub status: String,
    /// The HTTP status the API answered with, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
    pub integration: IntegrationInfo,
}

/// `POST /api/v1/integrations/{name}/probes/{probe}`: the probe is in the path;
/// `http.get` takes `path` (starting with `/`, under the integration's URL; a
/// query string is allowed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunIntegrationProbeRequest {
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// What a probe brought back. `status` is the API's answer (any status, 4xx
/// included); `error` is set instead when there was none (refused, timed out).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntegrationProbeResult {
    pub integration: String,
    pub probe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// A safe subset of the response headers (content type, caching, rate limits).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body parsed, when the API said JSON and all of it arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    /// The body as text otherwise (invalid UTF-8 replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The body was cut at [`INTEGRATION_BODY_MAX`].
    #[serde(default)]
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}
