//! Stable error codes of `{"error":{"code","message"}}`. Clients match on these,
//! never on the message.

pub const INVALID_REQUEST: &str = "invalid_request";
pub const INVALID_CSR: &str = "invalid_csr";
pub const UNAUTHORIZED: &str = "unauthorized";
pub const TOKEN_UNKNOWN: &str = "token_unknown";
pub const TOKEN_EXPIRED: &str = "token_expired";
pub const TOKEN_EXHAUSTED: &str = "token_exhausted";
pub const TOKEN_REVOKED: &str = "token_revoked";
pub const KEY_INVALID: &str = "key_invalid";
pub const FORBIDDEN: &str = "forbidden";
/// The hub takes no passwords (`--password-login off`): sign in with SSO.
pub const PASSWORD_LOGIN_OFF: &str = "password_login_off";
pub const HOSTNAME_NOT_ALLOWED: &str = "hostname_not_allowed";
pub const SOURCE_NOT_ALLOWED: &str = "source_not_allowed";
pub const AGENT_REVOKED: &str = "agent_revoked";
/// Two machines were caught sharing this identity; an admin must resolve it.
pub const AGENT_CLONED: &str = "agent_cloned";
/// An admin denied the queued request.
pub const REQUEST_DENIED: &str = "request_denied";
/// The queued request waited longer than the hub keeps requests.
pub const REQUEST_EXPIRED: &str = "request_expired";
/// The certificate expired longer ago than the hub's renewal grace window.
pub const RENEWAL_GRACE_EXPIRED: &str = "renewal_grace_expired";
/// A renewal proved possession of an expired certificate that, on the hub's
/// clock, has not expired: the agent's clock runs ahead; renew over TLS with it.
pub const CERT_NOT_EXPIRED: &str = "cert_not_expired";
pub const NOT_FOUND: &str = "not_found";
pub const NAME_IN_USE: &str = "name_in_use";
pub const CONFLICT: &str = "conflict";
pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
/// The path exists, but not with this method; the `Allow` header lists those it has.
pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
/// The request's body did not arrive in time; the connection is closed.
pub const REQUEST_TIMEOUT: &str = "request_timeout";
pub const RATE_LIMITED: &str = "rate_limited";
/// The agent has no live session on this hub (an update is sent over it).
pub const AGENT_OFFLINE: &str = "agent_offline";
/// No signed release is published for the agent's platform (or that version).
pub const NO_RELEASE: &str = "no_release";
pub const INTERNAL: &str = "internal";
pub const UNAVAILABLE: &str = "unavailable";
