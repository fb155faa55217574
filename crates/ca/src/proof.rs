//! Proof of possession for renewing an expired certificate (SPEC §9).
//!
//! An agent that was offline past its certificate's expiry cannot present it in TLS
//! any more. It proves it still holds the certificate's key by signing a message
//! that binds its agent id and the new CSR; the hub checks that the certificate was
//! issued by its CA and that the signature is by the certificate's key.

use rcgen::{KeyPair, SigningKey as _};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject as _;

use crate::{Authority, CaError, CertInfo, sha256};

/// The message an agent signs: what it renews, for whom, bound to the new key's CSR.
pub fn proof_message(agent_id: &str, csr_pem: &str) -> Vec<u8> {
    let mut m = b"muster expired-renewal v1\n".to_vec();
    m.extend_from_slice(agent_id.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(&sha256(csr_pem.as_bytes()));
    m
}

/// Sign `message` with a PKCS#8 PEM P-256 key (ECDSA, SHA-256, ASN.1 DER signature).
pub fn sign_proof(key_pem: &str, message: &[u8]) -> Result<Vec<u8>, CaError> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| CaError::InvalidKey("no readable PKCS#8 private key".into()))?;
    let key = KeyPair::try_from(&der)
        .map_err(|e| CaError::InvalidKey(format!("unusable private key: {e}")))?;
    key.sign(message)
        .map_err(|e| CaError::Internal(format!("signing the proof: {e}")))
}

impl Authority {
    /// Check that `cert_pem` was issued by this CA (its validity is not checked: it
    /// is expected to have expired) and that `signature` over `message` was made by
    /// its key. Returns the certificate's facts for the caller's own checks.
    pub fn verify_proof(
        &self,
        cert_pem: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<CertInfo, CaError> {
        let der = crate::pem::first_certificate(cert_pem)?;
        let cert = crate::pem::parse_certificate(&der)?;
        let ca = crate::pem::parse_certificate(self.cert_der())?;
        cert.verify_signature(Some(ca.public_key())).map_err(|_| {
            CaError::InvalidCertificate("the certificate was not issued by this hub's CA".into())
        })?;
        let point = cert.public_key().subject_public_key.data.as_ref();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
            .verify(message, signature)
            .map_err(|_| {
                CaError::InvalidKey("the proof is not signed by the certificate's key".into())
            })?;
        crate::cert_info_der(&der)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_certified_key_and_our_ca() {
        let ca = Authority::generate("Test CA").unwrap();
        let (key, csr) = crate::new_key_and_csr("a").unwrap();
        let issued = ca
            .sign_agent_csr(&csr, "agent-1", std::time::Duration::from_secs(60))
            .unwrap();
        let msg = proof_message("agent-1", "new csr");
        let sig = sign_proof(&key, &msg).unwrap();
        let info = ca.verify_proof(&issued.cert_pem, &msg, &sig).unwrap();
        assert_eq!(info.subject_cn, "agent-1");
        // Another message, another key, another CA: all refused.
        assert!(
            ca.verify_proof(&issued.cert_pem, &proof_message("agent-1", "other"), &sig)
                .is_err()
        );
        let (other_key, _) = crate::new_key_and_csr("b").unwrap();
        let forged = sign_proof(&other_key, &msg).unwrap();
        assert!(ca.verify_proof(&issued.cert_pem, &msg, &forged).is_err());
        let other_ca = Authority::generate("Other CA").unwrap();
        assert!(other_ca.verify_proof(&issued.cert_pem, &msg, &sig).is_err());
    }
}
