//! The dashboard (SPEC §13): HTTP-level checks of its headers, redirects, assets and
//! escaping, and a real headless Chromium (Debian's `chromium`, installed by
//! `scripts/test-tools`) driven through login, the fleet, an agent, enrollment and
//! a member's view. Screenshots of each page land in `docs/screenshots/`.

use std::time::{Duration, Instant};

use muster_hub::Role;
use muster_proto::CreateUserRequest;
use muster_testkit::{Backend, TestAgent, TestHub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "correct horse battery staple";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const EVIL_OS: &str = "<script>alert(1)</script>";

pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.0 GET over a real TLS connection (no redirects followed, no
/// decoding): what the browser is sent, byte for byte.
pub(crate) async fn get(hub: &TestHub, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut tls = hub
        .raw_tls("127.0.0.1".parse().unwrap(), &[b"http/1.1"])
        .await
        .unwrap();
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// The `name=value` part of a login's Set-Cookie.
async fn login_cookie(hub: &TestHub, user: &str) -> String {
    let (_, set_cookie) = hub.anonymous().login(user, PASSWORD).await.unwrap();
    set_cookie.split(';').next().unwrap().to_owned()
}

async fn hub_with_users() -> TestHub {
    let hub = TestHub::start_with(&Backend::Sqlite, |o| {
        o.admin_user = Some(("root".into(), PASSWORD.into()));
        o.heartbeat_interval = Duration::from_secs(1);
    })
    .await;
    hub.admin()
        .create_user(&CreateUserRequest {
            name: "ann".into(),
            role: muster_proto::Role::Member,
            password: Some(PASSWORD.into()),
        })
        .await
        .unwrap();
    hub
}

/// Enroll a machine with the real agent code; its OS name is `os`.
async fn enroll(hub: &TestHub, name: &str, os: &str) -> (TestAgent, String) {
    let agent = TestAgent::new(name);
    std::fs::write(
        agent.root().join("os-release"),
        format!("PRETTY_NAME=\"{os}\"\n"),
    )
    .unwrap();
    let t = hub.default_token().await;
    let id = muster_agent::enroll(&hub.enroll_options(&agent, Some(&t), None), &agent.dir)
        .await
        .unwrap()
        .agent_id;
    (agent, id)
}

fn assert_secure(r: &Reply, what: &str) {
    assert_eq!(r.header("content-security-policy"), Some(CSP), "{what}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
}

/// Where the page links its stylesheet and script.
fn asset_paths(html: &str) -> Vec<String> {
    html.match_indices("/assets/app.")
        .map(|(i, _)| {
            let rest = &html[i..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

#[tokio::test]
async fn dashboard_http_headers_redirects_assets_and_escaping() {
    let hub = hub_with_users().await;

    // No session: pages redirect to the login page, which comes back afterwards.
    let r = get(&hub, "/", &[]).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
    assert_secure(&r, "redirect");
    let r = get(&hub, "/agents/x?y=1", &[]).await;
    assert_eq!(r.header("location"), Some("/login?next=/agents/x%3Fy%3D1"));
    // An unknown or expired session is the same.
    let r = get(&hub, "/enrollment", &[("Cookie", "muster_session=stale")]).await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/login?next=/enrollment"))
    );

    // The login page: headers, no inline script or style, only local `next`.
    let r = get(&hub, "/login?next=/agents/abc", &[]).await;
    assert_eq!(r.status, 200);
    assert_secure(&r, "login");
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let html = r.text();
    assert!(html.contains(r#"data-next="/agents/abc""#), "{html}");
    assert_eq!(html.matches("<script").count(), 1, "one script, ours");
    assert!(html.contains(r#"<script src="/assets/app."#));
    assert!(!html.contains("style="), "no inline style");
    assert!(!html.contains("<style"), "no inline style");
    for evil in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let r = get(&hub, &format!("/login?next={evil}"), &[]).await;
        assert!(r.text().contains(r#"data-next="/""#), "next={evil}");
    }

    // Assets: content-hashed names, cached for a year, gzip when accepted.
    let assets = asset_paths(&html);
    assert_eq!(assets.len(), 2, "{assets:?}");
    for path in &assets {
        let plain = get(&hub, path, &[]).await;
        assert_eq!(plain.status, 200, "{path}");
        assert_eq!(
            plain.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(plain.header("content-encoding"), None);
        let ct = plain.header("content-type").unwrap();
        assert!(
            ct.starts_with(if path.ends_with(".css") {
                "text/css"
            } else {
                "text/javascript"
            }),
            "{ct}"
        );
        let zipped = get(&hub, path, &[("Accept-Encoding", "gzip, br")]).await;
        assert_eq!(zipped.header("content-encoding"), Some("gzip"));
        assert_eq!(&zipped.body[..2], &[0x1f, 0x8b]);
        assert!(zipped.body.len() < plain.body.len());
    }
    assert_eq!(
        get(&hub, "/assets/app.0000000000000000.css", &[])
            .await
            .status,
        404
    );

    // Logged in, an empty fleet says what to do next.
    let root = login_cookie(&hub, "root").await;
    let cookie = [("Cookie", root.as_str())];
    let r = get(&hub, "/", &cookie).await;
    assert_eq!(r.status, 200);
    assert_secure(&r, "fleet");
    assert!(r.text().contains("No agents yet"), "{}", r.text());
    // Signed in already, the login page sends you on.
    let r = get(&hub, "/login?next=/hub", &cookie).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/hub")));

    // Agents' values are escaped: a hostile OS name is text.
    let (_web1, id) = enroll(&hub, "web-1", EVIL_OS).await;
    enroll(&hub, "web-2", "Debian").await;
    enroll(&hub, "db-1", "Debian").await;
    let page = get(&hub, &format!("/agents/{id}"), &cookie).await.text();
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains(EVIL_OS));
    assert!(page.contains("/revoke"), "admins get the revoke form");

    // Fleet filters: name glob, status.
    let page = get(&hub, "/?name=web-*", &cookie).await.text();
    assert!(
        page.contains(">web-1<") && page.contains(">web-2<"),
        "{page}"
    );
    assert!(!page.contains(">db-1<"));
    let page = get(&hub, "/?status=revoked", &cookie).await.text();
    assert!(page.contains("No agent matches"), "{page}");

    // Admin pages: Enrollment and Hub for admins; members are refused, in HTML.
    for path in ["/enrollment", "/hub"] {
        assert_eq!(get(&hub, path, &cookie).await.status, 200, "{path}");
    }
    let ann = login_cookie(&hub, "ann").await;
    let member = [("Cookie", ann.as_str())];
    let r = get(&hub, "/enrollment", &member).await;
    assert_eq!(r.status, 403);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let page = get(&hub, &format!("/agents/{id}"), &member).await.text();
    assert!(!page.contains("data-api"), "members get no action forms");

    // Every page admits exactly the role it declares: no session → login; a member
    // on an admin page → 403; otherwise the page.
    let pages = muster_hub::page_table();
    assert!(pages.len() >= 8);
    for (access, path) in pages {
        let path = path.replace("{id}", &id).replace("{name}", "missing");
        for (who, cookie) in [
            ("nobody", None),
            ("member", Some(&ann)),
            ("admin", Some(&root)),
        ] {
            let headers: Vec<(&str, &str)> = cookie
                .map(|c| vec![("Cookie", c.as_str())])
                .unwrap_or_default();
            let status = get(&hub, &path, &headers).await.status;
            let want = match (access, who) {
                (None, _) if path.starts_with("/assets/") => 404,
                // Single sign-on, not set up here: nothing to start, nothing to finish.
                (None, _) if path == "/auth/oidc/login" => 404,
                (None, _) if path == "/auth/oidc/callback" => 400,
                // The login page sends the signed-in on.
                (None, "nobody") => 200,
                (None, _) => 303,
                (Some(_), "nobody") => 303,
                (Some(Role::Admin), "member") => 403,
                _ => 200,
            };
            assert_eq!(status, want, "{path} as {who} (needs {access:?})");
        }
    }
    assert!(
        !page.contains(r#"href="/enrollment""#),
        "nor admin navigation"
    );

    // The audit log pages back past its first 200 entries, filters kept, and shows
    // each entry's details escaped, long ones cut with the whole in `title`.
    let evil = format!("<img src=x onerror=alert(1)>{}", "y".repeat(100));
    for i in 0..205 {
        let labels = match i {
            0 => [("note".to_owned(), evil.clone())].into(),
            _ => Default::default(),
        };
        hub.admin()
            .create_token(&muster_proto::CreateTokenRequest {
                labels,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let rows = |html: &str| html.matches("<tr>").count() - 1;
    let older = |html: &str| {
        let at = html.find(r#"rel="next">Older entries"#)?;
        let start = html[..at].rfind("href=\"")? + 6;
        Some(html[start..html[start..].find('"').unwrap() + start].replace("&amp;", "&"))
    };
    let first = get(&hub, "/audit?action=token.created", &cookie)
        .await
        .text();
    assert_eq!(rows(&first), 200, "{first}");
    assert!(!first.contains("<img"), "details are text");
    let link = older(&first).expect("a link to older entries");
    assert!(link.contains("action=token.created"), "{link}");
    let second = get(&hub, &link, &cookie).await;
    assert_secure(&second, "older audit page");
    let second = second.text();
    // 205 token entries and the 3 of `hub.default_token()` for the enrollments.
    assert_eq!(rows(&second), 8, "{second}");
    assert!(older(&second).is_none(), "the oldest page ends it");
    assert!(second.contains("« Newest entries"));
    assert_eq!(second.matches("<code>token.created</code>").count(), 8);
    assert!(
        second.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "the hostile label, escaped: {second}"
    );
    assert!(second.contains(r#"title="cidrs=[], labels={&quot;note&quot;:&quot;&lt;img"#));
    assert!(!second.contains("=null"), "absent values are left out");
    assert!(second.contains("…</td>"), "cut short in the cell");
    // Unfiltered, the last page reaches the first entry of the chain.
    let mut html = get(&hub, "/audit", &cookie).await.text();
    let mut pages = 1;
    while let Some(link) = older(&html) {
        html = get(&hub, &link, &cookie).await.text();
        pages += 1;
    }
    assert_eq!(pages, 2);
    assert!(html.contains("<td>1</td>"), "{html}");
    // Through the API too; a cursor that is no entry's is refused in one line.
    let api = hub
        .admin()
        .audit(&muster_client::AuditQuery {
            before: Some(5),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(api.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 3, 2, 1]);
    for bad in ["abc", "0", "-3"] {
        let r = get(&hub, &format!("/audit?before={bad}"), &cookie).await;
        assert_eq!(r.status, 400, "before={bad}");
        let (status, body) = hub
            .admin()
            .get_raw(&format!("/api/v1/audit?before={bad}"))
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{body}");
        assert!(!body.contains('\n') && body.contains("before"), "{body}");
    }
    hub.stop().await;
}

// ---- the real browser -------------------------------------------------------------

pub(crate) mod browser;

#[tokio::test]
async fn dashboard_in_a_real_browser() {
    use browser::*;
    let hub = hub_with_users().await;
    let (agent, id) = enroll(&hub, "web-01", EVIL_OS).await;
    let running = agent.run();
    hub.wait_status(&id, "online", Duration::from_secs(10))
        .await;
    let base = hub.url.clone();
    let profile = tempfile::tempdir().unwrap();
    let mut chrome = launch(profile.path()).await;
    let page = chrome.new_page("about:blank").await.unwrap();
    let alerts = watch_dialogs(&page).await;

    // Log in with the form: a wrong password gets the generic error.
    log_in(&page, &base, "root", "wrong password").await;
    until(
        &page,
        "!document.getElementById('login-error').hidden",
        "login error",
    )
    .await;
    let error: String = eval(&page, "document.getElementById('login-error').textContent").await;
    assert_eq!(error, "Invalid user name or password.");
    screenshot(&page, "login").await;
    log_in(&page, &base, "root", PASSWORD).await;
    until(
        &page,
        "location.pathname === '/' && !!document.querySelector('table.agents')",
        "the fleet",
    )
    .await;

    // The fleet shows the agent enrolled by the real agent, with its status in words.
    let row: String = eval(
        &page,
        &format!("document.querySelector('tr[data-agent-id=\"{id}\"]').innerText"),
    )
    .await;
    assert!(row.contains("web-01") && row.contains("online"), "{row}");
    screenshot(&page, "fleet").await;

    // The agent's page: the hostile OS name is inert text.
    open(&page, &format!("{base}/agents/{id}")).await;
    let os: String = eval(&page, "document.getElementById('os-info').textContent").await;
    assert_eq!(os, EVIL_OS);
    // Its session history: the live session, from this machine's address. (History
    // rows are written in batches: reload until it is there.)
    let agent_page = format!("{base}/agents/{id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row: String = eval(
            &page,
            "(document.querySelector('#sessions tbody tr') || {innerText: ''}).innerText",
        )
        .await;
        if row.contains("connected") && row.contains("127.0.0.1") {
            break;
        }
        assert!(Instant::now() < deadline, "no live session row: {row:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        open(&page, &agent_page).await;
    }
    let scripts: usize = eval(&page, "document.querySelectorAll('script').length").await;
    assert_eq!(scripts, 1, "no injected script element");
    screenshot(&page, "agent").await;

    // A machine enrolling without a credential waits for approval.
    let queued = TestAgent::new("lab-07");
    let mut no_credential = hub.enroll_options(&queued, None, None);
    no_credential.ca_hash = Some(hub.ca_hash.to_string());
    let err = muster_agent::enroll(&no_credential, &queued.dir)
        .await
        .unwrap_err();
    let muster_agent::AgentError::Pending { request_id } = err else {
        panic!("{err}")
    };

    // Enrollment: create a token and read its one-liner from the page.
    open(&page, &format!("{base}/enrollment")).await;
    type_into(&page, "input[name=pattern]", "web-*").await;
    type_into(&page, "input[name=labels]", "env=prod").await;
    click(&page, "#token-form button[type=submit]").await;
    until(
        &page,
        "!document.getElementById('token-result').hidden",
        "the one-liners",
    )
    .await;
    let sh: String = eval(&page, "document.getElementById('install-sh').textContent").await;
    let plain: String = eval(
        &page,
        "document.getElementById('install-enroll').textContent",
    )
    .await;
    assert!(sh.contains(&base) && sh.contains("met_"), "{sh}");
    assert!(
        plain.starts_with("muster enroll") && plain.contains("met_"),
        "{plain}"
    );
    click(&page, "button[data-copy='#install-sh']").await;
    until(
        &page,
        "document.querySelector(\"button[data-copy='#install-sh']\").textContent === 'Copied'",
        "the copy button's answer",
    )
    .await;
    screenshot(&page, "enrollment").await;
    let tokens = hub.admin().list_tokens().await.unwrap();
    assert!(
        tokens.iter().any(|t| t.pattern.as_deref() == Some("web-*")),
        "created through the API"
    );

    // Approve the waiting machine from the queue; it then enrolls.
    click(
        &page,
        &format!("tr[data-request-id=\"{request_id}\"] form[data-api$=approve] button"),
    )
    .await;
    until(
        &page,
        &format!("!document.querySelector('tr[data-request-id=\"{request_id}\"]') && document.readyState === 'complete'"),
        "the request approved",
    )
    .await;
    let report = muster_agent::enroll(&no_credential, &queued.dir)
        .await
        .unwrap();
    assert!(report.created);

    open(&page, &format!("{base}/hub")).await;
    let hash: String = eval(&page, "document.getElementById('ca-hash').textContent").await;
    assert_eq!(hash, hub.ca_hash.to_string());
    screenshot(&page, "hub").await;

    // Access: an API key is shown once, at creation.
    open(&page, &format!("{base}/access")).await;
    type_into(&page, "#key-form input[name=name]", "ci").await;
    click(&page, "#key-form button[type=submit]").await;
    until(
        &page,
        "!document.getElementById('key-result').hidden",
        "the new key",
    )
    .await;
    let key: String = eval(&page, "document.getElementById('key-value').textContent").await;
    assert!(key.starts_with("mak_"), "{key}");
    screenshot(&page, "access").await;
    open(&page, &format!("{base}/access")).await;
    let html: String = eval(&page, "document.documentElement.outerHTML").await;
    assert!(html.contains(">ci<") && !html.contains(&key), "shown once");

    // Audit: the chain verified, then broken once a row is rewritten behind the hub.
    open(&page, &format!("{base}/audit")).await;
    let chain: String = eval(
        &page,
        "document.getElementById('chain-state').dataset.chain",
    )
    .await;
    assert_eq!(chain, "ok");
    screenshot(&page, "audit").await;
    hub.raw_sql("UPDATE audit_log SET source = '10.9.9.9' WHERE action = 'agent.enrolled'")
        .await;
    open(&page, &format!("{base}/audit")).await;
    let chain: String = eval(
        &page,
        "document.getElementById('chain-state').dataset.chain",
    )
    .await;
    assert_eq!(chain, "broken");

    // API: the published document for people, one row per operation, with the
    // role each needs as the document says.
    open(&page, &format!("{base}/api")).await;
    let rows: u32 = eval(
        &page,
        "document.querySelectorAll('table.api tbody tr').length",
    )
    .await;
    let served = get(&hub, "/api/v1/openapi.json", &[]).await;
    let doc: serde_json::Value = serde_json::from_str(&served.text()).unwrap();
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .count()
        })
        .sum();
    assert_eq!(rows as usize, operations);
    let renew_role: String = eval(
        &page,
        "[...document.querySelectorAll('table.api tbody tr')].find(r => r.cells[1].textContent === '/api/v1/agent/renew').cells[2].textContent",
    )
    .await;
    assert_eq!(renew_role, "agent");
    screenshot(&page, "api").await;

    // Live: with the fleet open, a machine enrolled by the real agent appears, comes
    // online and goes offline, and the counts follow, all without a reload (the
    // marker set on the window would be gone after one).
    open(&page, &format!("{base}/")).await;
    page.evaluate("window.__noReload = true; null")
        .await
        .unwrap();
    let online_before: String = eval(
        &page,
        "document.querySelector('[data-count-status=online]').textContent",
    )
    .await;
    assert_eq!(online_before, "1");
    let (second, second_id) = enroll(&hub, "web-02", "Debian GNU/Linux 12").await;
    let second_running = second.run();
    until(
        &page,
        &format!(
            "!!document.querySelector('tr[data-agent-id=\"{second_id}\"] .status[data-status=online]') \
             && document.querySelector('[data-count-status=online]').textContent === '2'"
        ),
        "the new agent online on the open fleet page",
    )
    .await;
    second_running.stop().await.unwrap();
    until(
        &page,
        &format!(
            "!!document.querySelector('tr[data-agent-id=\"{second_id}\"] .status[data-status=offline]')"
        ),
        "the stopped agent offline on the open fleet page",
    )
    .await;
    let stayed: bool = eval(&page, "window.__noReload === true").await;
    assert!(stayed, "the fleet page reloaded");

    // Labels edited on the agent's page, through the labels API.
    open(&page, &format!("{base}/agents/{id}")).await;
    type_into(&page, "textarea[name=set]", "env=prod").await;
    click(&page, "form[data-body=labels] button[type=submit]").await;
    until(
        &page,
        "[...document.querySelectorAll('.labels .chip')].some(c => c.textContent === 'env=prod')",
        "the new label",
    )
    .await;
    let labels = hub.admin().agent(&id).await.unwrap().labels;
    assert_eq!(labels.get("env").map(String::as_str), Some("prod"));

    // Phone width: the pages reflow (screenshots for a look).
    phone(&page, true).await;
    open(&page, &format!("{base}/")).await;
    screenshot(&page, "fleet-phone").await;
    phone(&page, false).await;

    // Revoke from the agent's page (the confirm is accepted) and see the status.
    open(&page, &format!("{base}/agents/{id}")).await;
    click(&page, "#revoke").await;
    until(
        &page,
        "document.querySelector('.heading .status').dataset.status === 'revoked'",
        "revoked status",
    )
    .await;
    assert_eq!(hub.admin().agent(&id).await.unwrap().status, "revoked");

    // Remove the machine approved earlier: back to the fleet, and it is gone.
    open(&page, &format!("{base}/agents/{}", report.agent_id)).await;
    click(&page, "#remove").await;
    until(
        &page,
        "location.pathname === '/' && document.readyState === 'complete'",
        "the fleet after removal",
    )
    .await;
    assert!(hub.admin().agent(&report.agent_id).await.is_err());
    let fleet: String = eval(&page, "document.querySelector('main').innerText").await;
    assert!(!fleet.contains("lab-07"), "{fleet}");

    // The session ends behind the page's back (expiry): its next action leads
    // to the login page, which comes back here afterwards.
    open(&page, &format!("{base}/access")).await;
    hub.raw_sql("DELETE FROM user_sessions").await;
    type_into(&page, "#user-form input[name=name]", "bob").await;
    type_into(&page, "#user-form input[name=password]", PASSWORD).await;
    click(&page, "#user-form button[type=submit]").await;
    until(
        &page,
        "location.pathname === '/login' && location.search === '?next=%2Faccess'",
        "the login page",
    )
    .await;
    assert!(
        hub.admin()
            .list_users()
            .await
            .unwrap()
            .iter()
            .all(|u| u.name != "bob"),
        "nothing was changed without a session"
    );

    // A member: no admin navigation, no actions.
    log_in(&page, &base, "ann", PASSWORD).await;
    until(
        &page,
        "location.pathname === '/' && !!document.querySelector('header nav')",
        "member's fleet",
    )
    .await;
    let nav: String = eval(&page, "document.querySelector('header nav').innerText").await;
    assert!(
        nav.contains("Fleet") && !nav.contains("Enrollment"),
        "{nav}"
    );
    open(&page, &format!("{base}/agents/{id}")).await;
    let forms: usize = eval(&page, "document.querySelectorAll('form[data-api]').length").await;
    assert_eq!(forms, 0, "members get no action forms");

    assert_eq!(
        alerts.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no script ran"
    );
    chrome.close().await.unwrap();
    let _ = chrome.wait().await;
    let _ = running.stop().await;
    hub.stop().await;
}
