//! Single sign-on (SPEC §14) against a real OpenID Connect provider that no one here
//! wrote: panva's certified `oidc-provider` (npm), run on 127.0.0.1 by
//! `tests/oidc-provider/provider.mjs` (which only configures it, gives it a login
//! page and lets a test tamper with its next ID token). The browser flow runs in
//! headless Chromium from the login page's button to the fleet page.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::network::{ClearBrowserCookiesParams, GetCookiesParams};
use muster_client::AuditQuery;
use muster_testkit::{Backend, TestHub};
use serde_json::{Value, json};

use crate::binary::ok;
use crate::dashboard::browser::*;

const CLIENT_ID: &str = "muster-test";
const CLIENT_SECRET: &str = "a client secret no one else knows";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The provider, running until dropped.
struct Provider {
    child: Child,
    issuer: String,
    control: String,
}

impl Provider {
    fn start(redirect: &str, accounts: &Value) -> Provider {
        // Once per test binary: two `npm ci` at once would trip over each other.
        static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let installed = INSTALLED.get_or_init(|| {
            Command::new("bash")
                .args([
                    "-c",
                    "source scripts/oidc-provider && oidc_provider_install",
                ])
                .current_dir(repo())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(
            installed,
            "scripts/oidc-provider could not install the provider"
        );
        let clients = json!([{
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [redirect],
        }]);
        let mut child = Command::new("node")
            .arg("tests/oidc-provider/provider.mjs")
            .current_dir(repo())
            .env("PORT", "0")
            .env("CLIENTS", clients.to_string())
            .env("ACCOUNTS", accounts.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(match std::env::var_os("MUSTER_TEST_PROVIDER_LOG") {
                Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
                None => Stdio::null(),
            })
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        // Keep reading: a closed pipe would kill it at its next line.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let started: Value = serde_json::from_str(&line).expect("the provider's first line");
        Provider {
            child,
            issuer: started["issuer"].as_str().unwrap().to_owned(),
            control: started["control"].as_str().unwrap().to_owned(),
        }
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        reqwest::Client::new()
            .post(format!("{}/{path}", self.control))
            .json(&body)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn state(&self) -> Value {
        reqwest::get(format!("{}/state", self.control))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The next ID token (only) is altered: `audience`, `expired`, `unknown-key`;
    /// `rotate` signs with a new key from now on.
    async fn tamper(&self, mode: &str) {
        self.control("tamper", json!({ "mode": mode })).await;
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `muster` admin command against the hub, through the real binary, `stdin` as
/// its input.
async fn cli_with(hub: &TestHub, args: &[&str], stdin: &str) -> std::process::Output {
    crate::binary::as_admin(hub, None, args, stdin, &[]).await
}

async fn cli(hub: &TestHub, args: &[&str]) -> std::process::Output {
    cli_with(hub, args, "").await
}

/// Forget every cookie (the hub's login, the provider's session): the next person.
async fn fresh(page: &Page) {
    page.execute(ClearBrowserCookiesParams::default())
        .await
        .unwrap();
}

/// From the hub's login page through the provider's form as `subject`; returns the
/// hub page the browser ends on (its path) once it settles.
async fn sign_in(page: &Page, base: &str, subject: &str) -> String {
    open(page, &format!("{base}/login")).await;
    click(page, "#sso-login").await;
    until(
        page,
        "!!document.querySelector('input[name=login]')",
        "the provider's form",
    )
    .await;
    type_into(page, "input[name=login]", subject).await;
    type_into(page, "input[name=password]", "any password").await;
    click(page, "button[type=submit]").await;
    settle(page, base).await
}

/// Wait until the browser is back on the hub: signed in (a page with the user menu)
/// or refused (the refusal page).
async fn settle(page: &Page, base: &str) -> String {
    until(
        page,
        &format!(
            "location.origin === {:?} && document.readyState === 'complete' && \
             (!!document.getElementById('sso-error') || !!document.querySelector('[data-logout]'))",
            base
        ),
        "the hub's answer",
    )
    .await;
    eval(page, "location.pathname").await
}

/// Sign in as `subject` and expect to land on the fleet; else say why not.
async fn signs_in(page: &Page, hub: &TestHub, subject: &str) {
    let at = sign_in(page, &hub.url, subject).await;
    if at != "/" {
        panic!(
            "{subject} was not signed in: {at} says {:?}; audited: {:?}",
            refusal_text(page).await,
            refusals(hub).await.last()
        );
    }
}

async fn refusal_text(page: &Page) -> String {
    eval(
        page,
        "(document.getElementById('sso-error') || {textContent: ''}).textContent",
    )
    .await
}

/// The audit entries with this action, newest first.
async fn audited(hub: &TestHub, action: &str) -> Vec<muster_proto::AuditEntryInfo> {
    hub.admin()
        .audit(&AuditQuery {
            action: Some(action.into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// The SSO refusals audited so far, as (reason, target).
async fn refusals(hub: &TestHub) -> Vec<(String, String)> {
    audited(hub, "user.sso_refused")
        .await
        .iter()
        .rev()
        .map(|e| {
            let reason = e.details["reason"].as_str().unwrap_or("").to_owned();
            let detail = e.details["detail"].as_str().unwrap_or("");
            (format!("{reason} {detail}"), e.target.clone())
        })
        .collect()
}

async fn user(hub: &TestHub, name: &str) -> Option<muster_proto::UserInfo> {
    hub.admin()
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.name == name)
}

fn accounts() -> Value {
    let person = |email: &str, name: &str, groups: &[&str]| json!({ "email": email, "email_verified": true, "name": name, "groups": groups });
    json!({
        "alice": person("alice@example.com", "Alice Admin", &[]),
        "bob": person("bob@example.com", "Bob Ops", &["g-ops"]),
        "carol": person("Carol@Example.com", "Carol Both", &["g-ops", "g-admins"]),
        "dave": person("dave@example.com", "Dave Member", &[]),
        "mallory": person("mallory@example.com", "Mallory", &["g-unknown"]),
    })
}

#[tokio::test]
async fn single_sign_on_in_a_real_browser_against_a_real_provider() {
    let hub = TestHub::start(&Backend::Sqlite).await;
    let base = hub.url.clone();
    let provider = Provider::start(&format!("{base}/auth/oidc/callback"), &accounts());

    // Set up through the real CLI: the provider, a person by email, two groups.
    let set = [
        "sso",
        "set",
        "--issuer",
        &provider.issuer,
        "--client-id",
        CLIENT_ID,
        "--name",
        "Test IdP",
        "--client-secret-stdin",
    ];
    let refused = cli(&hub, &set).await;
    assert!(!refused.status.success(), "no secret on stdin: refused");
    let said = ok(cli_with(&hub, &set, &format!("{CLIENT_SECRET}\n")).await);
    assert!(
        said.contains(&format!("{base}/auth/oidc/callback")),
        "{said}"
    );
    let shown = ok(cli(&hub, &["sso", "show"]).await);
    assert!(
        shown.contains("Client secret: set") && !shown.contains(CLIENT_SECRET),
        "{shown}"
    );
    // The secret is stored, encrypted: not in the database in the clear.
    assert_eq!(
        hub.count("SELECT COUNT(*) FROM hub_meta WHERE key = 'sso_client_secret'")
            .await,
        1
    );
    let clear = format!(
        "SELECT (SELECT COUNT(*) FROM hub_meta WHERE value LIKE '%{CLIENT_SECRET}%') + \
         (SELECT COUNT(*) FROM sso_settings WHERE client_id || issuer LIKE '%{CLIENT_SECRET}%')"
    );
    assert_eq!(hub.count(&clear).await, 0);
    ok(cli(
        &hub,
        &["users", "add", "alice@example.com", "--role", "admin"],
    )
    .await);
    ok(cli(
        &hub,
        &["users", "add", "dave@example.com", "--role", "member"],
    )
    .await);
    ok(cli(
        &hub,
        &[
            "sso",
            "groups",
            "add",
            "g-ops",
            "--name",
            "Operations",
            "--role",
            "member",
        ],
    )
    .await);
    ok(cli(
        &hub,
        &[
            "sso", "groups", "add", "g-admins", "--name", "Admins", "--role", "admin",
        ],
    )
    .await);
    let groups = ok(cli(&hub, &["sso", "groups", "list"]).await);
    assert!(
        groups.contains("Operations") && groups.contains("g-admins"),
        "{groups}"
    );

    let profile = tempfile::tempdir().unwrap();
    let mut chrome = launch(profile.path()).await;
    let page = chrome.new_page("about:blank").await.unwrap();

    // The login page offers the provider by its name.
    open(&page, &format!("{base}/login")).await;
    let button: String = eval(&page, "document.getElementById('sso-login').textContent").await;
    assert_eq!(button.trim(), "Sign in with Test IdP");
    screenshot(&page, "login-sso").await;

    // A person added by email signs in with their role; their name and subject are
    // recorded. (The provider keeps email and groups at userinfo, not in the token.)
    signs_in(&page, &hub, "alice").await;
    let alice = user(&hub, "alice@example.com").await.unwrap();
    assert_eq!(alice.role.as_str(), "admin");
    assert_eq!(alice.display_name.as_deref(), Some("Alice Admin"));
    assert_eq!(alice.subject.as_deref(), Some("alice"));
    open(&page, &format!("{base}/access")).await;
    let row: String = eval(
        &page,
        "document.querySelector('tr[data-user=\"alice@example.com\"]').innerText",
    )
    .await;
    assert!(
        row.contains("Alice Admin") && row.contains("single sign-on"),
        "{row}"
    );

    // A group member is created at first sign-in with the group's role.
    fresh(&page).await;
    signs_in(&page, &hub, "bob").await;
    let bob = user(&hub, "bob@example.com").await.unwrap();
    assert_eq!((bob.role.as_str(), bob.granted_role), ("member", None));
    assert_eq!(bob.groups, ["g-ops"]);
    // A member cannot open an admin page.
    open(&page, &format!("{base}/access")).await;
    let h1: String = eval(&page, "document.querySelector('h1').textContent").await;
    assert_eq!(h1, "Forbidden");

    // In two groups: the higher role. The email is kept in lower case.
    fresh(&page).await;
    signs_in(&page, &hub, "carol").await;
    let carol = user(&hub, "carol@example.com").await.unwrap();
    assert_eq!(carol.role.as_str(), "admin");
    // The Access page shows how each signs in, and the groups.
    open(&page, &format!("{base}/access")).await;
    let row: String = eval(
        &page,
        "document.querySelector('tr[data-user=\"bob@example.com\"]').innerText",
    )
    .await;
    assert!(row.contains("single sign-on via g-ops"), "{row}");
    let groups: String = eval(&page, "document.querySelector('table.groups').innerText").await;
    assert!(
        groups.contains("Operations") && groups.contains("Admins"),
        "{groups}"
    );
    screenshot(&page, "access-sso").await;
    let mut groups = carol.groups.clone();
    groups.sort();
    assert_eq!(groups, ["g-admins", "g-ops"]);

    // Nobody admits mallory: refused and audited, with the reason.
    fresh(&page).await;
    assert_eq!(
        sign_in(&page, &base, "mallory").await,
        "/auth/oidc/callback"
    );
    assert!(refusal_text(&page).await.contains("None of your groups"));
    screenshot(&page, "sso-refused").await;
    assert!(user(&hub, "mallory@example.com").await.is_none());

    // A disabled user: their live session ends at the next request, and the next
    // sign-in is refused.
    fresh(&page).await;
    signs_in(&page, &hub, "dave").await;
    ok(cli(&hub, &["users", "disable", "dave@example.com"]).await);
    open(&page, &format!("{base}/")).await;
    let path: String = eval(&page, "location.pathname").await;
    assert_eq!(path, "/login", "a disabled user's live session ends");
    fresh(&page).await;
    assert_eq!(sign_in(&page, &base, "dave").await, "/auth/oidc/callback");
    assert!(refusal_text(&page).await.contains("disabled"));

    // A removed user in no group is refused...
    ok(cli(&hub, &["users", "remove", "dave@example.com"]).await);
    fresh(&page).await;
    assert_eq!(sign_in(&page, &base, "dave").await, "/auth/oidc/callback");
    assert!(user(&hub, "dave@example.com").await.is_none());
    // ...while a removed user a group still admits comes back through it.
    ok(cli(&hub, &["users", "remove", "bob@example.com"]).await);
    fresh(&page).await;
    signs_in(&page, &hub, "bob").await;
    assert_eq!(
        user(&hub, "bob@example.com").await.unwrap().role.as_str(),
        "member"
    );

    // A forged state: the browser comes back with a state this sign-in never had.
    fresh(&page).await;
    open(&page, &format!("{base}/login")).await;
    click(&page, "#sso-login").await;
    until(
        &page,
        "!!document.querySelector('input[name=login]')",
        "the provider's form",
    )
    .await;
    open(
        &page,
        &format!("{base}/auth/oidc/callback?code=made-up&state=forged"),
    )
    .await;
    assert!(refusal_text(&page).await.contains("not started here"));

    // ID tokens the provider signed but that must not pass, and one signed by a key
    // it never published: each refused, and the reason audited.
    for (mode, reason) in [
        ("audience", "wrong_audience"),
        ("expired", "expired"),
        ("unknown-key", "unknown_key"),
    ] {
        fresh(&page).await;
        provider.tamper(mode).await;
        assert_eq!(
            sign_in(&page, &base, "alice").await,
            "/auth/oidc/callback",
            "{mode}"
        );
        let got = refusals(&hub).await;
        let last = &got.last().unwrap().0;
        assert!(
            last.starts_with("token_invalid") && last.contains(reason),
            "{mode}: {last}"
        );
    }
    // Clocks that differ by 90 s are tolerated; a token issued ten minutes in the
    // future is not.
    for mode in ["clock-ahead", "just-expired"] {
        fresh(&page).await;
        provider.tamper(mode).await;
        signs_in(&page, &hub, "alice").await;
    }
    fresh(&page).await;
    provider.tamper("far-future").await;
    assert_eq!(sign_in(&page, &base, "alice").await, "/auth/oidc/callback");
    let last = refusals(&hub).await.last().unwrap().0.clone();
    assert!(last.starts_with("token_invalid expired"), "{last}");

    // The provider rotates its signing key: the hub fetches the new key and lets
    // people in.
    provider.tamper("rotate").await;
    fresh(&page).await;
    signs_in(&page, &hub, "alice").await;

    // A provider that puts the claims in the ID token: userinfo is not asked.
    provider
        .control("tamper", json!({ "claims_in_id_token": true }))
        .await;
    let calls = |s: &Value| s["userinfo_calls"].as_u64().unwrap();
    let before = calls(&provider.state().await);
    fresh(&page).await;
    signs_in(&page, &hub, "carol").await;
    assert_eq!(calls(&provider.state().await), before, "no userinfo call");
    assert_eq!(
        user(&hub, "carol@example.com").await.unwrap().role.as_str(),
        "admin"
    );

    // A replayed code: the whole callback request (code, state and the sealed
    // cookie) sent again after it was used is refused by the provider, and audited.
    fresh(&page).await;
    let callbacks = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut requests = page
        .event_listener::<chromiumoxide::cdp::browser_protocol::network::EventRequestWillBeSent>()
        .await
        .unwrap();
    let seen = callbacks.clone();
    let prefix = format!("{base}/auth/oidc/callback?");
    tokio::spawn(async move {
        use futures_util::StreamExt as _;
        while let Some(ev) = requests.next().await {
            if ev.request.url.starts_with(&prefix) {
                seen.lock().unwrap().push(ev.request.url.clone());
            }
        }
    });
    open(&page, &format!("{base}/login")).await;
    click(&page, "#sso-login").await;
    until(
        &page,
        "!!document.querySelector('input[name=login]')",
        "the provider's form",
    )
    .await;
    let cookies = page
        .execute(
            GetCookiesParams::builder()
                .urls(vec![format!("{base}/auth/oidc/callback")])
                .build(),
        )
        .await
        .unwrap();
    let pending = cookies
        .cookies
        .iter()
        .find(|c| c.name == "muster_sso")
        .map(|c| format!("muster_sso={}", c.value))
        .expect("the pending sign-in cookie");
    type_into(&page, "input[name=login]", "alice").await;
    type_into(&page, "input[name=password]", "any").await;
    click(&page, "button[type=submit]").await;
    assert_eq!(settle(&page, &base).await, "/");
    let used = callbacks
        .lock()
        .unwrap()
        .first()
        .cloned()
        .expect("the callback URL");
    let path = used.strip_prefix(&base).unwrap();
    let replay = crate::dashboard::get(&hub, path, &[("cookie", &pending)]).await;
    assert_eq!(replay.status, 403, "{}", replay.text());
    assert!(
        replay.text().contains("did not accept"),
        "{}",
        replay.text()
    );

    // Every refusal is in the audit log with its reason; every sign-in too.
    let reasons: Vec<String> = refusals(&hub).await.into_iter().map(|(r, _)| r).collect();
    for want in [
        "no_matching_group",
        "disabled",
        "bad_state",
        "token_invalid wrong_audience",
        "token_invalid expired",
        "token_invalid unknown_key",
        "code_refused",
    ] {
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with(want) || r.contains(want)),
            "{want} in {reasons:?}"
        );
    }
    let targets: BTreeMap<String, usize> =
        refusals(&hub)
            .await
            .into_iter()
            .fold(BTreeMap::new(), |mut m, (_, t)| {
                *m.entry(t).or_default() += 1;
                m
            });
    assert!(
        targets.contains_key("user:mallory@example.com"),
        "{targets:?}"
    );
    let logins = audited(&hub, "user.sso_login").await;
    let carol_login = logins
        .iter()
        .find(|e| e.target == "user:carol@example.com")
        .expect("carol's sign-in audited");
    assert_eq!(carol_login.details["groups"], json!(["g-admins", "g-ops"]));
    assert_eq!(carol_login.details["role"], "admin");
    assert!(hub.admin().verify_audit().await.unwrap().ok);

    let _ = chrome.close().await;
    hub.stop().await;
}

/// The `Location` of a reply, and the `name=value` of its cookie `name`.
fn location_and_cookie(r: &crate::dashboard::Reply, name: &str) -> (String, String) {
    let location = r.header("location").unwrap_or_default().to_owned();
    let cookie = r
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .filter(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_default()
        .to_owned();
    (location, cookie)
}

fn query_param(url: &str, key: &str) -> String {
    url.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn sso_settings_provider_errors_and_password_login_off() {
    let hub = TestHub::start_with(&Backend::Sqlite, |o| {
        o.admin_user = Some(("root".into(), "correct horse battery staple".into()));
    })
    .await;
    let provider = Provider::start(&format!("{}/auth/oidc/callback", hub.url), &accounts());

    // Bad settings: one clear line, nothing stored.
    let plain = cli(
        &hub,
        &[
            "sso",
            "set",
            "--issuer",
            "http://idp.example.com",
            "--client-id",
            "x",
        ],
    )
    .await;
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success() && err.contains("loopback"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let nobody = cli(
        &hub,
        &[
            "sso",
            "set",
            "--issuer",
            "http://127.0.0.1:1",
            "--client-id",
            "x",
        ],
    )
    .await;
    let err = String::from_utf8_lossy(&nobody.stderr);
    assert!(
        !nobody.status.success() && err.contains("could not be used"),
        "{err}"
    );
    assert!(!hub.admin().sso().await.unwrap().enabled);

    let set = [
        "sso",
        "set",
        "--issuer",
        &provider.issuer,
        "--client-id",
        CLIENT_ID,
        "--client-secret-stdin",
    ];
    ok(cli_with(&hub, &set, &format!("{CLIENT_SECRET}\n")).await);
    let login = crate::dashboard::get(&hub, "/login", &[]).await;
    let html = login.text();
    assert!(
        html.contains("Sign in with single sign-on") && html.contains("login-form"),
        "{html}"
    );

    // The provider says no (the person cancelled): shown as text, audited.
    let begun = crate::dashboard::get(&hub, "/auth/oidc/login?next=/audit", &[]).await;
    assert_eq!(begun.status, 303);
    let (to, pending) = location_and_cookie(&begun, "muster_sso");
    assert!(to.starts_with(&provider.issuer), "{to}");
    for param in [
        "code_challenge_method=S256",
        "nonce=",
        "state=",
        "scope=openid",
    ] {
        assert!(to.contains(param), "{param} in {to}");
    }
    let set_cookie = begun.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/auth/oidc"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let state = query_param(&to, "state");
    let cancelled = crate::dashboard::get(
        &hub,
        &format!(
            "/auth/oidc/callback?error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state={state}"
        ),
        &[("cookie", &pending)],
    )
    .await;
    assert_eq!(cancelled.status, 403);
    let page = cancelled.text();
    assert!(
        page.contains("access_denied") && page.contains("&lt;script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "{page}");
    // No pending sign-in at all: refused, and the sealed cookie is spent either way.
    let stray = crate::dashboard::get(
        &hub,
        &format!("/auth/oidc/callback?code=x&state={state}"),
        &[],
    )
    .await;
    assert_eq!(stray.status, 400);
    assert!(
        cancelled
            .header("set-cookie")
            .unwrap()
            .contains("muster_sso=;")
    );
    let reasons: Vec<String> = refusals(&hub).await.into_iter().map(|(r, _)| r).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("provider_error access_denied")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("bad_state")),
        "{reasons:?}"
    );

    // Passwords off: refused at start while no admin could sign in with SSO...
    let (mut opts, pg, tmp) = hub.stop_keeping_data().await;
    opts.password_login = false;
    let refused = TestHub::start_on(opts.clone())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        refused.contains("--password-login off") && refused.contains("sso groups add"),
        "{refused}"
    );
    // ...accepted once a group admits admins.
    opts.password_login = true;
    let mut hub = TestHub::start_on(opts.clone()).await.unwrap();
    hub.adopt(pg, tmp);
    ok(cli(
        &hub,
        &[
            "sso", "groups", "add", "g-admins", "--name", "Admins", "--role", "admin",
        ],
    )
    .await);
    let (mut opts, pg, tmp) = hub.stop_keeping_data().await;
    opts.password_login = false;
    let mut hub = TestHub::start_on(opts).await.unwrap();
    hub.adopt(pg, tmp);
    let login = crate::dashboard::get(&hub, "/login", &[]).await.text();
    assert!(
        login.contains("sso-login") && !login.contains("login-form"),
        "{login}"
    );
    let denied = hub
        .anonymous()
        .login("root", "correct horse battery staple")
        .await
        .unwrap_err()
        .to_string();
    assert!(denied.contains("password login is turned off"), "{denied}");
    // Turning SSO off now would lock everyone out of the dashboard: refused.
    let unset = cli(&hub, &["sso", "unset"]).await;
    assert!(!unset.status.success());
    assert!(String::from_utf8_lossy(&unset.stderr).contains("--password-login on"));
    // The break-glass: admin API keys are untouched.
    assert!(hub.admin().sso().await.unwrap().enabled);
    hub.stop().await;
}

#[tokio::test]
async fn sso_from_the_environment_wins_and_the_entra_preset_makes_the_issuer() {
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let hub = TestHub::start_with(&Backend::Sqlite, |o| {
        o.sso = muster_hub::SsoEnv {
            entra_tenant: Some(tenant.into()),
            client_id: Some("app-id".into()),
            client_secret: Some("s".into()),
            ..Default::default()
        };
    })
    .await;
    let shown = ok(cli(&hub, &["sso", "show"]).await);
    assert!(shown.contains("from the environment"), "{shown}");
    assert!(
        shown.contains(&format!("https://login.microsoftonline.com/{tenant}/v2.0")),
        "{shown}"
    );
    assert!(
        shown.contains("Microsoft") && shown.contains("Client secret: set"),
        "{shown}"
    );
    let set = cli(
        &hub,
        &[
            "sso",
            "set",
            "--issuer",
            "https://idp.example.com",
            "--client-id",
            "x",
        ],
    )
    .await;
    assert!(!set.status.success());
    assert!(String::from_utf8_lossy(&set.stderr).contains("environment"));
    let login = crate::dashboard::get(&hub, "/login", &[]).await.text();
    assert!(login.contains("Sign in with Microsoft"), "{login}");
    hub.stop().await;

    // A plain-http issuer off loopback stops the hub at start, in one line.
    let dir = tempfile::tempdir().unwrap();
    let mut opts = muster_hub::HubOptions::new(dir.path().join("d"));
    opts.listen = "127.0.0.1:0".parse().unwrap();
    opts.sso.issuer = Some("http://idp.example.com".into());
    opts.sso.client_id = Some("x".into());
    let err = TestHub::start_on(opts)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("loopback") && !err.contains('\n'), "{err}");
}
