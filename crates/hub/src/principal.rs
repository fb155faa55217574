//! Who a request comes from once authenticated, and the roles routes require.
//! Plain data, low in the crate: the route table, extractors and handlers all
//! name these without importing the authentication code.

use muster_store::{AgentRecord, ApiKeyRecord, UserRecord};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub enum Principal {
    Admin(ApiKeyRecord),
    Member(ApiKeyRecord),
    Agent(Box<AgentRecord>),
    /// A dashboard user, by login session cookie.
    User(Box<UserRecord>),
    /// Another hub sharing this hub's secret (`Keys::peer_token`).
    Hub,
}

impl Principal {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        match self {
            Principal::Admin(k) | Principal::Member(k) => format!("key:{}", k.id),
            Principal::Agent(a) => format!("agent:{}", a.id),
            Principal::User(u) => format!("user:{}", u.name),
            Principal::Hub => "hub".to_owned(),
        }
    }

    /// Whether this caller may do what admins do (an admin key, or an admin user).
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::Admin(_) => true,
            Principal::User(u) => u.role == "admin",
            Principal::Member(_) | Principal::Agent(_) | Principal::Hub => false,
        }
    }
}

/// The roles routes can require, from least to most privileged for API keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An enrolled, live agent presenting its agent key.
    Agent,
    /// A member or admin API key.
    Member,
    /// An admin API key.
    Admin,
    /// Another hub of the fleet, by the token derived from the shared secret.
    Hub,
}
