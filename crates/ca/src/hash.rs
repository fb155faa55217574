//! The CA hash and its short pin: how an agent recognises the hub's CA before it has
//! any other reason to trust it. The hash is SHA-256 over the CA certificate's DER
//! (the same value `openssl x509 -fingerprint -sha256` prints); the pin is a short
//! form of it meant to travel inside an enrollment token.

use std::fmt;

use base64::Engine as _;
use subtle::ConstantTimeEq as _;

use crate::{CaError, hex, pem, sha256};

/// SHA-256 of a CA certificate's DER.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct CaHash(pub [u8; 32]);

impl CaHash {
    /// Hash of a certificate given as DER.
    pub fn of_der(der: &[u8]) -> Self {
        Self(sha256(der))
    }

    /// Hash of the first `CERTIFICATE` block in `pem`.
    pub fn of_pem(pem: &str) -> Result<Self, CaError> {
        let der = pem::first_certificate(pem)?;
        Ok(Self::of_der(&der))
    }

    /// Parses the forms an operator is likely to paste: `sha256:<64 hex>`, bare
    /// `<64 hex>`, or OpenSSL's colon-separated fingerprint (`AB:CD:…`, 32 pairs).
    /// Hex and the `sha256:` prefix are case-insensitive; surrounding whitespace is
    /// ignored.
    pub fn parse(s: &str) -> Result<Self, CaError> {
        let s = s.trim();
        let body = match s.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case("sha256:") => &s[7..],
            _ => s,
        };
        // OpenSSL's form is exactly 32 pairs joined by ':'; only then drop the colons,
        // so "ab:cdef…" style typos are still refused.
        let digits: String = if body.len() == 95 && body.split(':').all(|p| p.len() == 2) {
            body.split(':').collect()
        } else {
            body.to_owned()
        };
        if digits.len() != 64 {
            return Err(CaError::InvalidHash(format!(
                "expected 64 hex digits (optionally prefixed by \"sha256:\"), got {} characters",
                digits.len()
            )));
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(digits.as_bytes().chunks_exact(2)) {
            let (Some(hi), Some(lo)) = (hex_value(pair[0]), hex_value(pair[1])) else {
                return Err(CaError::InvalidHash("not a hexadecimal string".into()));
            };
            *byte = (hi << 4) | lo;
        }
        Ok(Self(out))
    }

    /// The short pin: base64url without padding of the first 16 bytes (22 characters).
    /// 128 bits is plenty against second-preimage search and short enough to embed in
    /// a token an operator copies by hand.
    pub fn pin(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.0[..16])
    }

    /// Whether `pin` is this hash's pin, compared in constant time.
    pub fn matches_pin(&self, pin: &str) -> bool {
        // Lengths are public (a pin is always 22 characters); only the content is
        // compared without early exit.
        self.pin().as_bytes().ct_eq(pin.as_bytes()).into()
    }
}

impl fmt::Display for CaHash {
    /// `sha256:<lowercase hex>`, the form [`CaHash::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex(&self.0))
    }
}

impl std::str::FromStr for CaHash {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
