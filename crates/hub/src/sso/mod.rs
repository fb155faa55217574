//! Single sign-on with OpenID Connect (SPEC §14).
//!
//! - `settings`: which provider, from the environment or as set through the hub.
//! - `provider`: the relying party itself (discovery, keys, code, ID token).
//! - `admit`: who a provider's answer lets in, with which role.
//! - `flow`: the two routes a browser takes, `/auth/oidc/login` and
//!   `/auth/oidc/callback`, and their audit entries.
//!
//! Nothing here keeps per-sign-in state on the hub: what the callback must check
//! (`state`, `nonce`, the PKCE verifier, where to go next) rides in a short-lived
//! cookie sealed with the hub secret, so an unauthenticated peer starting sign-ins
//! costs the hub no memory and no writes, and any hub sharing the database can
//! finish a sign-in another began.

pub mod admit;
pub mod flow;
pub mod provider;
pub mod settings;

use std::time::Duration;

use crate::error::{ApiFailure, ApiResult};
use crate::state::AppState;
pub use settings::{Settings, SsoEnv};

/// Code exchanges (each a round trip to the provider) run at once; more wait
/// briefly, then get 503. Sign-ins are rare; a flood of forged callbacks must not
/// turn the hub into a load generator against the provider.
const EXCHANGES: usize = 8;
const EXCHANGE_WAIT: Duration = Duration::from_secs(5);
/// The deadline of each request to the provider.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The hub's single sign-on: how it was configured at start, the provider cache,
/// and the bound on exchanges.
pub struct Sso {
    pub env: Option<Settings>,
    /// `--password-login`: whether the password form is offered at all.
    pub password_login: bool,
    pub http: provider::Http,
    pub cache: provider::ProviderCache,
    exchanges: tokio::sync::Semaphore,
}

impl Sso {
    pub fn new(env: Option<Settings>, password_login: bool) -> Result<Self, String> {
        // reqwest's rustls wants a process-wide provider: ours, ring (a no-op when
        // the binary installed it already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            // The provider's answers are read as they come; a redirect would be a
            // request we did not mean to make.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            // Sign-ins are minutes apart: a kept-alive connection would mostly be
            // one the provider has closed meanwhile (a reset token request).
            .pool_max_idle_per_host(0)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("muster-hub/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Sso {
            env,
            password_login,
            http: provider::Http(http),
            cache: provider::ProviderCache::default(),
            exchanges: tokio::sync::Semaphore::new(EXCHANGES),
        })
    }

    /// A place to exchange a code, waiting briefly; 503 when the hub is busy with
    /// sign-ins.
    pub async fn exchange_slot(&self) -> ApiResult<tokio::sync::SemaphorePermit<'_>> {
        match tokio::time::timeout(EXCHANGE_WAIT, self.exchanges.acquire()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(ApiFailure::unavailable(
                "too many sign-ins at once; try again in a moment",
                Some(5),
            )),
        }
    }
}

/// The provider in force: the environment's, else the one set through the hub,
/// else none.
pub async fn current(state: &AppState) -> ApiResult<Option<Settings>> {
    if let Some(s) = &state.sso.env {
        return Ok(Some(s.clone()));
    }
    match state.store.sso_settings().await? {
        Some(r) => settings::from_record(r, &state.keys).map(Some),
        None => Ok(None),
    }
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
            && crate::accounts::looks_like_email(&u.name)
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
