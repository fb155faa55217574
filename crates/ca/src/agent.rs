//! The agent's side of issuance: making its key pair and CSR, and checking later that
//! the key on disk is the one its certificate certifies.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject as _;

use crate::{CaError, hex, sha256};

/// A fresh ECDSA P-256 key pair and a CSR for it (subject CN = `common_name`, no
/// extensions; the hub ignores the subject anyway but it helps when reading logs).
/// Returns `(key_pem, csr_pem)`, the key as PKCS#8.
pub fn new_key_and_csr(common_name: &str) -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CaError::Internal(format!("generating a key: {e}")))?;
    let csr_pem = csr(&key, common_name)?;
    Ok((key.serialize_pem(), csr_pem))
}

/// A CSR for an existing PKCS#8 PEM key: an enrollment retried after a lost answer
/// must present the same key pair as the first attempt.
pub fn csr_for_key(key_pem: &str, common_name: &str) -> Result<String, CaError> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
        CaError::InvalidKey("no readable PKCS#8 \"PRIVATE KEY\" block in PEM".into())
    })?;
    let key = KeyPair::try_from(&der)
        .map_err(|e| CaError::InvalidKey(format!("unusable private key: {e}")))?;
    csr(&key, common_name)
}

fn csr(key: &KeyPair, common_name: &str) -> Result<String, CaError> {
    let mut params = CertificateParams::default();
    // Replace rcgen's default subject ("rcgen self signed cert").
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(key)
        .map_err(|e| CaError::Internal(format!("building the CSR: {e}")))?;
    csr.pem()
        .map_err(|e| CaError::Internal(format!("encoding the CSR: {e}")))
}

/// SHA-256 (lowercase hex) of the SubjectPublicKeyInfo DER of the public half of a
/// PKCS#8 PEM private key, so the agent can check that `key.pem` and `cert.pem` belong
/// together (compare with [`crate::CertInfo::public_key_sha256`]).
pub fn key_public_sha256(key_pem: &str) -> Result<String, CaError> {
    use rcgen::PublicKeyData as _;
    let der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
        CaError::InvalidKey("no readable PKCS#8 \"PRIVATE KEY\" block in PEM".into())
    })?;
    let key = KeyPair::try_from(&der)
        .map_err(|e| CaError::InvalidKey(format!("unusable private key: {e}")))?;
    Ok(hex(&sha256(&key.subject_public_key_info())))
}
