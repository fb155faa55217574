//! What every value a peer sends must satisfy before it is stored or shown: names,
//! hostnames and facts are bounded printable text; label keys are identifiers; a
//! CSR parses. Used on entry by enrollment, sessions and the admin API alike.

use axum::http::StatusCode;
use muster_proto::{MAX_NAME_LEN, codes};

use crate::error::{ApiFailure, ApiResult};

/// SHA-256 of a CSR's public key, after checking the CSR (400 `invalid_csr`).
pub fn csr_key(csr_pem: &str) -> ApiResult<String> {
    muster_ca::csr_public_key_sha256(csr_pem).map_err(|e| match e {
        muster_ca::CaError::InvalidCsr(m) | muster_ca::CaError::UnsupportedKey(m) => {
            ApiFailure::new(StatusCode::BAD_REQUEST, codes::INVALID_CSR, m)
        }
        other => ApiFailure::internal("reading a CSR failed", &other),
    })
}

/// Names, hostnames and facts: bounded, printable, no surrounding space.
pub fn check_text(field: &str, value: &str, may_be_empty: bool) -> ApiResult<()> {
    if value.is_empty() {
        return if may_be_empty {
            Ok(())
        } else {
            Err(ApiFailure::bad_request(format!(
                "{field} must not be empty"
            )))
        };
    }
    if value.len() > MAX_NAME_LEN {
        return Err(ApiFailure::bad_request(format!(
            "{field} is longer than {MAX_NAME_LEN} bytes"
        )));
    }
    if value.chars().any(char::is_control) || value.trim() != value {
        return Err(ApiFailure::bad_request(format!(
            "{field} must be printable text without surrounding spaces"
        )));
    }
    Ok(())
}

/// How many labels an agent may hold, whoever sets them.
pub const MAX_LABELS: usize = 64;

/// Label keys are identifiers (`[A-Za-z0-9._/-]`, up to 63); values are short text.
pub fn check_label(key: &str, value: &str) -> ApiResult<()> {
    let key_ok = !key.is_empty()
        && key.len() <= 63
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if !key_ok {
        return Err(ApiFailure::bad_request(format!(
            "label key {key:?} must be 1 to 63 characters of [A-Za-z0-9._/-]"
        )));
    }
    check_text("label value", value, true)
}
