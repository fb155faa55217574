//! The Muster agent: its config dir, host facts, enrollment and status. (The live
//! session and renewal arrive with SPEC §9.)

pub mod configdir;
pub mod enroll;
pub mod envfile;
pub mod facts;
pub mod renew;
pub mod service;
pub mod session;
pub mod status;

pub use enroll::{EnrollOptions, EnrollReport, enroll};
pub use status::{Status, status};

/// What can stop an agent command, each with a message fit for one line.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The command was called in a way that cannot work.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] configdir::ConfigError),
    #[error(transparent)]
    Client(#[from] muster_client::ClientError),
    #[error("certificate: {0}")]
    Ca(#[from] muster_ca::CaError),
    /// No credentials in the config dir.
    #[error("this machine is not enrolled (no config in {0}); run `muster enroll` first")]
    NotEnrolled(std::path::PathBuf),
    /// The hub queued the enrollment for an admin's approval.
    #[error("enrollment {request_id} is waiting for an admin's approval")]
    Pending { request_id: String },
    /// The hub revoked this agent's credentials: stop, do not retry.
    #[error("the hub revoked this agent: {0}")]
    Revoked(String),
    /// The hub refused the session for good.
    #[error("the hub refused the session: {0}")]
    Refused(String),
    #[error(transparent)]
    Session(#[from] muster_client::SessionError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
