//! The OpenID Connect relying party (SPEC §14), below the sign-in flow (`sso`):
//! which provider (`settings`), talking to it (`provider`), and the part of it the
//! hub keeps in its state ([`Sso`]). Nothing here knows the hub's state or routes.

pub mod provider;
pub mod settings;

use std::time::Duration;

use crate::error::{ApiFailure, ApiResult};
pub use settings::{Settings, SsoEnv};

/// Code exchanges (each a round trip to the provider) run at once; more wait
/// briefly, then get 503. Sign-ins are rare; a flood of forged callbacks must not
/// turn the hub into a load generator against the provider.
const EXCHANGES: usize = 8;
const EXCHANGE_WAIT: Duration = Duration::from_secs(5);
/// How long the provider set through the hub is taken from memory: the login page
/// and the sign-in routes are public, and must not read the database on every hit;
/// another hub's `muster sso set` is seen within this.
const SETTINGS_TTL: Duration = Duration::from_secs(5);

/// The hub's single sign-on: how it was configured at start, the provider cache,
/// and the bound on exchanges.
pub struct Sso {
    pub env: Option<Settings>,
    /// `--password-login`: whether the password form is offered at all.
    pub password_login: bool,
    pub http: provider::Http,
    pub cache: provider::ProviderCache,
    exchanges: tokio::sync::Semaphore,
    /// The provider set through the hub as last read, and when.
    stored: std::sync::Mutex<Option<(std::time::Instant, Option<Settings>)>>,
}

impl Sso {
    /// `http` is the hub's shared outbound client (`outbound.rs`: no redirects
    /// followed, a deadline on every request).
    pub fn new(env: Option<Settings>, password_login: bool, http: reqwest::Client) -> Self {
        Sso {
            env,
            password_login,
            http: provider::Http(http),
            cache: provider::ProviderCache::default(),
            exchanges: tokio::sync::Semaphore::new(EXCHANGES),
            stored: std::sync::Mutex::new(None),
        }
    }

    /// The provider set through the hub, if read within [`SETTINGS_TTL`].
    pub fn cached(&self) -> Option<Option<Settings>> {
        let stored = self.stored.lock().ok()?;
        stored
            .as_ref()
            .filter(|(at, _)| at.elapsed() < SETTINGS_TTL)
            .map(|(_, s)| s.clone())
    }

    pub fn remember(&self, settings: Option<Settings>) {
        if let Ok(mut stored) = self.stored.lock() {
            *stored = Some((std::time::Instant::now(), settings));
        }
    }

    /// Read it again next time (it was just changed on this hub).
    pub fn forget(&self) {
        if let Ok(mut stored) = self.stored.lock() {
            *stored = None;
        }
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
