//! The closed sets of words the wire carries: agent statuses, token and key states,
//! roles, approval kinds and statuses, who a caller is. Each is an enum that
//! serializes to the lowercase word the API has always used, parses from it
//! (`FromStr`), prints it (`Display`), and compares equal to it, so callers match
//! on variants and never on spelling.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A word that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownWord {
    pub kind: &'static str,
    pub word: String,
    pub expected: &'static [&'static str],
}

impl fmt::Display for UnknownWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} {:?}: expected one of {}",
            self.kind,
            self.word,
            self.expected.join(", ")
        )
    }
}

impl std::error::Error for UnknownWord {}

macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident ($what:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $word:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $word)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            const WORDS: &'static [&'static str] = &[$($word),+];

            /// The word on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        // By hand: utoipa's derive does not see the `rename` this macro writes
        // (the word arrives as a macro fragment), and would publish the variant names.
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some(concat!("The ", $what, ".")))
                    .enum_values(Some(Self::WORDS.iter().copied()))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;

            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(UnknownWord {
                        kind: $what,
                        word: s.to_owned(),
                        expected: Self::WORDS,
                    }),
                }
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
    };
}

wire_enum! {
    /// An agent's status (SPEC §9).
    AgentStatus ("agent status") {
        /// A session is open and heartbeats arrive.
        Online = "online",
        /// The agent reports problems in its heartbeats.
        Degraded = "degraded",
        /// No live session.
        Offline = "offline",
        /// Its credentials were revoked; it is kept for history.
        Revoked = "revoked",
        /// Removed from the fleet view; kept in the audit log.
        Removed = "removed",
        /// Waiting in the approval queue.
        Pending = "pending",
        /// Two machines were caught sharing the identity; locked.
        Cloned = "cloned",
    }
}

wire_enum! {
    /// An enrollment token's state (SPEC §4).
    TokenState ("token state") {
        Active = "active",
        Exhausted = "exhausted",
        Expired = "expired",
        Revoked = "revoked",
    }
}

wire_enum! {
    /// An API key's state (SPEC §11).
    KeyState ("key state") {
        Active = "active",
        Expired = "expired",
        Revoked = "revoked",
    }
}

wire_enum! {
    /// What an API key or a user may do (SPEC §11): members read the fleet (and run
    /// probes within their scopes), admins do everything.
    Role ("role") {
        Admin = "admin",
        Member = "member",
    }
}

/// The least privilege, for request builders that start from `Default`.
impl Default for Role {
    fn default() -> Self {
        Role::Member
    }
}

wire_enum! {
    /// What a queued request asks for (SPEC §7, §9).
    ApprovalKind ("request kind") {
        /// A new machine without a credential.
        Enroll = "enroll",
        /// An agent whose certificate expired past the renewal grace.
        Renew = "renew",
    }
}

wire_enum! {
    /// Where a queued request stands.
    ApprovalStatus ("request status") {
        Pending = "pending",
        Approved = "approved",
        Denied = "denied",
        /// Approved and collected by the machine.
        Completed = "completed",
    }
}

wire_enum! {
    /// What kind of credential made a request.
    PrincipalKind ("principal kind") {
        ApiKey = "api_key",
        Agent = "agent",
        User = "user",
    }
}

/// `GET /api/v1/whoami`: the caller as the hub authenticated it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    pub kind: PrincipalKind,
    /// The key's or agent's id; users are known by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Keys and users have a role; agents do not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_on_the_wire_and_in_text() {
        for s in AgentStatus::ALL {
            let json = serde_json::to_string(s).unwrap_or_default();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(s.as_str().parse::<AgentStatus>().ok(), Some(*s));
            assert!(*s == s.as_str());
        }
        assert_eq!(
            "superuser".parse::<Role>().map_err(|e| e.to_string()),
            Err("unknown role \"superuser\": expected one of admin, member".to_owned())
        );
        assert!(serde_json::from_str::<Role>("\"root\"").is_err());
    }
}
