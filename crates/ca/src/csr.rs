//! Reading an agent's CSR: the one place untrusted bytes from the network meet the CA.
//!
//! The output is only the subject public key, and only after the PEM framing, the DER,
//! the key type and the self-signature have all been checked. Everything else the CSR
//! carries (subject, requested extensions, attributes) is deliberately dropped here so
//! no later code can be tempted to copy it into a certificate.

use rustls_pki_types::pem::{PemObject as _, SectionKind};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED448, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::CaError;

/// Largest CSR PEM we read. A P-256 CSR is under 1 KiB; the cap bounds the work an
/// unauthenticated client can make us do.
pub(crate) const MAX_CSR_PEM_BYTES: usize = 16 * 1024;

/// Length of an uncompressed SEC1 P-256 point: 0x04 || X (32) || Y (32).
const P256_UNCOMPRESSED_LEN: usize = 65;

/// Parses and verifies `csr_pem`; returns the DER of its SubjectPublicKeyInfo, which
/// is guaranteed to be ECDSA P-256 with an uncompressed point whose owner signed the
/// request.
pub(crate) fn verified_p256_spki(csr_pem: &str) -> Result<Vec<u8>, CaError> {
    let der = single_csr_block(csr_pem)?;
    let (rest, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|_| CaError::InvalidCsr("not a valid PKCS#10 certificate request".into()))?;
    if !rest.is_empty() {
        return Err(CaError::InvalidCsr(
            "trailing bytes after the certificate request".into(),
        ));
    }

    let spki = &csr.certification_request_info.subject_pki;
    // The key type is checked before the signature so that a client with, say, an RSA
    // key learns what is wrong rather than just "signature does not verify".
    check_p256(spki)?;
    csr.verify_signature().map_err(|_| {
        CaError::InvalidCsr("the request's signature does not verify with its key".into())
    })?;
    Ok(spki.raw.to_vec())
}

/// The DER of the one and only `CERTIFICATE REQUEST` block in `pem`.
fn single_csr_block(pem: &str) -> Result<Vec<u8>, CaError> {
    if pem.len() > MAX_CSR_PEM_BYTES {
        return Err(CaError::InvalidCsr(format!(
            "request is larger than {} KiB",
            MAX_CSR_PEM_BYTES / 1024
        )));
    }
    // rustls-pki-types silently skips blocks with labels it does not know (e.g.
    // "NEW CERTIFICATE REQUEST"), so count BEGIN lines ourselves to insist on one block.
    if pem.matches("-----BEGIN ").count() != 1 {
        return Err(CaError::InvalidCsr(
            "expected exactly one CERTIFICATE REQUEST PEM block".into(),
        ));
    }
    let mut sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes());
    match (sections.next(), sections.next()) {
        (Some(Ok((SectionKind::Csr, der))), None) => Ok(der),
        (Some(Err(_)), _) => Err(CaError::InvalidCsr("malformed PEM".into())),
        _ => Err(CaError::InvalidCsr(
            "expected exactly one CERTIFICATE REQUEST PEM block".into(),
        )),
    }
}

/// Refuses anything but id-ecPublicKey on prime256v1 with a 65-byte uncompressed point.
fn check_p256(spki: &SubjectPublicKeyInfo<'_>) -> Result<(), CaError> {
    let alg = &spki.algorithm.algorithm;
    if *alg != OID_KEY_TYPE_EC_PUBLIC_KEY {
        let got = if *alg == OID_PKCS1_RSAENCRYPTION {
            "RSA".to_owned()
        } else if *alg == OID_SIG_ED25519 {
            "Ed25519".to_owned()
        } else if *alg == OID_SIG_ED448 {
            "Ed448".to_owned()
        } else {
            format!("key algorithm {}", alg.to_id_string())
        };
        return Err(unsupported(&got));
    }

    // Named curves only: explicit curve parameters are a classic source of parser and
    // validation bugs and nobody legitimately uses them.
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    let Some(curve) = curve else {
        return Err(unsupported(
            "ECDSA with explicit or missing curve parameters",
        ));
    };
    if curve != OID_EC_P256 {
        let got = if curve == OID_NIST_EC_P384 {
            "ECDSA P-384".to_owned()
        } else if curve == OID_NIST_EC_P521 {
            "ECDSA P-521".to_owned()
        } else {
            format!("ECDSA on curve {}", curve.to_id_string())
        };
        return Err(unsupported(&got));
    }

    let point = &spki.subject_public_key;
    if point.unused_bits != 0 {
        return Err(CaError::InvalidCsr(
            "malformed public key bit string".into(),
        ));
    }
    if point.data.len() != P256_UNCOMPRESSED_LEN || point.data.first() != Some(&0x04) {
        return Err(CaError::UnsupportedKey(
            "only uncompressed ECDSA P-256 public keys (65-byte points) are accepted".into(),
        ));
    }
    Ok(())
}

fn unsupported(got: &str) -> CaError {
    CaError::UnsupportedKey(format!("only ECDSA P-256 keys are accepted, got {got}"))
}

/// SHA-256 (lowercase hex) of the public key of a CSR whose self-signature verifies
/// and whose key is P-256: the same value [`crate::IssuedCert::public_key_sha256`]
/// would carry. Lets the hub bind a queued request to the requester's key.
pub fn csr_public_key_sha256(csr_pem: &str) -> Result<String, CaError> {
    Ok(crate::hex(&crate::sha256(&verified_p256_spki(csr_pem)?)))
}
