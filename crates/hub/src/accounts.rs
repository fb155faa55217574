//! User accounts and their passwords (SPEC §11): argon2id hashing off the async
//! threads, the decoy hash that makes an unknown user as slow as a wrong password,
//! and creating a user (from the admin API and at first start).

use std::net::IpAddr;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use muster_proto::CreateUserRequest;
use muster_store::UserRecord;

use crate::audit::{self, AuditExt};
use crate::clock::now_ms;
use crate::error::{ApiFailure, ApiResult};
use crate::secrets::random_body;
use crate::state::AppState;
use crate::validate::{check_text, looks_like_email};

/// An argon2id PHC string for `password`, computed in one of the bounded hashing
/// slots with that slot's own memory (about 20 ms).
pub async fn hash_password(state: &AppState, password: String) -> ApiResult<String> {
    state
        .password_slots
        .run(move |scratch| hash_with(scratch, password.as_bytes()))
        .await?
}

/// argon2id with the default parameters into `scratch`, as a PHC string.
fn hash_with(scratch: &mut Vec<Block>, password: &[u8]) -> ApiResult<String> {
    let failed = |e: &dyn std::fmt::Display| ApiFailure::internal("hashing a password failed", e);
    let params = Params::default();
    let salt: [u8; 16] = rand::random();
    let blocks = params.block_count();
    if scratch.len() < blocks {
        scratch.resize(blocks, Block::new());
    }
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, &salt, &mut out, &mut scratch[..blocks])
        .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| failed(&e))?),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches `phc`, checked in one of the bounded hashing slots
/// with that slot's own memory.
pub async fn verify_password(state: &AppState, password: String, phc: String) -> ApiResult<bool> {
    state
        .password_slots
        .run(move |scratch| verify_with(scratch, password.as_bytes(), &phc))
        .await
}

/// Largest argon2 memory a stored hash may ask for (64 MiB): ours use 19 MiB.
const MAX_BLOCKS: usize = 64 * 1024;

/// argon2 verification into `scratch` instead of a fresh allocation; the result
/// is compared in constant time (`Output`'s equality).
fn verify_with(scratch: &mut Vec<Block>, password: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        Params::try_from(&hash),
        Algorithm::try_from(hash.algorithm.as_str()),
    ) else {
        return false;
    };
    let Ok(version) = hash
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    let blocks = params.block_count();
    if blocks > MAX_BLOCKS {
        return false;
    }
    if scratch.len() < blocks {
        scratch.resize(blocks, Block::new());
    }
    let mut out = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt,
        &mut out,
        &mut scratch[..blocks],
    );
    hashed.is_ok() && Output::new(&out).is_ok_and(|got| got == *expected)
}

/// A valid hash of nothing anyone knows: unknown users are checked against it so a
/// wrong name takes as long as a wrong password. Made once, on first need; callers
/// arriving meanwhile wait for that one instead of each making their own.
pub async fn decoy(state: &AppState) -> ApiResult<String> {
    state
        .decoy_hash
        .get_or_try_init(|| hash_password(state, random_body()))
        .await
        .cloned()
}

/// Create a user (admin API and first start). With no password the user signs in
/// through single sign-on only and is matched by email address at the first login
/// (SPEC §14), so the name must be one; it is kept in lower case.
pub async fn add_user(
    state: &AppState,
    req: CreateUserRequest,
    actor: String,
    source: IpAddr,
) -> ApiResult<UserRecord> {
    check_text("name", &req.name, false)?;
    let (name, password_hash) = match req.password {
        Some(password) => {
            if password.chars().count() < 12 || password.len() > 1024 {
                return Err(ApiFailure::bad_request(
                    "the password must be 12 to 1024 characters",
                ));
            }
            // An email address is kept in lower case, as single sign-on finds it.
            let name = if looks_like_email(&req.name) {
                req.name.to_lowercase()
            } else {
                req.name
            };
            (name, hash_password(state, password).await?)
        }
        None => {
            if !looks_like_email(&req.name) {
                return Err(ApiFailure::bad_request(format!(
                    "{:?} is not an email address: a user without a password signs in \
                     through single sign-on and is matched by email (or give a password)",
                    req.name
                )));
            }
            (req.name.to_lowercase(), String::new())
        }
    };
    let user = UserRecord::new(
        uuid::Uuid::new_v4().to_string(),
        name,
        req.role.as_str().to_owned(),
        password_hash,
        now_ms(),
    );
    let entry = audit::entry(actor, "user.created", format!("user:{}", user.name), source).details(
        serde_json::json!({
            "role": user.role,
            "password": !user.password_hash.is_empty(),
        }),
    );
    state.store.create_user(&user, &entry).await?;
    Ok(user)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn verification_with_reused_memory_matches_argon2() {
        use argon2::password_hash::PasswordHasher;
        let phc = Argon2::default()
            .hash_password(b"correct horse battery staple")
            .unwrap()
            .to_string();
        let mut scratch = Vec::new();
        assert!(verify_with(
            &mut scratch,
            b"correct horse battery staple",
            &phc
        ));
        assert!(!verify_with(
            &mut scratch,
            b"correct horse battery stable",
            &phc
        ));
        assert!(verify_with(
            &mut scratch,
            b"correct horse battery staple",
            &phc
        ));
        assert!(!verify_with(&mut scratch, b"x", "not a phc string"));
        // Ours verify with the stock verifier too (and so with older hubs).
        let ours = hash_with(&mut scratch, b"another password").unwrap();
        assert!(PasswordHash::new(&ours).is_ok_and(|h| {
            use argon2::password_hash::PasswordVerifier;
            Argon2::default()
                .verify_password(b"another password", &h)
                .is_ok()
        }));
        assert!(verify_with(&mut scratch, b"another password", &ours));
    }
}
