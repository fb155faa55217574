//! Integrations (SPEC §15): external HTTPS APIs the hub probes itself. This module
//! owns the rules and the calls; `handlers/integrations.rs` adds the store, the
//! audit and the wire. It knows the hub's keys and its outbound client, not its
//! state.
//!
//! Invariants:
//! - A credential is plain only in memory, inside [`Credentials`] (whose `Debug`
//!   hides it) and the request headers (marked sensitive). At rest it is
//!   AES-256-GCM ciphertext under the hub secret, bound to the integration's name.
//!   Anything an API sends back is scrubbed of it before it goes anywhere.
//! - A probe reaches only URLs under the integration's base URL: same scheme, host
//!   and port, below its path. `https://` only, `http://` on a loopback address.

use std::collections::BTreeMap;
use std::time::Instant;

use base64::Engine as _;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};

use crate::outbound;
use crate::secrets::Keys;

/// Associated data of a secret's ciphertext, before the integration's name: it
/// opens as nothing else, and not as another integration's.
const SECRET_AAD: &[u8] = b"muster integration secret\0";
/// Longest name, URL, probe path and secret accepted.
const MAX_NAME: usize = 63;
const MAX_URL: usize = 2048;
const MAX_SECRET: usize = 4096;
/// How much of an API's answer a failed test quotes.
const ERROR_BODY_CHARS: usize = 200;
/// Response headers a probe passes on: what describes the body, caching and rate
/// limits. Others may carry session cookies or internal details.
const SAFE_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "content-language",
    "etag",
    "last-modified",
    "date",
    "cache-control",
    "expires",
    "age",
    "retry-after",
    "x-request-id",
];
/// Header names an `auth = header` integration may not set: the ones that frame
/// the request itself.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
];

pub const KINDS: &[&str] = &["http"];
pub const AUTHS: &[&str] = &["none", "bearer", "basic", "header"];

/// The probes an integration of `kind` offers.
pub fn probes(kind: &str) -> Vec<String> {
    match kind {
        "http" => vec![muster_proto::HTTP_GET.to_owned()],
        _ => Vec::new(),
    }
}

/// A credential, plain, in memory only.
pub enum Credentials {
    None,
    Bearer(String),
    /// `user:password`.
    Basic(String),
    Header(HeaderName, String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "Credentials::None",
            Credentials::Bearer(_) => "Credentials::Bearer(<redacted>)",
            Credentials::Basic(_) => "Credentials::Basic(<redacted>)",
            Credentials::Header(..) => "Credentials::Header(<redacted>)",
        })
    }
}

impl Credentials {
    /// From what an admin gave; `Err` says what is wrong (never echoing the secret).
    pub fn new(
        auth: &str,
        header_name: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Credentials, String> {
        if header_name.is_some() && auth != "header" {
            return Err("a header name is only for --auth header".to_owned());
        }
        if let Some(s) = secret {
            if s.is_empty() || s.len() > MAX_SECRET {
                return Err(format!("the secret must be 1 to {MAX_SECRET} bytes long"));
            }
            if s.chars().any(|c| c.is_control()) {
                return Err("the secret holds a control character (a newline?)".to_owned());
            }
        }
        let need = |what: &str| format!("--auth {auth} needs a secret ({what})");
        let creds = match auth {
            "none" => {
                if secret.is_some() {
                    return Err("--auth none takes no secret".to_owned());
                }
                Credentials::None
            }
            "bearer" => Credentials::Bearer(secret.ok_or_else(|| need("the token"))?.to_owned()),
            "basic" => {
                let s = secret.ok_or_else(|| need("user:password"))?;
                if !s.contains(':') {
                    return Err("--auth basic: the secret is user:password".to_owned());
                }
                Credentials::Basic(s.to_owned())
            }
            "header" => {
                let name = header_name.ok_or("--auth header needs --header-name")?;
                let parsed = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{name:?} is not a header name"))?;
                if RESERVED_HEADERS.contains(&parsed.as_str()) {
                    return Err(format!("the {name} header cannot carry a secret"));
                }
                Credentials::Header(
                    parsed,
                    secret.ok_or_else(|| need("the header's value"))?.to_owned(),
                )
            }
            other => {
                return Err(format!(
                    "unknown auth {other:?}: one of {}",
                    AUTHS.join(", ")
                ));
            }
        };
        if creds.secret().is_some() && creds.header().is_none() {
            return Err("the secret cannot go in an HTTP header".to_owned());
        }
        Ok(creds)
    }

    /// The plain secret, to seal.
    pub fn secret(&self) -> Option<&str> {
        match self {
            Credentials::None => None,
            Credentials::Bearer(s) | Credentials::Basic(s) | Credentials::Header(_, s) => Some(s),
        }
    }

    /// The header to send, marked sensitive (kept out of debug output).
    fn header(&self) -> Option<(HeaderName, HeaderValue)> {
        let (name, value) = match self {
            Credentials::None => return None,
            Credentials::Bearer(t) => (AUTHORIZATION, format!("Bearer {t}")),
            Credentials::Basic(up) => (
                AUTHORIZATION,
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(up)
                ),
            ),
            Credentials::Header(n, v) => (n.clone(), v.clone()),
        };
        let mut value = HeaderValue::from_str(&value).ok()?;
        value.set_sensitive(true);
        Some((name, value))
    }

    /// `text` with every form of the secret an API might echo replaced.
    fn scrub(&self, text: &str) -> String {
        let mut forms: Vec<String> = Vec::new();
        match self {
            Credentials::None => {}
            Credentials::Bearer(s) | Credentials::Header(_, s) => forms.push(s.clone()),
            Credentials::Basic(up) => {
                forms.push(base64::engine::general_purpose::STANDARD.encode(up));
                forms.push(up.clone());
                if let Some((_, password)) = up.split_once(':')
                    && !password.is_empty()
                {
                    forms.push(password.to_owned());
                }
            }
        }
        let mut out = text.to_owned();
        for f in forms.iter().filter(|f| !f.is_empty()) {
            out = out.replace(f.as_str(), "<redacted>");
        }
        out
    }
}

fn aad(name: &str) -> Vec<u8> {
    let mut aad = SECRET_AAD.to_vec();
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// The ciphertext stored for `creds` of the integration `name`.
pub fn seal(keys: &Keys, name: &str, creds: &Credentials) -> Option<String> {
    creds
        .secret()
        .map(|s| keys.encrypt(s.as_bytes(), &aad(name)))
}

/// The credentials of a stored integration.
pub fn open(
    keys: &Keys,
    name: &str,
    auth: &str,
    header_name: Option<&str>,
    sealed: Option<&str>,
) -> Result<Credentials, String> {
    let secret = match sealed {
        None => None,
        Some(ct) => Some(
            keys.decrypt(ct, &aad(name))
                .ok()
                .and_then(|p| String::from_utf8(p).ok())
                .ok_or("the stored secret does not open with this hub secret; add the integration again")?,
        ),
    };
    Credentials::new(auth, header_name, secret.as_deref())
        .map_err(|e| format!("the stored integration is not valid: {e}"))
}

/// A stored secret sealed again under a new hub secret (`muster hub rotate-secret`).
pub fn reseal(
    old: &Keys,
    new: &Keys,
    name: &str,
    sealed: &str,
) -> Result<String, crate::secrets::SecretError> {
    let plain = old.decrypt(sealed, &aad(name))?;
    Ok(new.encrypt(&plain, &aad(name)))
}

/// An integration's name: lower-case letters, digits, `.`, `_`, `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an integration name: 1 to {MAX_NAME} lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
        ))
    }
}

/// A base URL as accepted: `https://`, or `http://` on a loopback address (a local
/// API, tests); a host; no credentials, query or fragment.
pub fn check_url(url: &str) -> Result<Url, String> {
    if url.len() > MAX_URL {
        return Err(format!("the URL is longer than {MAX_URL} characters"));
    }
    // Not echoed until it is known to hold no credentials.
    let parsed = Url::parse(url).map_err(|e| format!("the URL is not valid: {e}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "the URL holds credentials: give them with --auth and the secret instead".to_owned(),
        );
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("{url:?} has no host"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(format!(
                "{url:?} is plain http: an integration must be https:// (http:// only on a loopback address)"
            ));
        }
        _ => return Err(format!("{url:?} is not an https:// URL")),
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "{url:?} has a query or fragment: give the base URL only"
        ));
    }
    Ok(parsed)
}

pub(crate) fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `path` (as given to `http.get`) under `base`. It must start with one `/`; it
/// may end with a query; no `.` or `..` segment (percent-encoded or not), no
/// backslash, fragment, space or control character. The result is checked to be
/// under `base` all the same.
pub fn join(base: &Url, path: &str) -> Result<Url, String> {
    if path.len() > MAX_URL {
        return Err(format!("the path is longer than {MAX_URL} characters"));
    }
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(format!(
            "{path:?} is not a path: it must start with a single '/' (no scheme or host)"
        ));
    }
    if path
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\' || c == '#')
    {
        return Err(format!(
            "{path:?}: no spaces, backslashes, '#' or control characters"
        ));
    }
    let (only_path, _) = path.split_once('?').unwrap_or((path, ""));
    let decoded = percent_decode(only_path);
    if decoded.split(['/', '\\']).any(|s| s == "." || s == "..") {
        return Err(format!("{path:?}: '.' and '..' segments are refused"));
    }
    let base_str = base.as_str();
    let stem = base_str.strip_suffix('/').unwrap_or(base_str);
    let joined = Url::parse(&format!("{stem}{path}")).map_err(|e| format!("{path:?}: {e}"))?;
    let base_path = base.path().trim_end_matches('/');
    let under = joined.scheme() == base.scheme()
        && joined.host_str() == base.host_str()
        && joined.port_or_known_default() == base.port_or_known_default()
        && joined.username().is_empty()
        && joined.password().is_none()
        && joined.fragment().is_none()
        && joined
            .path()
            .strip_prefix(base_path)
            .is_some_and(|rest| rest.starts_with('/'));
    if !under {
        return Err(format!("{path:?} leads outside the integration's URL"));
    }
    Ok(joined)
}

/// `%XX` decoded, anything else kept (lossy: this is for checking, not sending).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How a "test connection" went.
#[derive(Debug)]
pub struct TestOutcome {
    /// `connected` or `error`.
    pub status: &'static str,
    pub http_status: Option<u16>,
    /// One line, no secrets.
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// "Test connection": a GET of the base URL with the credentials. `connected` on a
/// 2xx answer only; a redirect (not followed), 4xx or 5xx is `error`, quoting the
/// status and at most [`ERROR_BODY_CHARS`] characters of the answer on one line.
pub async fn test(http: &reqwest::Client, base: &Url, creds: &Credentials) -> TestOutcome {
    let started = Instant::now();
    let answer = get(http, base, creds, ERROR_BODY_CHARS * 4).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    match answer {
        Err(e) => TestOutcome {
            status: "error",
            http_status: None,
            error: Some(creds.scrub(&one_line(&e, 300))),
            duration_ms,
        },
        Ok(a) if a.status.is_success() => TestOutcome {
            status: "connected",
            http_status: Some(a.status.as_u16()),
            error: None,
            duration_ms,
        },
        Ok(a) => {
            let mut why = format!("HTTP {}", a.status);
            if a.status.is_redirection() {
                why.push_str(": a redirect (not followed); give the URL the API answers at");
            } else {
                let body = one_line(
                    &creds.scrub(&String::from_utf8_lossy(&a.body)),
                    ERROR_BODY_CHARS,
                );
                if !body.is_empty() {
                    why.push_str(": ");
                    why.push_str(&body);
                }
            }
            TestOutcome {
                status: "error",
                http_status: Some(a.status.as_u16()),
                error: Some(why),
                duration_ms,
            }
        }
    }
}

/// `text` on one line (control characters as spaces, runs of them as one), at
/// most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    for word in text.split(|c: char| c.is_control() || c.is_whitespace()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.chars().count() > max {
        out = out.chars().take(max).collect::<String>() + "…";
    }
    out
}

struct Answer {
    status: reqwest::StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
    truncated: bool,
}

async fn get(
    http: &reqwest::Client,
    url: &Url,
    creds: &Credentials,
    cap: usize,
) -> Result<Answer, String> {
    let mut req = http.get(url.clone());
    if let Some((name, value)) = creds.header() {
        req = req.header(name, value);
    }
    let mut resp = req.send().await.map_err(|e| outbound::describe(&e))?;
    let (body, truncated) = outbound::read_bounded(&mut resp, cap)
        .await
        .map_err(|e| outbound::describe(&e))?;
    Ok(Answer {
        status: resp.status(),
        headers: resp.headers().clone(),
        body,
        truncated,
    })
}

/// `http.get`: the answer at `url` (already [`join`]ed), whatever its status; an
/// error only when there was none. The body is bounded, and scrubbed of the
/// secret like the headers passed on.
pub async fn http_get(
    http: &reqwest::Client,
    url: &Url,
    creds: &Credentials,
) -> muster_proto::IntegrationProbeResult {
    let started = Instant::now();
    let answer = get(http, url, creds, muster_proto::INTEGRATION_BODY_MAX).await;
    let mut result = muster_proto::IntegrationProbeResult {
        integration: String::new(),
        probe: muster_proto::HTTP_GET.to_owned(),
        status: None,
        headers: BTreeMap::new(),
        json: None,
        text: None,
        truncated: false,
        error: None,
        duration_ms: 0,
    };
    match answer {
        Err(e) => result.error = Some(creds.scrub(&one_line(&e, 300))),
        Ok(a) => {
            result.status = Some(a.status.as_u16());
            result.truncated = a.truncated;
            for (name, value) in &a.headers {
                let name = name.as_str();
                let safe = SAFE_HEADERS.contains(&name)
                    || name.starts_with("x-ratelimit-")
                    || name.starts_with("ratelimit");
                if safe && let Ok(v) = value.to_str() {
                    result.headers.insert(name.to_owned(), creds.scrub(v));
                }
            }
            let text = creds.scrub(&String::from_utf8_lossy(&a.body));
            let json_type = a
                .headers
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.contains("json"));
            match (json_type && !a.truncated)
                .then(|| serde_json::from_str::<serde_json::Value>(&text).ok())
                .flatten()
            {
                Some(v) => result.json = Some(v),
                None => result.text = Some(text),
            }
        }
    }
    result.duration_ms = started.elapsed().as_millis() as u64;
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urls_are_https_or_loopback_http_without_credentials() {
        assert!(check_url("https://api.example.com/v1").is_ok());
        assert!(check_url("http://127.0.0.1:8080/").is_ok());
        assert!(check_url("http://[::1]:8080").is_ok());
        assert!(check_url("http://localhost/x").is_ok());
        assert!(check_url("http://api.example.com/").is_err());
        assert!(check_url("ftp://api.example.com/").is_err());
        for with_creds in [
            "https://user:hunter2@api.example.com/",
            "http://user:hunter2@api.example.com/",
            "ftp://user:hunter2@api.example.com/",
            "https://user:hunter2@[bad/",
        ] {
            let why = check_url(with_creds).unwrap_err();
            assert!(!why.contains("hunter2"), "{why}");
        }
        assert!(check_url("https://api.example.com/?k=v").is_err());
        assert!(check_url("https://api.example.com/#f").is_err());
    }

    #[test]
    fn paths_stay_under_the_base() {
        let base = check_url("https://api.example.com/v1").unwrap();
        assert_eq!(
            join(&base, "/items?page=2").unwrap().as_str(),
            "https://api.example.com/v1/items?page=2"
        );
        let slash = check_url("https://api.example.com/v1/").unwrap();
        assert_eq!(
            join(&slash, "/items").unwrap().as_str(),
            "https://api.example.com/v1/items"
        );
        for bad in [
            "items",
            "//evil.example.com/x",
            "https://evil.example.com/",
            "/../admin",
            "/a/../../admin",
            "/%2e%2e/admin",
            "/%2E%2e%2fadmin",
            "/a\\..\\b",
            "/x#frag",
            "/x y",
            "/x\n",
            "/.",
            "",
        ] {
            assert!(join(&base, bad).is_err(), "{bad:?} accepted");
        }
        // `@` in a path is a path character, not a user name.
        assert_eq!(
            join(&base, "/@evil.example.com").unwrap().host_str(),
            Some("api.example.com")
        );
    }

    #[test]
    fn credentials_are_checked_and_scrubbed() {
        assert!(Credentials::new("none", None, Some("s")).is_err());
        assert!(Credentials::new("bearer", None, None).is_err());
        assert!(Credentials::new("basic", None, Some("nocolon")).is_err());
        assert!(Credentials::new("header", None, Some("v")).is_err());
        assert!(Credentials::new("header", Some("Host"), Some("v")).is_err());
        assert!(Credentials::new("bearer", Some("X-Key"), Some("v")).is_err());
        assert!(Credentials::new("bearer", None, Some("a\nb")).is_err());
        // Bytes past ASCII go as they are (obs-text), as the API was given them.
        assert!(Credentials::new("bearer", None, Some("caf\u{e9}")).is_ok());
        let basic = Credentials::new("basic", None, Some("alice:s3cret")).unwrap();
        assert_eq!(
            basic.scrub("you sent alice:s3cret, i.e. s3cret, YWxpY2U6czNjcmV0"),
            "you sent <redacted>, i.e. <redacted>, <redacted>"
        );
        assert!(!format!("{basic:?}").contains("s3cret"));
    }

    #[test]
    fn secrets_open_only_under_their_own_name() {
        let keys = Keys::derive(b"a test secret of some length").unwrap();
        let creds = Credentials::new("bearer", None, Some("tok")).unwrap();
        let sealed = seal(&keys, "one", &creds).unwrap();
        assert!(!sealed.contains("tok"));
        let opened = open(&keys, "one", "bearer", None, Some(&sealed)).unwrap();
        assert_eq!(opened.secret(), Some("tok"));
        assert!(open(&keys, "two", "bearer", None, Some(&sealed)).is_err());
    }
}
