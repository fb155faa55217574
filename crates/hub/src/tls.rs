//! The hub's TLS: its server certificates and the optional client-certificate check.
//!
//! The CA issues a fresh server certificate at every start, for the names of that
//! start, held only in memory. The chain sent to clients includes the CA certificate,
//! so an agent holding only the CA pin can verify the hub in the same handshake that
//! carries its enrollment. With `--tls-cert` (say, a publicly trusted certificate for
//! browsers), that file's certificate is served to every client except Muster's own,
//! which ask for the CA-issued one by offering [`HUB_CA_ALPN`]: a pin cannot be
//! checked against a chain the hub's CA is not in, and checking it any other way (by
//! fetching the CA first) would not bind it to the connection the token then uses.
//! Client certificates are optional at the TLS layer (enrollment has none yet) and,
//! when presented, must chain to our CA.

use std::sync::Arc;
use std::time::Duration;

use muster_ca::Authority;
use muster_proto::HUB_CA_ALPN;
use rustls::RootCertStore;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{HubError, HubOptions};

/// Validity of the in-memory server certificate; a hub that runs longer than this
/// without a restart would need `--tls-cert`.
const SERVER_CERT_VALIDITY: Duration = Duration::from_secs(397 * 24 * 3600);

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The `--tls-cert` chain and key, checked to belong together; `None` without them.
/// Read before anything else at start, so that a bad pair changes nothing.
pub fn load_public(opts: &HubOptions) -> Result<Option<CertifiedKey>, HubError> {
    match (&opts.tls_cert, &opts.tls_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| HubError::Tls(format!("reading {}: {e}", cert.display())))?;
            if chain.is_empty() {
                return Err(HubError::Tls(format!(
                    "no certificate in {}",
                    cert.display()
                )));
            }
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| HubError::Tls(format!("reading {}: {e}", key.display())))?;
            let certified = CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
                HubError::Tls(format!(
                    "{} and {} do not make a usable pair: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            Ok(Some(certified))
        }
        (None, None) => Ok(None),
        _ => Err(HubError::Invalid(
            "--tls-cert and --tls-key go together".to_owned(),
        )),
    }
}

pub fn server_config(
    ca: &Authority,
    public: Option<CertifiedKey>,
    names: &[String],
) -> Result<rustls::ServerConfig, HubError> {
    let tls_err = |e: &dyn std::fmt::Display| HubError::Tls(e.to_string());
    let ca_der = CertificateDer::from(ca.cert_der().to_vec());
    let own = {
        let (cert_pem, key_pem) = ca.issue_server_cert(names, SERVER_CERT_VALIDITY)?;
        let leaf = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| tls_err(&e))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls_err(&e))?;
        CertifiedKey::from_der(vec![leaf, ca_der.clone()], key, &provider())
            .map_err(|e| tls_err(&e))?
    };
    let mut roots = RootCertStore::empty();
    roots.add(ca_der).map_err(|e| tls_err(&e))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls_err(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(ServerCerts {
            own: Arc::new(own),
            public: public.map(Arc::new),
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Which certificate a client gets: the `--tls-cert` one if there is one, unless the
/// client is Muster's own and asks for the CA-issued one.
#[derive(Debug)]
struct ServerCerts {
    own: Arc<CertifiedKey>,
    public: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let asks_for_own = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == HUB_CA_ALPN));
        match &self.public {
            Some(public) if !asks_for_own => Some(public.clone()),
            _ => Some(self.own.clone()),
        }
    }
}
