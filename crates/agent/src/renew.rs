//! Certificate renewal (SPEC §9): at two thirds of its certificate's lifetime the
//! agent makes a new key pair and asks the hub to certify it.
//!
//! The new key is written (as a pending renewal) before the request leaves, and the
//! new credentials replace the old in one atomic step after the answer: a lost
//! answer is retried with the same key, which the hub recognises.

use std::time::{Duration, SystemTime};

use muster_proto::RenewRequest;

use crate::AgentError;
use crate::configdir::{ConfigDir, Credentials, PendingRenewal};

/// How long from now until `creds` should be renewed (zero when overdue).
pub fn due_in(dir: &ConfigDir, creds: &Credentials) -> Result<Duration, AgentError> {
    let info = muster_ca::cert_info(&creds.cert_pem)?;
    let not_after = to_system(info.not_after);
    let not_before = to_system(info.not_before);
    // The CA backdates `not_before` for clock skew; the useful life here starts
    // when the certificate arrived (its file's time), within the validity window.
    let start = dir
        .cert_written_at()
        .unwrap_or(not_before)
        .clamp(not_before, not_after);
    let life = not_after.duration_since(start).unwrap_or_default();
    let renew_at = start + life.mul_f64(2.0 / 3.0);
    Ok(renew_at
        .duration_since(SystemTime::now())
        .unwrap_or_default())
}

fn to_system(t: time::OffsetDateTime) -> SystemTime {
    let nanos = t.unix_timestamp_nanos();
    if nanos <= 0 {
        SystemTime::UNIX_EPOCH
    } else {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos as u64)
    }
}

/// Whether the certificate has expired (it can no longer open a TLS session).
pub fn expired(creds: &Credentials) -> Result<bool, AgentError> {
    let info = muster_ca::cert_info(&creds.cert_pem)?;
    Ok(to_system(info.not_after) <= SystemTime::now())
}

/// Whether a renewal started earlier for these credentials still awaits its answer.
pub fn pending(dir: &ConfigDir, creds: &Credentials) -> Result<bool, AgentError> {
    Ok(dir
        .load_pending_renewal()?
        .is_some_and(|p| p.generation == creds.config.generation))
}

/// Renew now; on success the config dir holds the new key, certificate and
/// generation, and they are returned.
pub async fn renew(dir: &ConfigDir, creds: &Credentials) -> Result<Credentials, AgentError> {
    let key_pem = match dir.load_pending_renewal()? {
        Some(p) if p.generation == creds.config.generation => p.key_pem,
        _ => {
            let (key_pem, _) = muster_ca::new_key_and_csr(&creds.config.agent_id)?;
            dir.store_pending_renewal(&PendingRenewal {
                generation: creds.config.generation,
                key_pem: key_pem.clone(),
            })?;
            key_pem
        }
    };
    let csr_pem = muster_ca::csr_for_key(&key_pem, &creds.config.agent_id)?;
    // An expired certificate cannot be presented in TLS: prove possession of its
    // key in the request instead (the hub allows this within its grace window).
    let (with_cert, expired_cert_pem, proof) = if expired(creds)? {
        use base64::Engine as _;
        let message = muster_ca::proof_message(&creds.config.agent_id, &csr_pem);
        let signature = muster_ca::sign_proof(&creds.key_pem, &message)?;
        let proof = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature);
        (false, Some(creds.cert_pem.clone()), Some(proof))
    } else {
        (true, None, None)
    };
    // Any hub of the fleet can renew: the pending key makes a retry elsewhere safe.
    let request = RenewRequest {
        csr_pem,
        generation: creds.config.generation,
        expired_cert_pem,
        proof,
    };
    let request = &request;
    let resp = match crate::hubs::first_answer(
        &creds.config.hubs(),
        |url| creds.client(Some(dir), url, Duration::from_secs(30), with_cert),
        |client| async move { client.renew(request).await },
    )
    .await?
    {
        muster_client::RenewOutcome::Renewed(r) => r,
        muster_client::RenewOutcome::Pending(p) => {
            return Err(AgentError::Pending {
                request_id: p.request_id,
            });
        }
    };
    let info = muster_ca::cert_info(&resp.cert_pem)?;
    if info.subject_cn != creds.config.agent_id
        || info.public_key_sha256 != muster_ca::key_public_sha256(&key_pem)?
    {
        return Err(AgentError::Client(muster_client::ClientError::Protocol(
            "the renewed certificate is not for this agent's new key".to_owned(),
        )));
    }
    let mut renewed = creds.clone();
    renewed.key_pem = key_pem;
    renewed.cert_pem = resp.cert_pem;
    renewed.config.generation = resp.generation;
    dir.store(&renewed)?;
    dir.clear_pending_renewal()?;
    tracing::info!(generation = resp.generation, expires = %resp.cert_expires_at, "certificate renewed");
    Ok(renewed)
}
