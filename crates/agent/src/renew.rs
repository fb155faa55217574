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

/// The hub's clock as this agent last heard it (`welcome` and `ack` carry it), as an
/// offset from ours. The hub judges a certificate's validity on its own clock, so
/// the agent judges expiry and renewal times on it too: an agent whose clock runs
/// hours ahead would otherwise take a valid certificate for expired, or a fresh
/// one for overdue, and renew in a loop. Before the agent has heard the hub, the
/// offset is zero (its own clock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubClock {
    offset_ms: i64,
}

/// The largest offset taken from the hub; the value is the peer's to send, and a
/// clock off by more than this is not something to compute with.
const MAX_OFFSET_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

impl HubClock {
    /// Learn the hub's time from a message that just arrived.
    pub fn learn(&mut self, hub_time_ms: i64) {
        let ours = ms_since_epoch(SystemTime::now());
        self.offset_ms = hub_time_ms
            .saturating_sub(ours)
            .clamp(-MAX_OFFSET_MS, MAX_OFFSET_MS);
    }

    /// How far the hub's clock is off ours, ahead or behind.
    pub fn offset(&self) -> Duration {
        Duration::from_millis(self.offset_ms.unsigned_abs())
    }

    /// Now, on the hub's clock.
    pub fn now(&self) -> SystemTime {
        self.on_hub_clock(SystemTime::now())
    }

    /// A time read on our clock, moved to the hub's.
    fn on_hub_clock(self, ours: SystemTime) -> SystemTime {
        let by = Duration::from_millis(self.offset_ms.unsigned_abs());
        let moved = if self.offset_ms >= 0 {
            ours.checked_add(by)
        } else {
            ours.checked_sub(by)
        };
        moved.unwrap_or(ours)
    }
}

fn ms_since_epoch(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// How long from now until `creds` should be renewed (zero when overdue), on the
/// hub's clock.
pub fn due_in(creds: &Credentials, clock: HubClock) -> Result<Duration, AgentError> {
    let info = muster_ca::cert_info(&creds.cert_pem)?;
    let not_after = to_system(info.not_after);
    // The useful life starts when the hub issued the certificate (the CA backdates
    // `not_before` for skew), a time on the hub's clock like `not_after`. Not the
    // file's time: that is our clock's, and wrong by whatever it was off when
    // the file was written.
    let issued = to_system(info.issued_at());
    let life = not_after.duration_since(issued).unwrap_or_default();
    let renew_at = issued + life.mul_f64(2.0 / 3.0);
    Ok(renew_at.duration_since(clock.now()).unwrap_or_default())
}

fn to_system(t: time::OffsetDateTime) -> SystemTime {
    // Seconds, not nanoseconds: a certificate may end in year 9999, past what a
    // u64 of nanoseconds holds.
    match u64::try_from(t.unix_timestamp()) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::new(secs, t.nanosecond()),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

/// Whether the certificate has expired on the hub's clock (it can no longer open a
/// TLS session).
pub fn expired(creds: &Credentials, clock: HubClock) -> Result<bool, AgentError> {
    let info = muster_ca::cert_info(&creds.cert_pem)?;
    Ok(to_system(info.not_after) <= clock.now())
}

/// Whether a renewal started earlier for these credentials still awaits its answer.
pub fn pending(dir: &ConfigDir, creds: &Credentials) -> Result<bool, AgentError> {
    Ok(dir
        .load_pending_renewal()?
        .is_some_and(|p| p.generation == creds.config.generation))
}

/// Renew now; on success the config dir holds the new key, certificate and
/// generation, and they are returned, and `clock` has learned the hub's time from
/// the new certificate.
pub async fn renew(
    dir: &ConfigDir,
    creds: &Credentials,
    clock: &mut HubClock,
) -> Result<Credentials, AgentError> {
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
    // When the hub's clock says the certificate is still valid (ours runs ahead
    // and we have not heard the hub's yet), it says so, and TLS with it works.
    let outcome = if expired(creds, *clock)? {
        match ask(dir, creds, &csr_pem, true).await {
            Err(AgentError::Client(e))
                if e.code() == Some(muster_proto::codes::CERT_NOT_EXPIRED) =>
            {
                tracing::info!(
                    "the hub's clock says the certificate is still valid; renewing over TLS with it"
                );
                ask(dir, creds, &csr_pem, false).await?
            }
            other => other?,
        }
    } else {
        ask(dir, creds, &csr_pem, false).await?
    };
    let resp = match outcome {
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
    // The certificate was issued a moment ago: it carries the hub's clock, so a
    // jump of ours since the last `ack` cannot make the new one look overdue.
    clock.learn(ms_since_epoch(to_system(info.issued_at())));
    let mut renewed = creds.clone();
    renewed.key_pem = key_pem;
    renewed.cert_pem = resp.cert_pem;
    renewed.config.generation = resp.generation;
    dir.store(&renewed)?;
    dir.clear_pending_renewal()?;
    tracing::info!(generation = resp.generation, expires = %resp.cert_expires_at, "certificate renewed");
    Ok(renewed)
}

/// One renewal request to the first hub that answers: over TLS with the current
/// certificate, or (`with_proof`) with a proof of its key instead.
async fn ask(
    dir: &ConfigDir,
    creds: &Credentials,
    csr_pem: &str,
    with_proof: bool,
) -> Result<muster_client::RenewOutcome, AgentError> {
    let (expired_cert_pem, proof) = if with_proof {
        use base64::Engine as _;
        let message = muster_ca::proof_message(&creds.config.agent_id, csr_pem);
        let signature = muster_ca::sign_proof(&creds.key_pem, &message)?;
        let proof = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature);
        (Some(creds.cert_pem.clone()), Some(proof))
    } else {
        (None, None)
    };
    // Any hub of the fleet can renew: the pending key makes a retry elsewhere safe.
    let request = RenewRequest {
        csr_pem: csr_pem.to_owned(),
        generation: creds.config.generation,
        expired_cert_pem,
        proof,
    };
    let request = &request;
    Ok(crate::hubs::first_answer(
        &creds.config.hubs(),
        |url| creds.client(Some(dir), url, Duration::from_secs(30), !with_proof),
        |client| async move { client.renew(request).await },
    )
    .await?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(t: SystemTime) -> i64 {
        ms_since_epoch(t)
    }

    #[test]
    fn the_hub_clock_moves_our_times_by_the_offset_heard() {
        let mut clock = HubClock::default();
        let now = SystemTime::now();
        assert!(clock.on_hub_clock(now) == now);
        clock.learn(ms(now) - 6 * 3600 * 1000);
        let behind = ms(now) - ms(clock.on_hub_clock(now));
        assert!((6 * 3600 * 1000 - 1000..=6 * 3600 * 1000 + 1000).contains(&behind));
        assert!(clock.offset() >= Duration::from_secs(6 * 3600 - 1));
        // A value no hub sends is clamped, not overflowed.
        clock.learn(i64::MIN);
        let _ = clock.now();
        clock.learn(i64::MAX);
        let _ = clock.now();
        assert_eq!(clock.offset(), Duration::from_millis(MAX_OFFSET_MS as u64));
    }

    #[test]
    fn certificate_times_up_to_year_9999_convert_without_wrapping() {
        let end = time::OffsetDateTime::from_unix_timestamp(253_402_214_400).unwrap();
        assert_eq!(end.year(), 9999);
        let t = to_system(end);
        assert!(t > SystemTime::now() + Duration::from_secs(7000 * 365 * 24 * 3600));
        assert_eq!(
            to_system(time::OffsetDateTime::UNIX_EPOCH),
            SystemTime::UNIX_EPOCH
        );
    }
}
