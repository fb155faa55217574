//! A hub with `--tls-cert` (a certificate from another CA, as a publicly trusted one
//! would be): browsers and curl get that certificate, Muster's agent and CLI still
//! get the hub's own and check the token's CA pin in the handshake.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use muster_ca::Authority;
use muster_testkit::{TestAgent, TestHub};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::each_backend;

/// What a browser sees: a TLS client trusting only `roots_pem`, offering no Muster
/// ALPN, that fetches `/healthz`. Returns the served chain's leaf and the answer.
fn browser_get(addr: &str, roots_pem: &str) -> Result<(Vec<u8>, String), String> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("127.0.0.1").unwrap().to_owned(),
    )
    .unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    let _ = tls.read_to_string(&mut body);
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok((leaf, body))
}

#[tokio::test]
async fn a_hub_with_its_own_tls_cert_still_enrolls_with_a_pinned_token() {
    each_backend(|b| async move {
        // The "public" CA and the certificate it gives the hub.
        let public_ca = Authority::generate("Public Test CA").unwrap();
        let (cert_pem, key_pem) = public_ca
            .issue_server_cert(&["127.0.0.1".to_owned()], Duration::from_secs(3600))
            .unwrap();
        let files = tempfile::tempdir().unwrap();
        let (cert, key) = (files.path().join("hub.crt"), files.path().join("hub.key"));
        std::fs::write(&cert, &cert_pem).unwrap();
        std::fs::write(&key, &key_pem).unwrap();
        let hub = TestHub::start_with(&b, |o| {
            o.tls_cert = Some(cert.clone());
            o.tls_key = Some(key.clone());
        })
        .await;
        let addr = hub.url.trim_start_matches("https://").to_owned();

        // A browser trusting the public CA gets the --tls-cert certificate.
        let public_pem = public_ca.cert_pem().to_owned();
        let hub_ca_pem = std::fs::read_to_string(hub.data_dir.join("ca.pem")).unwrap();
        let (a, p) = (addr.clone(), public_pem.clone());
        let (leaf, body) = tokio::task::spawn_blocking(move || browser_get(&a, &p))
            .await
            .unwrap()
            .unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        let served = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        assert_eq!(
            leaf,
            served.to_vec(),
            "browsers get the --tls-cert certificate"
        );
        // Trusting only the hub's CA, a browser is refused: it was not served that chain.
        let (a, p) = (addr.clone(), hub_ca_pem);
        let refused = tokio::task::spawn_blocking(move || browser_get(&a, &p))
            .await
            .unwrap();
        assert!(refused.is_err(), "{refused:?}");

        // The agent enrolls with nothing but the token (its pin), then reaches the hub
        // with its certificate; the admin CLI's ca.pem works too.
        let token = hub.default_token().await;
        let agent = TestAgent::new("behind-public-cert");
        let opts = hub.enroll_options(&agent, Some(&token), None);
        let enrolled = muster_agent::enroll(&opts, &agent.dir).await.unwrap();
        let status = muster_agent::status(&agent.dir).await.unwrap();
        assert!(status.hub.agent.is_some(), "{:?}", status.hub);
        let _running = agent.run();
        hub.wait_status(&enrolled.agent_id, "online", Duration::from_secs(5))
            .await;
        assert_eq!(hub.admin().list_agents().await.unwrap().len(), 1);

        // A token pinned to another CA is still refused before it is sent.
        let other = hub.default_token().await;
        let (secret, _) = other.split_once('.').unwrap();
        let wrong_pin = format!(
            "{secret}.{}",
            muster_ca::CaHash::of_der(public_ca.cert_der()).pin()
        );
        let stranger = TestAgent::new("wrong-pin");
        let opts = hub.enroll_options(&stranger, Some(&wrong_pin), None);
        let err = muster_agent::enroll(&opts, &stranger.dir)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nothing was sent"), "{err}");
        hub.stop().await;
    })
    .await;
}
