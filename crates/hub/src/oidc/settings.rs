//! Which provider the hub signs people in with (SPEC §14): from the environment
//! (`MUSTER_OIDC_*`, `MUSTER_ENTRA_TENANT_ID`), which wins, else as set through the
//! hub (`muster sso set`, the secret encrypted under the hub secret). Checked the
//! same way from both: an `http://` issuer only on a loopback address.

use muster_proto::SetSsoRequest;
use muster_store::SsoSettingsRecord;

use crate::error::{ApiFailure, ApiResult};
use crate::secrets::Keys;

/// Associated data of the client secret's ciphertext: it opens as nothing else.
pub const SECRET_AAD: &[u8] = b"muster sso client secret";
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";
pub const DEFAULT_SCOPES: &[&str] = &["profile", "email"];
pub const DEFAULT_NAME: &str = "single sign-on";

/// The provider as the sign-in flow uses it.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// On the button: "Sign in with …".
    pub display_name: String,
    pub groups_claim: String,
    /// Besides `openid`, which is always asked for.
    pub scopes: Vec<String>,
    /// `environment` or `hub`.
    pub source: &'static str,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// `MUSTER_OIDC_*` as the hub was started with (`HubOptions::sso`).
#[derive(Clone, Default)]
pub struct SsoEnv {
    pub issuer: Option<String>,
    pub entra_tenant: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub display_name: Option<String>,
    pub groups_claim: Option<String>,
    pub scopes: Option<Vec<String>>,
}

impl std::fmt::Debug for SsoEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoEnv")
            .field("issuer", &self.issuer)
            .field("entra_tenant", &self.entra_tenant)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl SsoEnv {
    /// Whether any of it was given.
    pub fn is_set(&self) -> bool {
        self.issuer.is_some() || self.entra_tenant.is_some() || self.client_id.is_some()
    }

    /// The settings, checked; `Ok(None)` when SSO is not configured by environment.
    pub fn settings(&self) -> Result<Option<Settings>, String> {
        if !self.is_set() {
            return Ok(None);
        }
        let req = SetSsoRequest {
            issuer: self.issuer.clone(),
            entra_tenant: self.entra_tenant.clone(),
            client_id: self.client_id.clone().ok_or(
                "MUSTER_OIDC_CLIENT_ID is missing: the provider's client (application) ID",
            )?,
            client_secret: self.client_secret.clone(),
            display_name: self.display_name.clone(),
            groups_claim: self.groups_claim.clone(),
            scopes: self.scopes.clone(),
        };
        check(&req, "environment").map(Some)
    }
}

/// The issuer of a Microsoft Entra tenant (v2.0 endpoints). Only the tenant's ID
/// (a GUID) will do: Entra's discovery document names the issuer by it, so a
/// domain name would make an issuer that never matches.
pub fn entra_issuer(tenant: &str) -> Result<String, String> {
    let groups: Vec<&str> = tenant.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if !ok {
        return Err(format!(
            "{tenant:?} is not an Entra tenant ID: expected the directory (tenant) ID, a GUID \
             such as 72f988bf-86f1-41af-91ab-2d7cd011db47 (Entra admin center, Overview)"
        ));
    }
    Ok(format!(
        "https://login.microsoftonline.com/{}/v2.0",
        tenant.to_ascii_lowercase()
    ))
}

/// Whether an issuer is Microsoft Entra's (its `preferred_username` is the UPN,
/// which the tenant's admins control, and its `email` may be unverified).
pub fn is_entra(issuer: &str) -> bool {
    issuer.starts_with("https://login.microsoftonline.com/")
}

/// An issuer URL as we accept it: `https://…`, or `http://` on a loopback address
/// (a local provider, tests); no query, fragment or credentials; no trailing slash
/// added or removed (the provider's `iss` must match it exactly).
pub fn check_issuer(issuer: &str) -> Result<(), String> {
    let bad = |why: &str| format!("{issuer:?} {why}");
    let rest = if let Some(r) = issuer.strip_prefix("https://") {
        r
    } else if let Some(r) = issuer.strip_prefix("http://") {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(bad(
                "is plain http: an issuer must be https:// (http:// only on a loopback address)",
            ));
        }
        r
    } else {
        return Err(bad("is not an https:// URL"));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("has no host"));
    }
    if rest
        .chars()
        .any(|c| matches!(c, '?' | '#' | '@' | ' ') || c.is_control())
        || issuer.len() > 512
    {
        return Err(bad("must be a plain URL (no query, fragment or user)"));
    }
    Ok(())
}

fn check_word(what: &str, v: &str, max: usize) -> Result<(), String> {
    if v.is_empty() || v.len() > max || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{what} must be 1 to {max} characters without spaces"
        ));
    }
    Ok(())
}

/// A request to set the provider, checked and completed with defaults.
pub fn check(req: &SetSsoRequest, source: &'static str) -> Result<Settings, String> {
    let issuer = match (&req.issuer, &req.entra_tenant) {
        (Some(_), Some(_)) => {
            return Err("give the issuer or the Entra tenant, not both".to_owned());
        }
        (Some(i), None) => i.clone(),
        (None, Some(t)) => entra_issuer(t)?,
        (None, None) => {
            return Err(
                "the provider is missing: give its issuer URL (MUSTER_OIDC_ISSUER, --issuer) \
                 or an Entra tenant ID (MUSTER_ENTRA_TENANT_ID, --entra-tenant)"
                    .to_owned(),
            );
        }
    };
    check_issuer(&issuer)?;
    check_word("the client ID", &req.client_id, 256)?;
    if let Some(s) = &req.client_secret
        && (s.is_empty() || s.len() > 1024)
    {
        return Err("the client secret must be 1 to 1024 characters".to_owned());
    }
    let display_name = req.display_name.clone().unwrap_or_else(|| {
        if req.entra_tenant.is_some() {
            "Microsoft".to_owned()
        } else {
            DEFAULT_NAME.to_owned()
        }
    });
    if display_name.is_empty()
        || display_name.chars().count() > 60
        || display_name.chars().any(char::is_control)
    {
        return Err("the display name must be 1 to 60 characters".to_owned());
    }
    let groups_claim = req
        .groups_claim
        .clone()
        .unwrap_or_else(|| DEFAULT_GROUPS_CLAIM.to_owned());
    check_word("the groups claim", &groups_claim, 100)?;
    // Given scopes add to the defaults: without `email` nobody added by email
    // would ever match, and `--scope groups` is meant as "and groups".
    let mut scopes: Vec<String> = DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect();
    for s in req.scopes.iter().flatten() {
        if s != "openid" && !scopes.contains(s) {
            scopes.push(s.clone());
        }
    }
    if scopes.len() > 20 {
        return Err("at most 20 scopes".to_owned());
    }
    for s in &scopes {
        check_word("a scope", s, 100)?;
    }
    Ok(Settings {
        issuer,
        client_id: req.client_id.clone(),
        client_secret: req.client_secret.clone(),
        display_name,
        groups_claim,
        scopes,
        source,
    })
}

/// The stored form of settings set through the hub.
pub fn to_record(s: &Settings, keys: &Keys, now: i64) -> SsoSettingsRecord {
    SsoSettingsRecord {
        issuer: s.issuer.clone(),
        client_id: s.client_id.clone(),
        client_secret: s
            .client_secret
            .as_ref()
            .map(|v| keys.encrypt(v.as_bytes(), SECRET_AAD)),
        display_name: Some(s.display_name.clone()),
        groups_claim: Some(s.groups_claim.clone()),
        scopes: s.scopes.clone(),
        updated_at: now,
    }
}

/// Settings set through the hub, the secret decrypted.
pub fn from_record(r: SsoSettingsRecord, keys: &Keys) -> ApiResult<Settings> {
    let client_secret = match &r.client_secret {
        Some(ct) => Some(
            keys.decrypt(ct, SECRET_AAD)
                .ok()
                .and_then(|p| String::from_utf8(p).ok())
                .ok_or_else(|| {
                    ApiFailure::internal(
                        "the stored SSO client secret does not open",
                        &"wrong hub secret?",
                    )
                })?,
        ),
        None => None,
    };
    Ok(Settings {
        issuer: r.issuer,
        client_id: r.client_id,
        client_secret,
        display_name: r.display_name.unwrap_or_else(|| DEFAULT_NAME.to_owned()),
        groups_claim: r
            .groups_claim
            .unwrap_or_else(|| DEFAULT_GROUPS_CLAIM.to_owned()),
        scopes: r.scopes,
        source: "hub",
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn http_issuers_only_on_loopback() {
        for ok in [
            "https://login.example.com",
            "https://login.microsoftonline.com/t/v2.0",
            "http://127.0.0.1:9000",
            "http://localhost:8080/realms/x",
            "http://[::1]:5556/dex",
        ] {
            assert!(check_issuer(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example.com",
            "http://10.0.0.1:9000",
            "http://127.0.0.1.evil.example",
            "ftp://x",
            "https://",
            "https://x/?a=b",
            "https://u@x",
        ] {
            assert!(check_issuer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entra_preset_makes_the_issuer() {
        let s = check(
            &SetSsoRequest {
                entra_tenant: Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
                client_id: "app".into(),
                ..Default::default()
            },
            "hub",
        )
        .unwrap();
        assert_eq!(
            s.issuer,
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"
        );
        assert_eq!(s.display_name, "Microsoft");
        assert_eq!(s.scopes, ["profile", "email"]);
        assert!(entra_issuer("a/b").is_err());
        assert!(entra_issuer("contoso.onmicrosoft.com").is_err());
        let s = check(
            &SetSsoRequest {
                issuer: Some("https://idp.example.com".into()),
                client_id: "app".into(),
                scopes: Some(vec!["groups".into(), "openid".into(), "email".into()]),
                ..Default::default()
            },
            "hub",
        )
        .unwrap();
        assert_eq!(
            s.scopes,
            ["profile", "email", "groups"],
            "added to the defaults"
        );
    }
}
