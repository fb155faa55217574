//! The hub secret and everything derived from it (SPEC §2).
//!
//! One secret, from `MUSTER_SECRET` or `<data-dir>/secret`, never stored in the
//! database. Purpose keys are derived from it with HKDF-SHA256, so a copy of the
//! database alone yields only keyed hashes and ciphertext. Secret values (tokens,
//! keys) are generated here and only ever leave as a [`Revealed`] value, whose `Debug`
//! does not print them.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Binds the previous-hash-keys ciphertext to its purpose.
const PREVIOUS_AAD: &[u8] = b"muster previous hash keys";

/// `hub_meta` key of the earlier secrets' hash keys.
pub const PREVIOUS_HASH_KEYS: &str = "previous_hash_keys";

/// Label of the value stored in `hub_meta` to recognise the right secret at start.
pub const SECRET_CHECK_KEY: &str = "secret_check";

/// The hub secret's purpose keys. The secret itself is not kept.
#[derive(Clone)]
pub struct Keys {
    hash: [u8; 32],
    encryption: [u8; 32],
    check: [u8; 32],
    audit: [u8; 32],
    /// What hubs sharing this secret show each other (`peer_token`).
    peer: [u8; 32],
    /// Signs audit checkpoints (`checkpoint.rs`).
    checkpoint: [u8; 32],
    /// Hash keys of earlier secrets: values hashed before a `rotate-secret` keep
    /// working until they are replaced (the hub never had their plain values to
    /// re-hash them).
    previous_hash: Vec<[u8; 32]>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// A plain secret value shown to its owner exactly once.
#[derive(Clone, PartialEq, Eq)]
pub struct Revealed(pub String);

impl fmt::Debug for Revealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret is too short to be a secret.
    #[error("the hub secret must be at least 16 characters")]
    TooShort,
    /// Stored ciphertext did not decrypt: the wrong secret, or a tampered row.
    #[error("stored ciphertext does not decrypt with this hub secret")]
    Decrypt,
    #[error("stored ciphertext is malformed")]
    Malformed,
}

impl Keys {
    pub fn derive(secret: &[u8]) -> Result<Self, SecretError> {
        if secret.len() < 16 {
            return Err(SecretError::TooShort);
        }
        let hk = Hkdf::<Sha256>::new(Some(b"muster hub secret v1"), secret);
        let mut keys = Keys {
            hash: [0; 32],
            encryption: [0; 32],
            check: [0; 32],
            audit: [0; 32],
            peer: [0; 32],
            checkpoint: [0; 32],
            previous_hash: Vec::new(),
        };
        // 32-byte outputs are far below HKDF-SHA256's limit: expand cannot fail.
        let _ = hk.expand(b"muster hash v1", &mut keys.hash);
        let _ = hk.expand(b"muster encryption v1", &mut keys.encryption);
        let _ = hk.expand(b"muster secret check v1", &mut keys.check);
        let _ = hk.expand(b"muster audit v1", &mut keys.audit);
        let _ = hk.expand(b"muster hub peer v1", &mut keys.peer);
        let _ = hk.expand(b"muster audit checkpoint v1", &mut keys.checkpoint);
        Ok(keys)
    }

    /// The bearer value one hub shows another when it asks it to run a probe on an
    /// agent whose session that hub holds: only hubs holding the secret know it.
    pub fn peer_token(&self) -> String {
        hmac_hex(&self.peer, b"muster hub peer token")
    }

    /// Whether `presented` is [`Keys::peer_token`], compared in constant time.
    pub fn is_peer_token(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        let mine = self.peer_token();
        mine.len() == presented.len() && bool::from(mine.as_bytes().ct_eq(presented.as_bytes()))
    }

    /// The MAC of an audit checkpoint's `message`, hex.
    pub fn checkpoint_mac(&self, message: &str) -> String {
        hmac_hex(&self.checkpoint, message.as_bytes())
    }

    /// Key of the audit chain's HMAC (SPEC §11).
    pub fn audit_key(&self) -> [u8; 32] {
        self.audit
    }

    /// Hashes of `value` under earlier secrets' keys, newest first, for lookups that
    /// miss under the current one.
    pub fn previous_hashes(&self, value: &str) -> Vec<String> {
        self.previous_hash
            .iter()
            .map(|k| hmac_hex(k, value.as_bytes()))
            .collect()
    }

    /// The hash key itself, to be carried (encrypted) past a secret rotation.
    pub fn hash_key(&self) -> [u8; 32] {
        self.hash
    }

    /// Earlier hash keys, as stored encrypted in the database (`v1:` ciphertext of
    /// the concatenated 32-byte keys, newest first).
    pub fn load_previous(&mut self, stored: Option<&str>) -> Result<(), SecretError> {
        self.previous_hash = match stored {
            None => Vec::new(),
            Some(ct) => self
                .decrypt(ct, PREVIOUS_AAD)?
                .chunks_exact(32)
                .map(|c| {
                    let mut k = [0u8; 32];
                    k.copy_from_slice(c);
                    k
                })
                .collect(),
        };
        Ok(())
    }

    /// What `load_previous` reads, for a new secret that succeeds `older`.
    pub fn seal_previous(&self, older: &Keys) -> String {
        let mut plain = older.hash.to_vec();
        for k in &older.previous_hash {
            plain.extend_from_slice(k);
        }
        self.encrypt(&plain, PREVIOUS_AAD)
    }

    /// Keyed hash of a token or key value, hex: what the database stores and looks up.
    pub fn hash_secret(&self, value: &str) -> String {
        hmac_hex(&self.hash, value.as_bytes())
    }

    /// A value that proves which secret made a database, without revealing it.
    pub fn check_value(&self) -> String {
        hmac_hex(&self.check, b"muster secret check")
    }

    /// Whether `stored` was made by [`check_value`](Self::check_value) under this secret.
    pub fn matches_check(&self, stored: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.check_value()
            .as_bytes()
            .ct_eq(stored.as_bytes())
            .into()
    }

    /// AES-256-GCM with a random nonce; `v1:` + base64url(nonce ‖ ciphertext).
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let nonce_bytes: [u8; 12] = rand::random();
        let nonce = Nonce::from(nonce_bytes);
        let cipher = cipher(&self.encryption);
        // Encryption only fails for inputs beyond GCM's size limit (64 GiB).
        let ct = cipher
            .encrypt(
                &nonce,
                aes_gcm::aead::Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_default();
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&ct);
        format!("v1:{}", URL_SAFE_NO_PAD.encode(out))
    }

    pub fn decrypt(&self, stored: &str, aad: &[u8]) -> Result<Vec<u8>, SecretError> {
        let body = stored.strip_prefix("v1:").ok_or(SecretError::Malformed)?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SecretError::Malformed)?;
        if raw.len() < 12 + 16 {
            return Err(SecretError::Malformed);
        }
        let (nonce, ct) = raw.split_at(12);
        let mut nonce_bytes = [0u8; 12];
        nonce_bytes.copy_from_slice(nonce);
        cipher(&self.encryption)
            .decrypt(
                &Nonce::from(nonce_bytes),
                aes_gcm::aead::Payload { msg: ct, aad },
            )
            .map_err(|_| SecretError::Decrypt)
    }
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(&(*key).into())
}

fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    use std::fmt::Write as _;
    let Ok(mut mac) = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(data);
    let mut out = String::with_capacity(64);
    for b in mac.finalize().into_bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// 32 random bytes, base64url without padding: the body of every Muster secret.
pub fn random_body() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh hub secret, as written to `<data-dir>/secret`.
pub fn generate_hub_secret() -> String {
    random_body()
}

/// The characters kept for display: enough to tell values apart, too few to use.
pub fn display_prefix(value: &str) -> String {
    value.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hashes_depend_on_the_secret() {
        let a = Keys::derive(b"0123456789abcdef-one").unwrap();
        let b = Keys::derive(b"0123456789abcdef-two").unwrap();
        assert_eq!(a.hash_secret("met_x"), a.hash_secret("met_x"));
        assert_ne!(a.hash_secret("met_x"), b.hash_secret("met_x"));
        assert!(a.matches_check(&a.check_value()));
        assert!(!b.matches_check(&a.check_value()));
    }

    #[test]
    fn encryption_round_trips_and_refuses_the_wrong_key() {
        let a = Keys::derive(b"0123456789abcdef-one").unwrap();
        let b = Keys::derive(b"0123456789abcdef-two").unwrap();
        let ct = a.encrypt(b"ca private key", b"ca");
        assert_eq!(a.decrypt(&ct, b"ca").unwrap(), b"ca private key");
        assert!(matches!(b.decrypt(&ct, b"ca"), Err(SecretError::Decrypt)));
        assert!(matches!(
            a.decrypt(&ct, b"other"),
            Err(SecretError::Decrypt)
        ));
        assert!(!ct.contains("ca private key"));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(Keys::derive(b"short"), Err(SecretError::TooShort)));
    }
}
