//! The OpenID Connect relying party (SPEC §14), on the `openidconnect` crate over
//! the hub's one HTTP client: discovery and the provider's keys (cached, the keys
//! fetched again when a token names one we do not have), the authorization URL with
//! PKCE, `state` and `nonce`, the code exchange, the ID token's checks (signature,
//! issuer, audience, expiry within a bounded clock skew, nonce), and the userinfo
//! endpoint for providers that keep claims there.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClientAuthMethod,
    CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthType, AuthorizationCode, ClaimsVerificationError, Client, ClientId,
    ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IdTokenFields, IssuerUrl, JsonWebKeySet, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, SignatureVerificationError,
    StandardErrorResponse, StandardTokenResponse, SubjectIdentifier, TokenResponse as _,
    UserInfoClaims,
};
use serde::{Deserialize, Serialize};

use super::settings::Settings;

/// Claims beyond the standard ones, kept whole: the groups claim's name is
/// configurable, and Entra's overage markers (`_claim_names`) live here too.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Extra {
    #[serde(flatten)]
    pub rest: BTreeMap<String, serde_json::Value>,
}
impl AdditionalClaims for Extra {}

type Tokens = StandardTokenResponse<
    IdTokenFields<
        Extra,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

type OidcClient = Client<
    Extra,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// How far the provider's clock may be from ours when we judge `exp` and `iat`.
pub const CLOCK_SKEW: Duration = Duration::from_secs(120);
/// Discovery is read again after this long (keys are refetched on an unknown `kid`).
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// A provider that failed discovery is not asked again sooner than this.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Keys are not fetched again for a `kid` the provider's keys lacked this recently:
/// a token signed by a key nobody published must not make us fetch on every try,
/// while a real rotation (a new `kid`) is picked up at once. (Tokens come only
/// from code exchanges, which are bounded, and their `kid` is the provider's.)
const MISSING_KID_MEMORY: Duration = Duration::from_secs(60);
const MISSING_KIDS_KEPT: usize = 16;
/// Largest answer read from the provider.
const MAX_RESPONSE: usize = 1024 * 1024;

/// What can go wrong talking to the provider, as said to people and the audit log.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the provider could not be reached or answered badly: {0}")]
    Unreachable(String),
    #[error("the provider refused the code: {0}")]
    Exchange(String),
    #[error("the ID token was refused: {kind}")]
    Token { kind: &'static str, detail: String },
}

impl OidcError {
    /// The audit entry's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            OidcError::Unreachable(_) => "provider_unreachable",
            OidcError::Exchange(_) => "code_refused",
            OidcError::Token { .. } => "token_invalid",
        }
    }
}

/// The error type our HTTP adapter gives the crate.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Request(String),
    #[error("the answer is larger than {MAX_RESPONSE} bytes")]
    TooLarge,
}

/// The hub's HTTP client as the `openidconnect` crate wants one. A named type with
/// a boxed, `Send` future (a closure over a borrowed client would not be `Send`
/// for every lifetime, which axum's handlers need).
#[derive(Clone)]
pub struct Http(pub reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(send(&self.0, request))
    }
}

/// One request through the hub's client: no redirects followed (the client is
/// built so), a deadline, and a bounded body.
async fn send(
    http: &reqwest::Client,
    req: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (mut parts, body) = req.into_parts();
    // reqwest sets the length from the body; a second Content-Length (the crate
    // sets one too) makes strict servers reset the connection.
    parts
        .headers
        .remove(openidconnect::http::header::CONTENT_LENGTH);
    let mut resp = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| HttpError::Request(without_url(&e)))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| HttpError::Request(without_url(&e)))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(HttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let mut out = openidconnect::http::Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// A reqwest error said without its URL (the userinfo and token URLs carry no
/// secrets, but an authorization URL would; none is ever fetched, still).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "the provider");
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// What the provider told us, cached.
#[derive(Clone)]
pub struct Discovered {
    issuer: String,
    metadata: CoreProviderMetadata,
    fetched: Instant,
    keys_fetched: Instant,
}

/// The provider's discovery and keys, fetched once and shared; one fetch at a time.
#[derive(Default)]
pub struct ProviderCache {
    state: tokio::sync::Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    found: Option<Discovered>,
    failed: Option<(String, Instant, String)>,
    /// Key ids a refresh did not find, and when.
    missing: std::collections::VecDeque<(String, Instant)>,
}

impl ProviderCache {
    /// The provider at `issuer`, from the cache when fresh.
    pub async fn get(&self, http: &Http, issuer: &str) -> Result<Discovered, OidcError> {
        let mut st = self.state.lock().await;
        if let Some(d) = &st.found
            && d.issuer == issuer
            && d.fetched.elapsed() < METADATA_TTL
        {
            return Ok(d.clone());
        }
        if let Some((i, at, why)) = &st.failed
            && i == issuer
            && at.elapsed() < RETRY_AFTER_FAILURE
        {
            return Err(OidcError::Unreachable(why.clone()));
        }
        match discover(http, issuer).await {
            Ok(d) => {
                st.found = Some(d.clone());
                st.failed = None;
                Ok(d)
            }
            Err(e) => {
                st.failed = Some((issuer.to_owned(), Instant::now(), e.to_string()));
                Err(e)
            }
        }
    }

    /// Fetch the keys again (a token named a key we do not have), unless that was
    /// done a moment ago. Returns the provider with whatever keys it has now.
    async fn refresh_keys(
        &self,
        http: &Http,
        stale: &Discovered,
        kid: &str,
    ) -> Result<Discovered, OidcError> {
        let mut st = self.state.lock().await;
        let current = match &st.found {
            Some(d) if d.issuer == stale.issuer => d.clone(),
            _ => stale.clone(),
        };
        st.missing
            .retain(|(_, at)| at.elapsed() < MISSING_KID_MEMORY);
        let known_missing = st.missing.iter().any(|(k, _)| k == kid);
        // Someone else fetched meanwhile, or this kid was missing a moment ago:
        // what we have is the answer.
        if current.keys_fetched > stale.keys_fetched || known_missing {
            return Ok(current);
        }
        let keys = JsonWebKeySet::fetch_async(current.metadata.jwks_uri(), http)
            .await
            .map_err(|e| OidcError::Unreachable(format!("fetching its keys: {}", chain(&e))))?;
        let has_kid = keys.keys().iter().any(|k: &CoreJsonWebKey| {
            use openidconnect::JsonWebKey as _;
            k.key_id().is_some_and(|id| id.as_str() == kid)
        });
        if !has_kid {
            if st.missing.len() >= MISSING_KIDS_KEPT {
                st.missing.pop_front();
            }
            st.missing.push_back((kid.to_owned(), Instant::now()));
        }
        let mut fresh = current;
        fresh.metadata = fresh.metadata.set_jwks(keys);
        fresh.keys_fetched = Instant::now();
        st.found = Some(fresh.clone());
        Ok(fresh)
    }
}

async fn discover(http: &Http, issuer: &str) -> Result<Discovered, OidcError> {
    let url = IssuerUrl::new(issuer.to_owned())
        .map_err(|e| OidcError::Unreachable(format!("the issuer URL: {e}")))?;
    // Checks that the document names this issuer, and fetches the keys.
    let metadata = CoreProviderMetadata::discover_async(url, http)
        .await
        .map_err(|e| OidcError::Unreachable(format!("discovery: {}", chain(&e))))?;
    let now = Instant::now();
    Ok(Discovered {
        issuer: issuer.to_owned(),
        metadata,
        fetched: now,
        keys_fetched: now,
    })
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn client_for(
    d: &Discovered,
    settings: &Settings,
    redirect: &str,
) -> Result<OidcClient, OidcError> {
    let redirect = RedirectUrl::new(redirect.to_owned())
        .map_err(|e| OidcError::Unreachable(format!("the redirect URL: {e}")))?;
    let client = OidcClient::from_provider_metadata(
        d.metadata.clone(),
        ClientId::new(settings.client_id.clone()),
        settings.client_secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(redirect);
    // Basic authentication unless the provider only takes the secret in the body.
    let methods = d.metadata.token_endpoint_auth_methods_supported();
    let post_only = methods.is_some_and(|m| {
        m.contains(&CoreClientAuthMethod::ClientSecretPost)
            && !m.contains(&CoreClientAuthMethod::ClientSecretBasic)
    });
    Ok(if post_only {
        client.set_auth_type(AuthType::RequestBody)
    } else {
        client
    })
}

/// A sign-in begun: where to send the browser, and what to check on its return.
pub struct Begun {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

pub fn begin(d: &Discovered, settings: &Settings, redirect: &str) -> Result<Begun, OidcError> {
    let client = client_for(d, settings, redirect)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for scope in &settings.scopes {
        req = req.add_scope(Scope::new(scope.clone()));
    }
    let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
    Ok(Begun {
        url: url.to_string(),
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
    })
}

/// The claims of a checked sign-in: the ID token's, with the userinfo endpoint's
/// added where the token lacked them.
#[derive(Debug, Default)]
pub struct Claims {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    pub extra: BTreeMap<String, serde_json::Value>,
    /// Whether userinfo was asked.
    pub from_userinfo: bool,
}

impl Claims {
    fn lacks(&self, groups_claim: &str) -> bool {
        self.email.is_none() || !self.extra.contains_key(groups_claim)
    }
}

/// What the browser brought back, and what the sign-in kept to check it.
pub struct Returned<'a> {
    pub code: &'a str,
    pub verifier: &'a str,
    pub nonce: &'a str,
}

/// Exchange the code and check the ID token; then fill in from userinfo what the
/// token lacked.
pub async fn finish(
    cache: &ProviderCache,
    http: &Http,
    d: Discovered,
    settings: &Settings,
    redirect: &str,
    back: Returned<'_>,
) -> Result<Claims, OidcError> {
    let Returned {
        code,
        verifier,
        nonce,
    } = back;
    let client = client_for(&d, settings, redirect)?;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| OidcError::Unreachable(e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
        .request_async(http)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => {
                OidcError::Exchange(match r.error_description() {
                    Some(d) => format!("{} ({d})", r.error()),
                    None => r.error().to_string(),
                })
            }
            other => OidcError::Unreachable(format!("the token endpoint: {}", chain(&other))),
        })?;
    let id_token = tokens.id_token().ok_or_else(|| OidcError::Token {
        kind: "missing",
        detail: "the token endpoint sent no ID token".to_owned(),
    })?;
    let nonce = Nonce::new(nonce.to_owned());
    let checked = {
        let verifier = verifier_for(&client);
        id_token.claims(&verifier, &nonce).cloned()
    };
    let claims = match checked {
        Ok(c) => c,
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        )) => {
            // Perhaps the provider rotated its keys: fetch them again, once.
            let fresh = cache
                .refresh_keys(http, &d, &key_id(&id_token.to_string()))
                .await?;
            let client = client_for(&fresh, settings, redirect)?;
            let verifier = verifier_for(&client);
            id_token
                .claims(&verifier, &nonce)
                .cloned()
                .map_err(token_error)?
        }
        Err(e) => return Err(token_error(e)),
    };
    let mut out = Claims {
        subject: claims.subject().to_string(),
        email: claims.email().map(|e| e.to_string()),
        email_verified: claims.email_verified(),
        name: claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.to_string()),
        preferred_username: claims.preferred_username().map(|u| u.to_string()),
        extra: claims.additional_claims().rest.clone(),
        from_userinfo: false,
    };
    if out.lacks(&settings.groups_claim)
        && let Ok(req) = client.user_info(
            tokens.access_token().clone(),
            Some(SubjectIdentifier::new(out.subject.clone())),
        )
    {
        // The crate checks that userinfo's `sub` is the token's.
        let info: UserInfoClaims<Extra, CoreGenderClaim> = req
            .request_async(http)
            .await
            .map_err(|e| OidcError::Unreachable(format!("userinfo: {}", chain(&e))))?;
        out.from_userinfo = true;
        if out.email.is_none() {
            out.email = info.email().map(|e| e.to_string());
            out.email_verified = info.email_verified();
        }
        if out.name.is_none() {
            out.name = info.name().and_then(|n| n.get(None)).map(|n| n.to_string());
        }
        if out.preferred_username.is_none() {
            out.preferred_username = info.preferred_username().map(|u| u.to_string());
        }
        for (k, v) in &info.additional_claims().rest {
            out.extra.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Ok(out)
}

/// The `kid` in a JWT's header (empty when none), read without trusting it: only
/// to decide whether the provider's keys are worth fetching again.
fn key_id(jwt: &str) -> String {
    use base64::Engine as _;
    let header = jwt.split('.').next().unwrap_or("");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .and_then(|h| {
            h.get("kid")?
                .as_str()
                .map(|k| k.chars().take(200).collect())
        })
        .unwrap_or_default()
}

/// The ID token's checks, with the clock skew we allow: `exp` may be up to
/// [`CLOCK_SKEW`] behind our clock, `iat` up to that far ahead of it.
fn verifier_for(client: &OidcClient) -> openidconnect::IdTokenVerifier<'_, CoreJsonWebKey> {
    let skew = chrono::Duration::from_std(CLOCK_SKEW).unwrap_or_default();
    client
        .id_token_verifier()
        .set_time_fn(move || chrono::Utc::now() - skew)
        .set_issue_time_verifier_fn(move |iat| {
            if iat > chrono::Utc::now() + skew {
                Err(format!("issued in the future ({iat})"))
            } else {
                Ok(())
            }
        })
}

fn token_error(e: ClaimsVerificationError) -> OidcError {
    let kind = match &e {
        ClaimsVerificationError::Expired(_) => "expired",
        ClaimsVerificationError::InvalidAudience(_) => "wrong_audience",
        ClaimsVerificationError::InvalidIssuer(_) => "wrong_issuer",
        ClaimsVerificationError::InvalidNonce(_) => "bad_nonce",
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        ) => "unknown_key",
        ClaimsVerificationError::SignatureVerification(_) => "bad_signature",
        _ => "invalid",
    };
    OidcError::Token {
        kind,
        detail: chain(&e),
    }
}
