#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rcgen::{CertificateParams, CustomExtension, DnType, KeyPair, SanType, SignatureAlgorithm};
use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_BASIC_CONSTRAINTS,
    OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME,
    OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};

use crate::*;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn ca() -> Authority {
    Authority::generate("Test CA").unwrap()
}

/// A CSR made by rcgen with the given key algorithm and requested parameters.
fn csr_with(alg: &'static SignatureAlgorithm, params: &CertificateParams) -> (KeyPair, String) {
    let key = KeyPair::generate_for(alg).unwrap();
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (key, csr)
}

fn good_csr() -> (String, String) {
    new_key_and_csr("agent-host").unwrap()
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::{PemObject, SectionKind};
    <(SectionKind, Vec<u8>)>::from_pem_slice(pem.as_bytes())
        .unwrap()
        .1
}

fn with_cert<T>(
    pem: &str,
    f: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> T,
) -> T {
    let der = der_of(pem);
    let (rest, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(rest.is_empty());
    f(&cert)
}

fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn openssl_verify(dir: &Path, ca_pem: &str, cert_pem: &str, purpose: &str) -> (bool, String) {
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
    std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"])
        .arg(dir.join("ca.pem"))
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---- the CA ----

#[test]
fn generated_ca_is_a_p256_ca_with_pathlen_0() {
    let ca = Authority::generate("").unwrap();
    with_cert(ca.cert_pem(), |cert| {
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert!(cn.starts_with("Muster CA "), "{cn}");
        assert_eq!(cn.len(), "Muster CA ".len() + 8);
        assert_eq!(cert.subject(), cert.issuer());
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical);
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert!(!ku.digital_signature());
        let years = (cert.validity().not_after.to_datetime() - OffsetDateTime::now_utc())
            .whole_days()
            / 365;
        assert_eq!(years, 9, "about ten years left");
        assert_eq!(
            cert.public_key()
                .algorithm
                .parameters
                .as_ref()
                .unwrap()
                .as_oid()
                .unwrap(),
            x509_parser::oid_registry::OID_EC_P256
        );
    });
    assert_eq!(ca.hash(), CaHash::of_der(ca.cert_der()));
    assert_eq!(ca.hash(), CaHash::of_pem(ca.cert_pem()).unwrap());
}

#[test]
fn ca_round_trips_through_pem() {
    let ca = ca();
    let loaded = Authority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(loaded.cert_der(), ca.cert_der());
    assert_eq!(loaded.cert_pem(), ca.cert_pem());
    assert_eq!(loaded.hash(), ca.hash());
    assert_eq!(loaded.key_pem(), ca.key_pem());

    // A certificate from the reloaded CA chains to the original.
    let (_, csr) = good_csr();
    let issued = loaded.sign_agent_csr(&csr, "a1", DAY).unwrap();
    with_cert(&issued.cert_pem, |cert| {
        assert_eq!(
            cert.issuer().as_raw(),
            with_cert(ca.cert_pem(), |c| c.subject().as_raw().to_vec())
        );
        let ca_der = ca.cert_der().to_vec();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    });
    assert!(format!("{ca:?}").contains(&ca.hash().to_string()));
    assert!(!format!("{ca:?}").contains("PRIVATE"));
}

#[test]
fn mismatched_key_is_refused() {
    let a = ca();
    let b = ca();
    let err = Authority::from_pem(a.cert_pem(), &b.key_pem()).unwrap_err();
    assert!(matches!(err, CaError::InvalidKey(_)), "{err:?}");
}

#[test]
fn bad_ca_inputs_are_refused() {
    let a = ca();
    let err = Authority::from_pem("nope", &a.key_pem()).unwrap_err();
    assert!(matches!(err, CaError::InvalidCertificate(_)), "{err:?}");
    let err = Authority::from_pem(a.cert_pem(), "nope").unwrap_err();
    assert!(matches!(err, CaError::InvalidKey(_)), "{err:?}");

    // A leaf certificate with its own key is not a CA.
    let (cert, key) = a.issue_server_cert(&["hub.example".into()], DAY).unwrap();
    let err = Authority::from_pem(&cert, &key).unwrap_err();
    assert!(matches!(err, CaError::InvalidCertificate(_)), "{err:?}");
}

#[test]
fn authority_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Authority>();
}

// ---- agent certificates ----

#[test]
fn good_csr_is_signed_with_only_what_the_hub_decides() {
    let ca = ca();
    let (key_pem, csr) = good_csr();
    let before = OffsetDateTime::now_utc();
    let issued = ca.sign_agent_csr(&csr, "agent-42", 30 * DAY).unwrap();
    let after = OffsetDateTime::now_utc();

    assert_eq!(issued.serial_hex.len(), 32);
    assert_eq!(
        issued.public_key_sha256,
        key_public_sha256(&key_pem).unwrap()
    );
    assert!(issued.not_after >= before + 30 * DAY - Duration::from_secs(1));
    assert!(issued.not_after <= after + 30 * DAY);

    let info = cert_info(&issued.cert_pem).unwrap();
    assert_eq!(info.subject_cn, "agent-42");
    assert_eq!(info.uri_sans, vec!["muster://agent/agent-42".to_owned()]);
    assert_eq!(info.serial_hex, issued.serial_hex);
    assert_eq!(info.not_after, issued.not_after);
    assert_eq!(info.public_key_sha256, issued.public_key_sha256);
    let skew = (before - info.not_before).whole_seconds();
    assert!(
        (299..=301).contains(&skew),
        "not_before is now - 5 min, got {skew}s"
    );

    let ca_ski = with_cert(ca.cert_pem(), |c| {
        c.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .unwrap()
    });
    with_cert(&issued.cert_pem, |cert| {
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth);
        assert!(!eku.server_auth && !eku.any && !eku.code_signing && !eku.email_protection);
        assert!(!eku.time_stamping && !eku.ocsp_signing && eku.other.is_empty());

        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature());
        assert_eq!(ku.flags.count_ones(), 1, "digitalSignature only");

        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca);
        assert!(!cert.is_ca());

        let aki = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref(),
                _ => None,
            })
            .unwrap();
        assert_eq!(aki.0, ca_ski.as_slice());

        let allowed = [
            OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
            OID_X509_EXT_SUBJECT_ALT_NAME,
            OID_X509_EXT_KEY_USAGE,
            OID_X509_EXT_EXTENDED_KEY_USAGE,
            OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
            OID_X509_EXT_BASIC_CONSTRAINTS,
        ];
        for ext in cert.extensions() {
            assert!(
                allowed.contains(&ext.oid),
                "unexpected extension {}",
                ext.oid
            );
        }
        let sans = &cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(sans.len(), 1);
        assert!(matches!(
            sans[0],
            GeneralName::URI("muster://agent/agent-42")
        ));
    });

    let again = ca.sign_agent_csr(&csr, "agent-42", 30 * DAY).unwrap();
    assert_ne!(again.serial_hex, issued.serial_hex);
    assert_eq!(again.public_key_sha256, issued.public_key_sha256);
}

#[test]
fn requested_subject_sans_and_ca_flag_are_ignored() {
    let ca = ca();
    let mut params = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "root");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Evil");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.subject_alt_names.push(SanType::URI(
        "muster://agent/someone-else".try_into().unwrap(),
    ));
    let (_, csr) = csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, &params);

    let issued = ca.sign_agent_csr(&csr, "a7", DAY).unwrap();
    let info = cert_info(&issued.cert_pem).unwrap();
    assert_eq!(info.subject_cn, "a7");
    assert_eq!(info.uri_sans, vec!["muster://agent/a7".to_owned()]);
    with_cert(&issued.cert_pem, |cert| {
        assert!(!cert.is_ca());
        assert_eq!(cert.subject().iter().count(), 1, "CN only");
        let sans = &cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(sans.general_names.len(), 1);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(!cert.key_usage().unwrap().unwrap().value.key_cert_sign());
    });
}

#[test]
fn unknown_extension_is_accepted_and_not_copied() {
    let ca = ca();
    let mut params = CertificateParams::default();
    // A private-arc OID nobody knows, marked critical to make the point.
    let mut ext =
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 1], vec![0x05, 0x00]);
    ext.set_criticality(true);
    params.custom_extensions = vec![ext];
    let (_, csr) = csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, &params);
    // rcgen's own CSR reader refuses this one; we must not.
    assert!(rcgen::CertificateSigningRequestParams::from_pem(&csr).is_err());

    let issued = ca.sign_agent_csr(&csr, "a2", DAY).unwrap();
    with_cert(&issued.cert_pem, |cert| {
        for ext in cert.extensions() {
            assert_ne!(ext.oid.to_id_string(), "1.3.6.1.4.1.55555.1");
        }
    });
}

#[test]
fn garbage_is_refused_as_invalid_csr() {
    let ca = ca();
    let (_, good) = good_csr();
    let der = der_of(&good);

    let mut trailing = der.clone();
    trailing.extend_from_slice(&[0x05, 0x00]);
    let oversized = format!("{good}{}", " ".repeat(crate::csr::MAX_CSR_PEM_BYTES));

    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("text", "hello".into()),
        (
            "bad base64",
            "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n".into(),
        ),
        (
            "not DER",
            crate::pem::encode("CERTIFICATE REQUEST", b"not der at all"),
        ),
        ("two blocks", format!("{good}{good}")),
        ("wrong label", crate::pem::encode("CERTIFICATE", &der)),
        (
            "legacy label",
            crate::pem::encode("NEW CERTIFICATE REQUEST", &der),
        ),
        (
            "extra block",
            format!("{good}{}", crate::pem::encode("PRIVATE KEY", b"x")),
        ),
        (
            "unterminated",
            good.replace("-----END CERTIFICATE REQUEST-----", ""),
        ),
        (
            "trailing DER",
            crate::pem::encode("CERTIFICATE REQUEST", &trailing),
        ),
        ("oversized", oversized),
    ];
    for (what, pem) in cases {
        let err = ca.sign_agent_csr(&pem, "a1", DAY).unwrap_err();
        let CaError::InvalidCsr(msg) = &err else {
            panic!("{what}: {err:?}");
        };
        // Make sure each case is refused for its own reason, not an earlier one.
        let expect = match what {
            "trailing DER" => "trailing bytes",
            "oversized" => "larger than 16 KiB",
            "two blocks" | "extra block" | "wrong label" | "legacy label" => "exactly one",
            "not DER" => "PKCS#10",
            _ => "",
        };
        assert!(msg.contains(expect), "{what}: {msg}");
    }
    // Surrounding whitespace and CRLF line endings are fine.
    ca.sign_agent_csr(
        &format!("\r\n{}\r\n", good.replace('\n', "\r\n")),
        "a1",
        DAY,
    )
    .unwrap();
}

#[test]
fn flipped_signature_is_refused() {
    let ca = ca();
    let (_, good) = good_csr();
    let mut der = der_of(&good);
    // The last byte is inside the ECDSA signature's s value.
    *der.last_mut().unwrap() ^= 0x01;
    let err = ca
        .sign_agent_csr(&crate::pem::encode("CERTIFICATE REQUEST", &der), "a1", DAY)
        .unwrap_err();
    assert!(matches!(err, CaError::InvalidCsr(_)), "{err:?}");

    // So is a request whose signed content was changed (the subject's CN).
    let mut der = der_of(&good);
    let pos = der.windows(10).position(|w| w == b"agent-host").unwrap();
    der[pos] = b'b';
    let err = ca
        .sign_agent_csr(&crate::pem::encode("CERTIFICATE REQUEST", &der), "a1", DAY)
        .unwrap_err();
    assert!(matches!(err, CaError::InvalidCsr(_)), "{err:?}");
}

#[test]
fn other_key_types_are_refused_as_unsupported() {
    let ca = ca();
    for (alg, name) in [
        (&rcgen::PKCS_ECDSA_P384_SHA384, "ECDSA P-384"),
        (&rcgen::PKCS_ED25519, "Ed25519"),
    ] {
        let (_, csr) = csr_with(alg, &CertificateParams::default());
        let err = ca.sign_agent_csr(&csr, "a1", DAY).unwrap_err();
        match err {
            CaError::UnsupportedKey(msg) => {
                assert_eq!(
                    msg,
                    format!("only ECDSA P-256 keys are accepted, got {name}")
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn openssl_csrs_rsa_refused_p256_with_extensions_accepted() {
    if !openssl_available() {
        eprintln!("openssl not on PATH; skipping");
        return;
    }
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let make = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(["req", "-new", "-nodes", "-subj", "/CN=x", "-keyout"])
            .arg(dir.path().join("k.pem"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let rsa = make(&["-newkey", "rsa:2048"]);
    let err = ca.sign_agent_csr(&rsa, "a1", DAY).unwrap_err();
    assert_eq!(
        err,
        CaError::UnsupportedKey("only ECDSA P-256 keys are accepted, got RSA".into())
    );

    // OpenSSL adds extensions (subjectKeyIdentifier and friends) that rcgen's own
    // CSR reader rejects; we ignore them.
    let p256 = make(&[
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-addext",
        "subjectAltName=DNS:evil.example",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
    ]);
    let issued = ca.sign_agent_csr(&p256, "a1", DAY).unwrap();
    let key = std::fs::read_to_string(dir.path().join("k.pem")).unwrap();
    assert_eq!(issued.public_key_sha256, key_public_sha256(&key).unwrap());
    let info = cert_info(&issued.cert_pem).unwrap();
    assert_eq!(info.uri_sans, vec!["muster://agent/a1".to_owned()]);
}

#[test]
fn issued_certificates_verify_with_openssl() {
    if !openssl_available() {
        eprintln!("openssl not on PATH; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for ca in [ca(), Authority::generate("").unwrap()] {
        let (_, csr) = good_csr();
        let issued = ca.sign_agent_csr(&csr, "agent-1", DAY).unwrap();
        let (ok, out) = openssl_verify(dir.path(), ca.cert_pem(), &issued.cert_pem, "sslclient");
        assert!(ok, "agent cert: {out}");
        // clientAuth only: not usable as a server certificate.
        let (ok, _) = openssl_verify(dir.path(), ca.cert_pem(), &issued.cert_pem, "sslserver");
        assert!(!ok, "agent cert must not pass as a server certificate");

        let (server, _) = ca
            .issue_server_cert(&["hub.example".into(), "127.0.0.1".into()], DAY)
            .unwrap();
        let (ok, out) = openssl_verify(dir.path(), ca.cert_pem(), &server, "sslserver");
        assert!(ok, "server cert: {out}");

        // A different CA does not vouch for it.
        let other = Authority::generate("Other").unwrap();
        let (ok, _) = openssl_verify(dir.path(), other.cert_pem(), &issued.cert_pem, "sslclient");
        assert!(!ok);
    }
}

#[test]
fn bad_agent_ids_and_validity_are_refused() {
    let ca = ca();
    let (_, csr) = good_csr();
    for id in ["", "a/b", "a b", "ä", "x\n", &"a".repeat(65)] {
        let err = ca.sign_agent_csr(&csr, id, DAY).unwrap_err();
        assert!(
            matches!(err, CaError::InvalidParameter(_)),
            "{id:?}: {err:?}"
        );
    }
    ca.sign_agent_csr(&csr, "0190f3c2-7b1e-7cc1-9d2a-1f2e3d4c5b6a", DAY)
        .unwrap();
    for validity in [Duration::ZERO, Duration::from_secs(u64::MAX)] {
        let err = ca.sign_agent_csr(&csr, "a1", validity).unwrap_err();
        assert!(matches!(err, CaError::InvalidParameter(_)), "{err:?}");
    }
}

// ---- server certificates ----

#[test]
fn server_cert_has_dns_and_ip_sans_and_server_auth() {
    let ca = ca();
    let names = vec![
        "hub.example".to_owned(),
        "10.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let (cert_pem, key_pem) = ca.issue_server_cert(&names, 7 * DAY).unwrap();
    let info = cert_info(&cert_pem).unwrap();
    assert_eq!(info.subject_cn, "hub.example");
    assert!(info.uri_sans.is_empty());
    assert_eq!(info.public_key_sha256, key_public_sha256(&key_pem).unwrap());
    with_cert(&cert_pem, |cert| {
        let sans = &cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(sans.len(), 3);
        assert!(matches!(sans[0], GeneralName::DNSName("hub.example")));
        assert!(matches!(sans[1], GeneralName::IPAddress([10, 0, 0, 1])));
        assert!(matches!(sans[2], GeneralName::IPAddress(ip) if ip.len() == 16));
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(cert.key_usage().unwrap().unwrap().value.digital_signature());
        assert!(!cert.is_ca());
    });

    assert!(matches!(
        ca.issue_server_cert(&[], DAY).unwrap_err(),
        CaError::InvalidParameter(_)
    ));
    assert!(matches!(
        ca.issue_server_cert(&["bad name\u{e9}".into()], DAY)
            .unwrap_err(),
        CaError::InvalidParameter(_)
    ));
}

// ---- agent side ----

#[test]
fn new_key_and_csr_makes_a_plain_p256_request() {
    let (key_pem, csr_pem) = new_key_and_csr("host-1").unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let der = der_of(&csr_pem);
    let (_, csr) =
        <x509_parser::certification_request::X509CertificationRequest as x509_parser::prelude::FromDer<_>>::from_der(&der)
            .unwrap();
    csr.verify_signature().unwrap();
    let cn = csr
        .certification_request_info
        .subject
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap();
    assert_eq!(cn, "host-1");
    assert!(csr.requested_extensions().is_none());
    assert_eq!(
        key_public_sha256(&key_pem).unwrap(),
        hex(&sha256(csr.certification_request_info.subject_pki.raw))
    );
    assert!(matches!(
        key_public_sha256("junk").unwrap_err(),
        CaError::InvalidKey(_)
    ));
}

#[test]
fn cert_info_refuses_non_certificates() {
    assert!(matches!(
        cert_info("junk").unwrap_err(),
        CaError::InvalidCertificate(_)
    ));
    let garbage = crate::pem::encode("CERTIFICATE", b"\x30\x03\x02\x01\x00");
    assert!(matches!(
        cert_info(&garbage).unwrap_err(),
        CaError::InvalidCertificate(_)
    ));
}

// ---- CA hash and pin ----

#[test]
fn ca_hash_parse_display_pin_round_trip() {
    let ca = ca();
    let hash = ca.hash();
    let shown = hash.to_string();
    assert!(shown.starts_with("sha256:"));
    assert_eq!(shown.len(), 7 + 64);
    assert_eq!(shown, shown.to_lowercase());

    let bare = &shown[7..];
    let openssl_style = bare
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    for form in [
        shown.clone(),
        bare.to_owned(),
        bare.to_uppercase(),
        format!("SHA256:{}", bare.to_uppercase()),
        format!("  {shown}\n"),
        openssl_style,
    ] {
        assert_eq!(CaHash::parse(&form).unwrap(), hash, "{form}");
    }
    assert_eq!(shown.parse::<CaHash>().unwrap(), hash);

    for bad in [
        "",
        "sha256:",
        &shown[..70],
        &format!("{shown}0"),
        &format!("sha256:{}", "g".repeat(64)),
        &format!("sha1:{bare}"),
        &format!("sha256:{}é", &bare[..62]),
    ] {
        assert!(
            matches!(CaHash::parse(bad).unwrap_err(), CaError::InvalidHash(_)),
            "{bad}"
        );
    }

    let pin = hash.pin();
    assert_eq!(pin.len(), 22);
    assert!(
        pin.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert!(hash.matches_pin(&pin));

    let other = Authority::generate("Other").unwrap().hash();
    assert!(!hash.matches_pin(&other.pin()));
    assert!(!hash.matches_pin(""));
    assert!(!hash.matches_pin(&pin[..21]));
    assert!(!hash.matches_pin(&format!("{pin}A")));

    // Known vector: the pin is the first 16 bytes, base64url.
    let zero = CaHash([0u8; 32]);
    assert_eq!(zero.pin(), "AAAAAAAAAAAAAAAAAAAAAA");
    let mut bytes = [0u8; 32];
    bytes[15] = 0xff;
    bytes[16] = 0xff; // outside the pin
    assert_eq!(CaHash(bytes).pin(), "AAAAAAAAAAAAAAAAAAAA_w");
}
