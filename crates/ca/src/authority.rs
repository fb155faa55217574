//! The hub CA itself: its certificate and key, and the two kinds of certificate it
//! issues (the hub's own TLS server certificate and agents' client certificates).
//!
//! Every certificate issued here gets an explicit random serial and an explicit
//! validity window: rcgen's defaults (a serial derived from the public key, validity
//! 1975–4096) would make re-issued certificates collide and never expire.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData as _, SanType,
    SerialNumber,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::{CaError, CaHash, csr, hex, pem, sha256};

/// How long a freshly generated hub CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// How far into the past `not_before` is set, so an agent whose clock runs a little
/// behind the hub's does not reject a certificate issued a moment ago. Public: an
/// agent reads the hub's clock at issue back from it ([`crate::CertInfo::issued_at`]).
pub const NOT_BEFORE_BACKDATE: time::Duration = time::Duration::minutes(5);

/// Upper bound on an agent id, so it fits the 64-character limit RFC 5280 puts on a CN.
const MAX_AGENT_ID_LEN: usize = 64;

/// The hub CA: an ECDSA P-256 key and its self-signed certificate (or any CA
/// certificate and key loaded with [`Authority::from_pem`]).
pub struct Authority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    /// rcgen's view of the CA: its subject, key identifier (copied into issued
    /// certificates' authority key identifier) and signing key.
    issuer: Issuer<'static, KeyPair>,
    hash: CaHash,
}

/// An agent certificate just issued by [`Authority::sign_agent_csr`], with the facts
/// the hub records about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Serial number, lowercase hex (32 digits): what revocation and audit refer to.
    pub serial_hex: String,
    /// End of validity, to the second, exactly as written in the certificate.
    pub not_after: OffsetDateTime,
    /// SHA-256 of the subject public key info DER, lowercase hex: identifies the agent's
    /// key pair across renewals that reuse the key.
    pub public_key_sha256: String,
}

impl Authority {
    /// Creates a new CA: fresh ECDSA P-256 key, self-signed certificate valid for 10
    /// years, `CA:true, pathlen:0`, key usage keyCertSign and cRLSign. The subject CN is
    /// `common_name`, or `Muster CA <8 random hex digits>` when that is blank (the
    /// random part tells two hubs' CAs apart in a certificate viewer).
    pub fn generate(common_name: &str) -> Result<Self, CaError> {
        let common_name = match common_name.trim() {
            "" => format!("Muster CA {}", hex(&rand::random::<[u8; 4]>())),
            name => name.to_owned(),
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Internal(format!("generating the CA key: {e}")))?;

        let (not_before, not_after) = validity_window(CA_VALIDITY)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(&common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial().0);
        params.not_before = not_before;
        params.not_after = not_after;

        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Internal(format!("self-signing the CA certificate: {e}")))?;
        // Go through the same constructor as a loaded CA so both paths issue alike.
        Self::from_parts(cert.der().clone(), key)
    }

    /// Loads a CA from its certificate (first `CERTIFICATE` block) and its PKCS#8
    /// private key. Refuses a certificate without `CA:true`, or whose key usage (if
    /// present) forbids certificate signing, and a key that is not the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let cert_der = pem::first_certificate(cert_pem)?;
        let key_der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
            CaError::InvalidKey("no readable PKCS#8 \"PRIVATE KEY\" block in PEM".into())
        })?;
        let key = KeyPair::try_from(&key_der)
            .map_err(|e| CaError::InvalidKey(format!("unusable private key: {e}")))?;
        Self::from_parts(cert_der, key)
    }

    fn from_parts(cert_der: CertificateDer<'static>, key: KeyPair) -> Result<Self, CaError> {
        {
            let cert = pem::parse_certificate(&cert_der)?;
            let ca = cert
                .basic_constraints()
                .map_err(|e| CaError::InvalidCertificate(format!("basic constraints: {e}")))?;
            if !ca.is_some_and(|bc| bc.value.ca) {
                return Err(CaError::InvalidCertificate(
                    "not a CA certificate (no basicConstraints CA:true)".into(),
                ));
            }
            let usage = cert
                .key_usage()
                .map_err(|e| CaError::InvalidCertificate(format!("key usage: {e}")))?;
            if usage.is_some_and(|ku| !ku.value.key_cert_sign()) {
                return Err(CaError::InvalidCertificate(
                    "the certificate's key usage does not allow signing certificates".into(),
                ));
            }
            if key.subject_public_key_info() != cert.public_key().raw {
                return Err(CaError::InvalidKey(
                    "the private key does not belong to the CA certificate".into(),
                ));
            }
        }

        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| CaError::InvalidCertificate(format!("unusable as issuer: {e}")))?;
        Ok(Self {
            cert_pem: pem::encode("CERTIFICATE", &cert_der),
            hash: CaHash::of_der(&cert_der),
            cert_der,
            issuer,
        })
    }

    /// The CA certificate, PEM (normalised: one block, 64-column lines).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA private key, PKCS#8 PEM. Secret: the caller encrypts it before storing.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// SHA-256 of the CA certificate's DER: what agents pin.
    pub fn hash(&self) -> CaHash {
        self.hash
    }

    /// Issues a TLS server certificate for the hub: a fresh P-256 key; SANs from
    /// `names` (strings that parse as an IP address become IP SANs, the rest DNS
    /// names); CN = the first name; serverAuth only; digitalSignature; valid from five
    /// minutes ago for `validity`. Returns `(cert_pem, key_pem)`, the key as PKCS#8.
    pub fn issue_server_cert(
        &self,
        names: &[String],
        validity: Duration,
    ) -> Result<(String, String), CaError> {
        let Some(first) = names.first() else {
            return Err(CaError::InvalidParameter(
                "a server certificate needs at least one DNS name or IP address".into(),
            ));
        };
        let mut sans = Vec::with_capacity(names.len());
        for name in names {
            let name = name.trim();
            if name.is_empty() {
                return Err(CaError::InvalidParameter("empty server name".into()));
            }
            sans.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(Ia5String::try_from(name).map_err(|_| {
                    CaError::InvalidParameter(format!("not a valid DNS name: {name:?}"))
                })?),
            });
        }

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Internal(format!("generating the server key: {e}")))?;
        let (not_before, not_after) = validity_window(validity)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(first.trim());
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial().0);
        params.not_before = not_before;
        params.not_after = not_after;

        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CaError::Internal(format!("signing the server certificate: {e}")))?;
        Ok((pem::encode("CERTIFICATE", cert.der()), key.serialize_pem()))
    }

    /// Verifies an agent's CSR and issues its client certificate.
    ///
    /// The CSR must be exactly one `CERTIFICATE REQUEST` PEM block of at most 16 KiB
    /// with no trailing DER, carry an ECDSA P-256 key (uncompressed point), and be
    /// signed by that key. Everything else it asks for is ignored: the certificate has
    /// CN = `agent_id`, one URI SAN `muster://agent/<agent_id>`, EKU clientAuth only,
    /// key usage digitalSignature, `CA:false`, a random 16-byte serial, an authority key
    /// identifier, and is valid from five minutes ago until now + `validity`.
    ///
    /// `agent_id` is chosen by the hub; it must be 1–64 characters of
    /// `A-Z a-z 0-9 . _ -` so it is safe in both a CN and a URI.
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        agent_id: &str,
        validity: Duration,
    ) -> Result<IssuedCert, CaError> {
        check_agent_id(agent_id)?;
        let (not_before, not_after) = validity_window(validity)?;
        let spki_der = csr::verified_p256_spki(csr_pem)?;
        let spki = rcgen::SubjectPublicKeyInfo::from_der(&spki_der)
            .map_err(|e| CaError::Internal(format!("re-reading a checked public key: {e}")))?;

        let uri = Ia5String::try_from(agent_uri(agent_id))
            .map_err(|_| CaError::InvalidParameter("agent id is not ASCII".into()))?;
        let (serial, serial_bytes) = random_serial();
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(agent_id);
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial);
        params.not_before = not_before;
        params.not_after = not_after;

        let cert = params
            .signed_by(&spki, &self.issuer)
            .map_err(|e| CaError::Internal(format!("signing the agent certificate: {e}")))?;
        Ok(IssuedCert {
            cert_pem: pem::encode("CERTIFICATE", cert.der()),
            serial_hex: hex(&serial_bytes),
            not_after,
            public_key_sha256: hex(&sha256(&spki.subject_public_key_info())),
        })
    }
}

impl fmt::Debug for Authority {
    /// Shows which CA this is, never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("hash", &self.hash.to_string())
            .finish_non_exhaustive()
    }
}

/// The URI SAN that names an agent in its certificate.
fn agent_uri(agent_id: &str) -> String {
    format!("muster://agent/{agent_id}")
}

fn check_agent_id(agent_id: &str) -> Result<(), CaError> {
    let ok = !agent_id.is_empty()
        && agent_id.len() <= MAX_AGENT_ID_LEN
        && agent_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CaError::InvalidParameter(format!(
            "agent id must be 1-{MAX_AGENT_ID_LEN} characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

fn common_name_dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A random positive serial of exactly 16 bytes, and its bytes.
fn random_serial() -> (SerialNumber, [u8; 16]) {
    let mut bytes: [u8; 16] = rand::random();
    // Clear the top bit so DER needs no 0x00 sign byte (the serial stays positive and
    // 16 bytes long), and set the next one so it never shrinks to 15: what we report as
    // `serial_hex` is then exactly what the certificate says. 126 random bits remain.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    (SerialNumber::from_slice(&bytes), bytes)
}

/// `(now - NOT_BEFORE_BACKDATE, now + validity)`, both whole seconds because that is all X.509
/// time can say, so the `not_after` we report equals the one in the certificate.
fn validity_window(validity: Duration) -> Result<(OffsetDateTime, OffsetDateTime), CaError> {
    if validity.is_zero() {
        return Err(CaError::InvalidParameter(
            "validity must be positive".into(),
        ));
    }
    let now = OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp())
        .map_err(|e| CaError::Internal(format!("reading the clock: {e}")))?;
    let not_after = time::Duration::try_from(validity)
        .ok()
        .and_then(|v| now.checked_add(v))
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| CaError::InvalidParameter("validity reaches past year 9999".into()))?;
    let not_before = now
        .checked_sub(NOT_BEFORE_BACKDATE)
        .ok_or_else(|| CaError::Internal("the clock is out of range".into()))?;
    Ok((not_before, not_after))
}
