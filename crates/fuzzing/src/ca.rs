//! What the CA reads from the network: an agent's CSR at enrollment and renewal,
//! and the expired certificate and proof of an offline agent's renewal.
//!
//! Both run against a fixed CA (`fixtures/`, made for fuzzing only and trusted
//! nowhere), so seed inputs issued by it reach the signature checks.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use muster_ca::Authority;
use muster_hub::fuzzing as hub;

const CA_PEM: &str = include_str!("fixtures/ca.pem");
const CA_KEY: &str = include_str!("fixtures/ca.key");

thread_local! {
    static CA: Authority = Authority::from_pem(CA_PEM, CA_KEY).expect("the fixture CA loads");
}

/// `data` as PEM text, or, when it is not, as the DER inside a `label` block: the
/// fuzzer then works on the DER structure itself rather than on base64.
fn pem_or_der(data: &[u8], label: &str) -> String {
    match std::str::from_utf8(data) {
        Ok(text) if text.contains("-----BEGIN") => text.to_owned(),
        _ => format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            STANDARD.encode(data)
        ),
    }
}

/// A CSR as enrollment checks it: whatever the hub accepts, the CA signs, into a
/// certificate for the key the check reported and nothing the CSR asked for.
pub fn csr(data: &[u8]) {
    let pem = pem_or_der(data, "CERTIFICATE REQUEST");
    let Ok(key) = hub::csr_key(&pem) else {
        return;
    };
    CA.with(|ca| {
        let issued = ca
            .sign_agent_csr(&pem, "fuzz-agent", std::time::Duration::from_secs(3600))
            .expect("the CA signs every CSR the hub accepts");
        assert_eq!(issued.public_key_sha256, key);
        let info = muster_ca::cert_info(&issued.cert_pem).expect("our own certificate reads");
        assert_eq!(info.public_key_sha256, key);
        assert_eq!(info.subject_cn, "fuzz-agent");
        assert_eq!(info.uri_sans, ["muster://agent/fuzz-agent"]);
    });
}

/// An expired certificate and the proof signed with its key (renewal after expiry).
/// Input: certificate (PEM, or DER), 0xFF, message, 0xFF, signature.
pub fn cert_proof(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0xFF);
    let cert = parts.next().unwrap_or_default();
    let message = parts.next().unwrap_or_default();
    let signature = parts.next().unwrap_or_default();
    let pem = pem_or_der(cert, "CERTIFICATE");
    let info = muster_ca::cert_info(&pem);
    CA.with(|ca| {
        if let Ok(proved) = ca.verify_proof(&pem, message, signature) {
            let info = info.expect("a certificate that verifies reads");
            assert_eq!(info.public_key_sha256, proved.public_key_sha256);
            assert_eq!(info.serial_hex, proved.serial_hex);
        }
    });
}
