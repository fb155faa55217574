//! The hub's TLS: its server certificate and the optional client-certificate check.
//!
//! Without `--tls-cert`, the CA issues a fresh server certificate at every start, for
//! the names of that start, held only in memory. The chain sent to clients includes
//! the CA certificate, so an agent holding only the CA pin can verify the hub in the
//! same handshake that carries its enrollment. Client certificates are optional at
//! the TLS layer (enrollment has none yet) and, when presented, must chain to our CA.

use std::sync::Arc;
use std::time::Duration;

use muster_ca::Authority;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{HubError, HubOptions};

/// Validity of the in-memory server certificate; a hub that runs longer than this
/// without a restart would need `--tls-cert`.
const SERVER_CERT_VALIDITY: Duration = Duration::from_secs(397 * 24 * 3600);

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn server_config(
    ca: &Authority,
    opts: &HubOptions,
    names: &[String],
) -> Result<rustls::ServerConfig, HubError> {
    let tls_err = |e: &dyn std::fmt::Display| HubError::Tls(e.to_string());
    let ca_der = CertificateDer::from(ca.cert_der().to_vec());
    let (chain, key) = match (&opts.tls_cert, &opts.tls_key) {
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
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| HubError::Tls(format!("reading {}: {e}", key.display())))?;
            (chain, key)
        }
        (None, None) => {
            let (cert_pem, key_pem) = ca.issue_server_cert(names, SERVER_CERT_VALIDITY)?;
            let leaf =
                CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| tls_err(&e))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls_err(&e))?;
            (vec![leaf, ca_der.clone()], key)
        }
        _ => {
            return Err(HubError::Invalid(
                "--tls-cert and --tls-key go together".to_owned(),
            ));
        }
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
        .with_single_cert(chain, key)
        .map_err(|e| tls_err(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
