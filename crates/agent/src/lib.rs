//! The Muster agent: its config dir, host facts, enrollment, status, the live
//! session with the hub, certificate renewal and the probes it offers (SPEC §8, §9,
//! §15).

pub mod configdir;
pub mod enroll;
pub mod envfile;
pub mod facts;
pub mod hubs;
pub mod probes;
pub mod renew;
pub mod service;
pub mod session;
pub mod status;
pub mod update;
pub mod update_cmd;

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
    /// Installing or removing the agent's service failed.
    #[error(transparent)]
    Service(#[from] service::ServiceError),
}

/// `muster unenroll` (SPEC §6): revoke this machine's credentials at the hub, then
/// delete the config dir. If the hub cannot be reached nothing is deleted unless
/// `force`: credentials must not vanish while the hub still trusts them.
pub async fn unenroll(dir: &configdir::ConfigDir, force: bool) -> Result<String, AgentError> {
    let creds = dir
        .load()?
        .ok_or_else(|| AgentError::NotEnrolled(dir.path().to_path_buf()))?;
    match revoke_at_hub(dir, &creds).await {
        Ok(_) => {}
        Err(e) if force => {
            tracing::warn!(error = %e, "could not reach the hub; deleting the local credentials anyway")
        }
        Err(e) => {
            return Err(AgentError::Usage(format!(
                "{e}; nothing was deleted (use --force to delete the local credentials anyway)"
            )));
        }
    }
    dir.remove_all()?;
    Ok(creds.config.agent_id)
}

/// Revoke `creds` at their hub, as that agent (key and client certificate): true
/// when revoked now, false when the hub had already revoked or replaced them.
pub(crate) async fn revoke_at_hub(
    dir: &configdir::ConfigDir,
    creds: &configdir::Credentials,
) -> Result<bool, muster_client::ClientError> {
    let unenrolled = hubs::first_answer(
        &creds.config.hubs(),
        |url| creds.client(Some(dir), url, std::time::Duration::from_secs(15), true),
        |client| async move { client.unenroll().await },
    )
    .await;
    match unenrolled {
        Ok(()) => Ok(true),
        // Already revoked or replaced at the hub: nothing left to revoke.
        Err(e)
            if matches!(
                e.code(),
                Some(muster_proto::codes::AGENT_REVOKED | muster_proto::codes::KEY_INVALID)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
