//! Reading facts out of a certificate for status displays and consistency checks
//! (is this my certificate, when does it expire, which key does it certify).

use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use crate::{CaError, hex, pem, sha256};

/// Facts about a PEM certificate, for status displays and checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The first subject CN, or empty if the subject has none.
    pub subject_cn: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Serial number, lowercase hex, without a DER sign byte: for certificates this
    /// crate issues it equals [`crate::IssuedCert::serial_hex`].
    pub serial_hex: String,
    /// SHA-256 of the subject public key info DER, lowercase hex: compare with
    /// [`crate::key_public_sha256`] to check a key and a certificate belong together.
    pub public_key_sha256: String,
    /// URI subject alternative names, in order (an agent certificate has exactly one,
    /// `muster://agent/<id>`).
    pub uri_sans: Vec<String>,
}

impl CertInfo {
    /// When a certificate of this crate's [`crate::Authority`] was issued, on the
    /// issuing hub's clock (to the second): `not_before` plus the backdate, within
    /// the validity window. An agent learns the hub's time from a fresh one.
    pub fn issued_at(&self) -> OffsetDateTime {
        self.not_before
            .checked_add(crate::NOT_BEFORE_BACKDATE)
            .map_or(self.not_before, |t| t.min(self.not_after))
    }
}

/// Reads [`CertInfo`] from the first `CERTIFICATE` block in `cert_pem`.
pub fn cert_info(cert_pem: &str) -> Result<CertInfo, CaError> {
    let der = pem::first_certificate(cert_pem)?;
    cert_info_der(&der)
}

/// [`cert_info`] for a DER certificate, as a TLS peer presents it.
pub fn cert_info_der(der: &[u8]) -> Result<CertInfo, CaError> {
    let cert = pem::parse_certificate(der)?;

    let subject_cn = match cert.subject().iter_common_name().next() {
        Some(cn) => cn
            .as_str()
            .map_err(|_| CaError::InvalidCertificate("subject CN is not a string".into()))?
            .to_owned(),
        None => String::new(),
    };

    let uri_sans = match cert
        .subject_alternative_name()
        .map_err(|e| CaError::InvalidCertificate(format!("subject alternative name: {e}")))?
    {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some((*uri).to_owned()),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };

    // DER puts a 0x00 in front of a serial whose top bit is set; it is not part of
    // the number.
    let serial = cert.raw_serial();
    let serial = match serial {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => serial,
    };

    Ok(CertInfo {
        subject_cn,
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        serial_hex: hex(serial),
        public_key_sha256: hex(&sha256(cert.public_key().raw)),
        uri_sans,
    })
}
