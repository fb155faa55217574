//! muster-ca: the hub's certificate authority.
//!
//! This crate owns every X.509 decision Muster makes: creating and loading the hub CA,
//! issuing the hub's TLS server certificate, turning an agent's CSR into a client
//! certificate, the agent-side key and CSR, and the hashes and pins that let an agent
//! trust the hub on first contact. It is pure and synchronous: no I/O, no clock other
//! than "now" when a certificate is issued, no global state.
//!
//! The invariant it keeps: an issued agent certificate carries only what the hub
//! decided (CN and URI SAN from the agent id, clientAuth, digitalSignature, validity,
//! a random serial). Nothing an agent put in its CSR except the P-256 public key ever
//! reaches a certificate, and that key is only accepted after the CSR's self-signature
//! verifies.

mod agent;
mod authority;
mod csr;
mod hash;
mod info;
mod pem;
mod proof;

pub use agent::{csr_for_key, key_public_sha256, new_key_and_csr};
pub use authority::{Authority, IssuedCert, NOT_BEFORE_BACKDATE};
pub use csr::csr_public_key_sha256;
pub use hash::CaHash;
pub use info::{CertInfo, cert_info, cert_info_der};
pub use proof::{proof_message, sign_proof};

/// Everything that can go wrong in the CA. Each variant says whose fault it is, so the
/// hub can decide what to tell a client and what to log.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CaError {
    /// The client sent a CSR we will not sign: not PEM, not exactly one
    /// `CERTIFICATE REQUEST` block, too large, trailing bytes, bad DER, or a
    /// self-signature that does not verify. The text is short and safe to send back to
    /// the client.
    #[error("invalid certificate request: {0}")]
    InvalidCsr(String),
    /// The CSR (or key) is well formed but uses a key type we do not accept: anything
    /// but ECDSA P-256 with an uncompressed point. Safe to send back to the client.
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
    /// A certificate given to us (CA certificate, PEM to inspect) could not be parsed or
    /// is not what it must be (e.g. a CA certificate without `CA:true`). Usually a
    /// configuration or data-directory problem on our own side.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// A private key given to us could not be parsed (not PKCS#8 PEM, unsupported
    /// algorithm) or does not belong to the certificate it came with.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A CA hash or pin string is malformed (wrong length, not hex). Typically an
    /// operator typo on the agent's command line.
    #[error("invalid CA hash: {0}")]
    InvalidHash(String),
    /// The caller passed an argument the CA cannot use: an agent id that is not a safe
    /// name, an empty or invalid server name, a validity of zero or beyond year 9999.
    /// A bug or misconfiguration on the caller's side, not the client's.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// Something that should not fail did (key generation, signing, encoding). Log it;
    /// do not send the text to clients.
    #[error("internal CA error: {0}")]
    Internal(String),
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests;
