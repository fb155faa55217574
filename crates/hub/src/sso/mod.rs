//! Single sign-on with OpenID Connect (SPEC §14).
//!
//! - `crate::oidc`: the relying party itself (which provider, discovery, keys, the
//!   code and the ID token), and the hub's [`crate::oidc::Sso`] state.
//! - `admit`: who a provider's answer lets in, with which role.
//! - the dashboard's `sso` page module: the two routes a browser takes, `/auth/oidc/login`
//!   and `/auth/oidc/callback`, and their audit entries.
//!
//! Nothing here keeps per-sign-in state on the hub: what the callback must check
//! (`state`, `nonce`, the PKCE verifier, where to go next) rides in a short-lived
//! cookie sealed with the hub secret, so an unauthenticated peer starting sign-ins
//! costs the hub no memory and no writes, and any hub sharing the database can
//! finish a sign-in another began.

pub mod admit;

use crate::error::{ApiFailure, ApiResult};
use crate::oidc::{Settings, settings};
use crate::state::AppState;

/// The provider in force: the environment's, else the one set through the hub,
/// else none.
pub async fn current(state: &AppState) -> ApiResult<Option<Settings>> {
    if let Some(s) = &state.sso.env {
        return Ok(Some(s.clone()));
    }
    if let Some(known) = state.sso.cached() {
        return Ok(known);
    }
    let read = match state.store.sso_settings().await? {
        Some(r) => Some(settings::from_record(r, &state.keys)?),
        None => None,
    };
    state.sso.remember(read.clone());
    Ok(read)
}

/// Where the provider sends people back: under the advertised URL.
pub fn redirect_url(state: &AppState) -> String {
    format!("{}/auth/oidc/callback", state.hub_url.trim_end_matches('/'))
}

/// `--password-login off` must leave admins a way into the dashboard: single
/// sign-on set up, and an admin it admits (a user added by email as admin, or a
/// group with the admin role). API keys keep working either way; they are the
/// break-glass (docs/OPERATIONS.md, "SSO").
pub async fn check_way_in(state: &AppState) -> Result<(), crate::HubError> {
    let refuse = |why: &str| {
        crate::HubError::Invalid(format!(
            "--password-login off would lock admins out of the dashboard: {why}. Start \
             with --password-login on, set it up, then turn passwords off"
        ))
    };
    let failed = |f: ApiFailure| crate::HubError::Invalid(f.message);
    if current(state).await.map_err(failed)?.is_none() {
        return Err(refuse(
            "single sign-on is not set up (muster sso set, or MUSTER_OIDC_ISSUER)",
        ));
    }
    let admin_user = state.store.list_users().await?.iter().any(|u| {
        u.disabled_at.is_none()
            && u.granted_role.as_deref() == Some("admin")
            && crate::validate::looks_like_email(&u.name)
    });
    let admin_group = state
        .store
        .list_sso_groups()
        .await?
        .iter()
        .any(|g| g.role == "admin");
    if !admin_user && !admin_group {
        return Err(refuse(
            "no admin can sign in with it (muster users add EMAIL --role admin, or \
             muster sso groups add GROUP_ID --name NAME --role admin)",
        ));
    }
    Ok(())
}
