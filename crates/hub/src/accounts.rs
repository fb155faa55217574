//! User accounts and their passwords (SPEC §11): argon2id hashing off the async
//! threads, the decoy hash that makes an unknown user as slow as a wrong password,
//! and creating a user (from the admin API and at first start).

use std::net::IpAddr;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use muster_proto::CreateUserRequest;
use muster_store::UserRecord;

use crate::audit;
use crate::clock::now_ms;
use crate::error::{ApiFailure, ApiResult};
use crate::secrets::random_body;
use crate::state::AppState;
use crate::validate::check_text;

/// An argon2id PHC string for `password` (about 20 ms: off the async threads).
pub async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| ApiFailure::internal("hashing a password failed", &e))
    })
    .await
    .map_err(|e| ApiFailure::internal("hashing a password failed", &e))?
}

pub async fn verify_password(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// A valid hash of nothing anyone knows: unknown users are checked against it so a
/// wrong name takes as long as a wrong password.
pub fn decoy(state: &AppState) -> String {
    state
        .decoy_hash
        .get_or_init(|| {
            Argon2::default()
                .hash_password(random_body().as_bytes())
                .map(|h| h.to_string())
                .unwrap_or_default()
        })
        .clone()
}

/// Create a user (admin API and first start).
pub async fn add_user(
    state: &AppState,
    req: CreateUserRequest,
    actor: String,
    source: IpAddr,
) -> ApiResult<UserRecord> {
    check_text("name", &req.name, false)?;
    if req.role != "admin" && req.role != "member" {
        return Err(ApiFailure::bad_request("role must be admin or member"));
    }
    if req.password.chars().count() < 12 || req.password.len() > 1024 {
        return Err(ApiFailure::bad_request(
            "the password must be 12 to 1024 characters",
        ));
    }
    let user = UserRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: req.name.clone(),
        role: req.role.clone(),
        password_hash: hash_password(req.password).await?,
        disabled_at: None,
        created_at: now_ms(),
    };
    let entry = audit::entry(actor, "user.created", format!("user:{}", user.name), source);
    state.store.create_user(&user, &entry).await?;
    Ok(user)
}
