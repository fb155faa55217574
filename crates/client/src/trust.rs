//! How a client decides that it talks to the right hub, before any secret leaves.
//!
//! A pin (from a token) or a full CA hash is checked inside the TLS handshake: the
//! hub sends its CA certificate in the chain, the verifier finds the one whose
//! SHA-256 matches, and verifies the server certificate against it. A mismatch fails
//! the handshake, so the request carrying the token is never written.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use muster_ca::CaHash;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// The handshake-signature half of a `ServerCertVerifier`: the same for every
/// verifier here (the provider's algorithms); only the certificate check differs.
macro_rules! handshake_signatures_via_provider {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// What the client trusts to identify the hub.
#[derive(Clone)]
pub enum Trust {
    /// The 22-character pin carried in an enrollment token (first 16 bytes of the CA hash).
    Pin(String),
    /// The full CA hash (`--ca-hash`, `MUSTER_CA_HASH`).
    Hash(CaHash),
    /// The CA certificate itself (`--ca-file`, or the `ca.pem` of an enrolled agent).
    CaPem(String),
    /// No verification: labs only (`--insecure-skip-verify`).
    Insecure,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trust::Pin(p) => write!(f, "Pin({p})"),
            Trust::Hash(h) => write!(f, "Hash({h})"),
            Trust::CaPem(_) => f.write_str("CaPem(..)"),
            Trust::Insecure => f.write_str("Insecure"),
        }
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Set when a handshake failed because the hub's CA did not match: lets the client
/// report that precisely rather than as a generic connection error.
#[derive(Debug, Default)]
pub(crate) struct MismatchFlag(AtomicBool);

impl MismatchFlag {
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
enum Expected {
    Pin(String),
    Hash(CaHash),
}

#[derive(Debug)]
pub(crate) struct PinnedCaVerifier {
    expected: Expected,
    provider: Arc<CryptoProvider>,
    mismatch: Arc<MismatchFlag>,
    /// The verifier for the CA that matched, built once.
    matched: OnceLock<(Vec<u8>, Arc<WebPkiServerVerifier>)>,
}

impl PinnedCaVerifier {
    fn matches(&self, der: &[u8]) -> bool {
        let hash = CaHash::of_der(der);
        match &self.expected {
            Expected::Pin(pin) => hash.matches_pin(pin),
            Expected::Hash(h) => {
                use subtle::ConstantTimeEq;
                hash.0.ct_eq(&h.0).into()
            }
        }
    }

    fn verifier_for(
        &self,
        ca: &CertificateDer<'_>,
    ) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        if let Some((der, v)) = self.matched.get()
            && der.as_slice() == ca.as_ref()
        {
            return Ok(v.clone());
        }
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let _ = self.matched.set((ca.to_vec(), verifier.clone()));
        Ok(verifier)
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| self.matches(c)) else {
            self.mismatch.0.store(true, Ordering::Relaxed);
            return Err(rustls::Error::General(
                "the hub's CA does not match the pinned hash".to_owned(),
            ));
        };
        self.verifier_for(ca)?
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    handshake_signatures_via_provider!();
}

/// Accepts any certificate (signatures are still checked, so the session is at
/// least with whoever holds the presented key). Only for `--insecure-skip-verify`.
#[derive(Debug)]
pub(crate) struct InsecureVerifier {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for InsecureVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures_via_provider!();
}

/// The server-certificate verifier for a trust choice, and the flag it raises on a
/// CA mismatch.
pub(crate) fn verifier(
    trust: &Trust,
) -> Result<(Arc<dyn ServerCertVerifier>, Arc<MismatchFlag>), String> {
    let provider = provider();
    let flag = Arc::new(MismatchFlag::default());
    let v: Arc<dyn ServerCertVerifier> = match trust {
        Trust::Pin(pin) => Arc::new(PinnedCaVerifier {
            expected: Expected::Pin(pin.clone()),
            provider,
            mismatch: flag.clone(),
            matched: OnceLock::new(),
        }),
        Trust::Hash(h) => Arc::new(PinnedCaVerifier {
            expected: Expected::Hash(*h),
            provider,
            mismatch: flag.clone(),
            matched: OnceLock::new(),
        }),
        Trust::CaPem(pem) => {
            use rustls_pki_types::pem::PemObject;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("reading the CA certificate: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("using the CA certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("the CA file holds no certificate".to_owned());
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| e.to_string())?
        }
        Trust::Insecure => Arc::new(InsecureVerifier { provider }),
    };
    Ok((v, flag))
}
