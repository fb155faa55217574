//! PEM in and out. Reading goes through rustls-pki-types (strict base64, typed
//! sections); writing is ours so every certificate we hand out looks the same
//! (64-column lines, LF endings) whether we made it or loaded it.

use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::CaError;

/// Encodes `der` as one PEM block with the given label.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // base64 output is ASCII, so splitting on byte boundaries is safe.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// DER of the first `CERTIFICATE` block in `pem`.
pub(crate) fn first_certificate(pem: &str) -> Result<CertificateDer<'static>, CaError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        CaError::InvalidCertificate(format!("no readable CERTIFICATE block in PEM: {e}"))
    })
}

/// Parses `der` as one X.509 certificate with nothing after it.
pub(crate) fn parse_certificate(
    der: &[u8],
) -> Result<x509_parser::certificate::X509Certificate<'_>, CaError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CaError::InvalidCertificate(format!("unparseable certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(CaError::InvalidCertificate(
            "trailing bytes after the certificate".into(),
        ));
    }
    Ok(cert)
}
