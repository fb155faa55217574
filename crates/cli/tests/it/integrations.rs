//! Integrations (SPEC §15) as an operator uses them, through the `muster` binary:
//! add HTTP APIs with each kind of credential, test the connection, run `http.get`,
//! and see that a probe cannot leave the integration's URL and that no secret shows
//! up in an answer, the hub's log, the audit log or the database.
//!
//! The APIs are a small HTTP/1.1 server started here on 127.0.0.1, plain (allowed on
//! loopback) and over TLS with a certificate from a test CA, which the hub trusts
//! through `outbound_ca` (`muster hub --outbound-ca`). It checks the credentials,
//! echoes what it was sent where asked (to prove the hub scrubs it), and records
//! every path requested.

use std::process::Output;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use muster_testkit::{Backend, TestHub};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;

use crate::each_backend;

const TOKEN: &str = "tok-3f9a1c-SECRET-bearer";
const WRONG: &str = "wrong-77e1-SECRET-bearer";
const PASSWORD: &str = "pw-8c2d-SECRET-basic";
const HEADER: &str = "hdr-51b0-SECRET-header";
const SECRETS: [&str; 4] = [TOKEN, WRONG, PASSWORD, HEADER];

/// The test API: what it accepts, and the paths it was asked for.
#[derive(Clone, Default)]
struct Api {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Api {
    fn authorized(headers: &[(String, String)]) -> bool {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}"));
        headers.iter().any(|(k, v)| {
            (k == "authorization"
                && (*v == format!("Bearer {TOKEN}") || *v == format!("Basic {basic}")))
                || (k == "x-api-key" && v == HEADER)
        })
    }

    /// (status, content type, body) for one request.
    fn answer(&self, path: &str, headers: &[(String, String)]) -> (u16, &'static str, Vec<u8>) {
        self.seen.lock().unwrap().push(path.to_owned());
        let sent = headers
            .iter()
            .filter(|(k, _)| k == "authorization" || k == "x-api-key")
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; ");
        if !Self::authorized(headers) {
            // A careless API that echoes the credential it refused.
            return (
                401,
                "text/plain",
                format!("bad credentials\n(you sent {sent})").into_bytes(),
            );
        }
        match path {
            "/api" | "/api/" => (200, "text/plain", b"ok".to_vec()),
            "/api/x" => (
                200,
                "application/json",
                br#"{"hello":"world","n":3}"#.to_vec(),
            ),
            "/api/echo" => (200, "text/plain", format!("you sent {sent}").into_bytes()),
            "/api/big" => (200, "text/plain", vec![b'a'; 300 * 1024]),
            "/api/moved" => (302, "text/plain", Vec::new()),
            _ => (404, "text/plain", b"no such thing".to_vec()),
        }
    }

    async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(&self, mut s: S) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_owned();
        let headers: Vec<(String, String)> = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let (status, ctype, body) = self.answer(&path, &headers);
        let location = if status == 302 {
            "Location: /elsewhere\r\n"
        } else {
            ""
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{location}\
             X-RateLimit-Remaining: 99\r\nSet-Cookie: session=abc\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.write_all(&body).await;
        let _ = s.shutdown().await;
    }

    /// Serve plain HTTP on 127.0.0.1; returns the port.
    async fn plain(&self) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let api = self.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let api = api.clone();
                tokio::spawn(async move { api.serve_one(s).await });
            }
        });
        port
    }

    /// Serve HTTPS on 127.0.0.1 with a certificate from a fresh test CA; returns
    /// the port and the CA's PEM.
    async fn tls(&self) -> (u16, String) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "integration test CA");
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let api = self.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (api, acceptor) = (api.clone(), acceptor.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(s).await {
                        api.serve_one(tls).await;
                    }
                });
            }
        });
        (port, ca_pem)
    }
}

/// Everything the hub logs on this thread (the test's runtime, where it serves).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `muster integrations …` command as the admin (or `key`), with `stdin` and
/// extra environment.
async fn cli(
    hub: &TestHub,
    key: Option<&str>,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> Output {
    let args: Vec<&str> = std::iter::once("integrations")
        .chain(args.iter().copied())
        .collect();
    crate::binary::as_admin(hub, key, &args, stdin, env).await
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

fn json(o: Output) -> Value {
    serde_json::from_str(&ok(o)).unwrap()
}

fn no_secret(what: &str, haystack: &str) {
    for s in SECRETS {
        assert!(!haystack.contains(s), "{what} holds a secret:\n{haystack}");
    }
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}"));
    assert!(
        !haystack.contains(&basic),
        "{what} holds the basic credential"
    );
}

#[tokio::test]
async fn integrations_test_probe_stay_under_their_url_and_never_show_a_secret() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    each_backend(|b| scenario(b, logs.clone())).await;
}

async fn scenario(backend: Backend, logs: Logs) {
    let api = Api::default();
    let plain = api.plain().await;
    let (tls, ca_pem) = api.tls().await;
    let hub = TestHub::start_with(&backend, |o| o.outbound_ca = Some(ca_pem)).await;
    let base = format!("http://127.0.0.1:{plain}/api");

    // Each kind of credential, from stdin or the environment.
    let add = |name: &'static str, url: String, auth: &'static str, extra: Vec<&'static str>| {
        let hub = &hub;
        async move {
            let mut args = vec!["add", name, "--type", "http", "--url", &url, "--auth", auth];
            args.extend(extra);
            let (stdin, env): (&str, Vec<(&str, &str)>) = match name {
                "api" => (TOKEN, vec![]),
                "wrong" => ("", vec![("MUSTER_INTEGRATION_SECRET", WRONG)]),
                "secure" => (
                    "",
                    vec![("MUSTER_INTEGRATION_SECRET", "alice:pw-8c2d-SECRET-basic")],
                ),
                "keyed" => (HEADER, vec![]),
                _ => ("", vec![]),
            };
            let stdin_flag = !stdin.is_empty();
            if stdin_flag {
                args.push("--secret-stdin");
            }
            cli(hub, None, &args, &format!("{stdin}\n"), &env).await
        }
    };
    ok(add("api", base.clone(), "bearer", vec![]).await);
    ok(add("wrong", base.clone(), "bearer", vec![]).await);
    ok(add(
        "secure",
        format!("https://localhost:{tls}/api/"),
        "basic",
        vec![],
    )
    .await);
    ok(add(
        "keyed",
        format!("http://localhost:{plain}/api"),
        "header",
        vec!["--header-name", "X-Api-Key"],
    )
    .await);
    ok(add("open", base.clone(), "none", vec![]).await);

    // Refused at the door: a taken name, credentials in the URL, plain http
    // elsewhere, a bearer with no secret.
    let dup = add("api", base.clone(), "bearer", vec![]).await;
    assert!(
        !dup.status.success() && text(&dup).contains("exists already"),
        "{}",
        text(&dup)
    );
    let creds_in_url = cli(
        &hub,
        None,
        &[
            "add",
            "x",
            "--url",
            &format!("http://u:{PASSWORD}@127.0.0.1:{plain}/"),
            "--auth",
            "none",
        ],
        "",
        &[],
    )
    .await;
    assert!(!creds_in_url.status.success());
    no_secret("a refusal", &text(&creds_in_url));
    let remote_http = cli(
        &hub,
        None,
        &[
            "add",
            "x",
            "--url",
            "http://api.example.com/",
            "--auth",
            "none",
        ],
        "",
        &[],
    )
    .await;
    assert!(
        text(&remote_http).contains("plain http"),
        "{}",
        text(&remote_http)
    );
    let no_secret_given = cli(
        &hub,
        None,
        &["add", "x", "--url", &base, "--auth", "bearer"],
        "",
        &[],
    )
    .await;
    assert!(!no_secret_given.status.success());

    let listed = json(cli(&hub, None, &["list", "--json"], "", &[]).await);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "keyed", "open", "secure", "wrong"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "untested")
    );
    assert_eq!(listed[0]["secret_set"], true);
    assert_eq!(listed[2]["secret_set"], false);

    // Test connection: the right credentials connect, over TLS too; the wrong one
    // is an error with the API's answer quoted, scrubbed of what was sent.
    for name in ["api", "secure", "keyed", "open"] {
        let out = cli(&hub, None, &["test", name], "", &[]).await;
        if name == "open" {
            assert!(!out.status.success(), "no credentials: 401");
            continue;
        }
        assert!(ok(out).contains("connected"), "{name}");
    }
    let wrong = cli(&hub, None, &["test", "wrong"], "", &[]).await;
    assert!(!wrong.status.success(), "a failed test exits non-zero");
    assert!(text(&wrong).contains("HTTP 401"), "{}", text(&wrong));
    let shown = json(cli(&hub, None, &["show", "wrong", "--json"], "", &[]).await);
    assert_eq!(shown["status"], "error");
    let last_error = shown["last_error"].as_str().unwrap();
    assert!(last_error.starts_with("HTTP 401"), "{last_error}");
    assert!(
        last_error.contains("bad credentials (you sent authorization: Bearer <redacted>)"),
        "{last_error}"
    );
    assert!(!last_error.contains('\n'));
    let shown = json(cli(&hub, None, &["show", "secure", "--json"], "", &[]).await);
    assert_eq!(
        (shown["status"].as_str(), shown.get("last_error")),
        (Some("connected"), None)
    );

    // http.get returns the body: JSON parsed, text as text, big bodies cut.
    let got = json(
        cli(
            &hub,
            None,
            &["probe", "api", "http.get", "--param", "path=/x", "--json"],
            "",
            &[],
        )
        .await,
    );
    assert_eq!(got["status"], 200);
    assert_eq!(got["json"]["hello"], "world");
    assert_eq!(got["headers"]["content-type"], "application/json");
    assert_eq!(got["headers"]["x-ratelimit-remaining"], "99");
    assert!(
        got["headers"].get("set-cookie").is_none(),
        "only safe headers"
    );
    let echoed = json(
        cli(
            &hub,
            None,
            &[
                "probe",
                "secure",
                "http.get",
                "--param",
                "path=/echo",
                "--json",
            ],
            "",
            &[],
        )
        .await,
    );
    assert_eq!(echoed["text"], "you sent authorization: Basic <redacted>");
    let big = json(
        cli(
            &hub,
            None,
            &[
                "probe",
                "keyed",
                "http.get",
                "--param",
                "path=/big",
                "--json",
            ],
            "",
            &[],
        )
        .await,
    );
    assert_eq!(
        (
            big["truncated"].as_bool(),
            big["text"].as_str().map(str::len)
        ),
        (Some(true), Some(256 * 1024))
    );
    let moved = json(
        cli(
            &hub,
            None,
            &[
                "probe",
                "api",
                "http.get",
                "--param",
                "path=/moved",
                "--json",
            ],
            "",
            &[],
        )
        .await,
    );
    assert_eq!(
        moved["status"], 302,
        "redirects are answers, never followed"
    );
    let text_out = ok(cli(
        &hub,
        None,
        &["probe", "api", "http.get", "--param", "path=/x"],
        "",
        &[],
    )
    .await);
    assert!(
        text_out.starts_with("HTTP 200") && text_out.contains("\"hello\": \"world\""),
        "{text_out}"
    );
    // Members run probes their key's scopes name, not tests. An integration is a
    // target like an agent: the key's glob must match its name.
    let member_key = |name: &str, agents: Option<&str>, probes: &[&str]| {
        let req = muster_proto::CreateKeyRequest {
            name: name.into(),
            role: muster_proto::Role::Member,
            agents: agents.map(str::to_owned),
            probes: probes.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        };
        let admin = hub.admin();
        async move { admin.create_key(&req).await.unwrap().key }
    };
    let member = member_key("m", None, &["http.get"]).await;
    for (name, agents, probes) in [
        ("agents-only", None, &["system.*"][..]),
        ("other-name", Some("web-*"), &["http.get"][..]),
    ] {
        let key = member_key(name, agents, probes).await;
        let out = cli(
            &hub,
            Some(&key),
            &["probe", "api", "http.get", "--param", "path=/x"],
            "",
            &[],
        )
        .await;
        assert!(!out.status.success(), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("may not run http.get on integration api"),
            "{err}"
        );
    }
    let denied = hub
        .count("SELECT COUNT(*) FROM audit_log WHERE action = 'probe.denied' AND target = 'integration:api'")
        .await;
    assert_eq!(denied, 2, "each refusal is audited");
    let as_member = json(
        cli(
            &hub,
            Some(&member),
            &["probe", "api", "http.get", "--param", "path=/x", "--json"],
            "",
            &[],
        )
        .await,
    );
    assert_eq!(as_member["status"], 200);
    assert!(
        !cli(&hub, Some(&member), &["test", "api"], "", &[])
            .await
            .status
            .success()
    );

    // No way out of the base URL: traversal, another host, a scheme, no slash.
    let before = api.seen.lock().unwrap().len();
    for bad in [
        "/../admin",
        "/x/../../admin",
        "/%2e%2e/admin",
        "/%2E%2E%2Fadmin",
        "//evil.example.com/x",
        "https://evil.example.com/x",
        "x",
        "/x\\..\\..\\admin",
    ] {
        let out = cli(
            &hub,
            None,
            &[
                "probe",
                "api",
                "http.get",
                "--param",
                &format!("path={bad}"),
            ],
            "",
            &[],
        )
        .await;
        assert!(!out.status.success(), "{bad:?} was run: {}", text(&out));
    }
    let unknown = cli(
        &hub,
        None,
        &["probe", "api", "http.post", "--param", "path=/x"],
        "",
        &[],
    )
    .await;
    assert!(!unknown.status.success());
    assert_eq!(
        api.seen.lock().unwrap().len(),
        before,
        "a refused probe sends nothing"
    );
    assert!(
        api.seen
            .lock()
            .unwrap()
            .iter()
            .all(|p| p.starts_with("/api")),
        "{:?}",
        api.seen.lock().unwrap()
    );

    // Removed: gone from the list; removing again is 404.
    ok(cli(&hub, None, &["remove", "open"], "", &[]).await);
    assert!(
        !cli(&hub, None, &["remove", "open"], "", &[])
            .await
            .status
            .success()
    );

    // Every answer, the audit log, the hub's log and the database: no secret.
    let list_text = ok(cli(&hub, None, &["list"], "", &[]).await);
    let list_json = ok(cli(&hub, None, &["list", "--json"], "", &[]).await);
    no_secret("list", &format!("{list_text}{list_json}"));
    for name in ["api", "wrong", "secure", "keyed"] {
        let s = ok(cli(&hub, None, &["show", name], "", &[]).await);
        assert!(s.contains("Secret:      set"), "{s}");
        no_secret("show", &s);
        no_secret(
            "show --json",
            &ok(cli(&hub, None, &["show", name, "--json"], "", &[]).await),
        );
    }
    let actions = hub.audit_actions().await;
    let n = |a: &str| actions.iter().filter(|x| x.as_str() == a).count();
    assert_eq!(n("integration.created"), 5);
    assert_eq!(n("integration.tested"), 5);
    assert_eq!(n("integration.removed"), 1);
    assert_eq!(n("integration.probe"), 6 + 8, "runs and refused paths");
    for s in SECRETS {
        let leaked = hub
            .count(&format!(
                "SELECT COUNT(*) FROM audit_log WHERE details LIKE '%{s}%' OR target LIKE '%{s}%'"
            ))
            .await;
        assert_eq!(leaked, 0);
    }
    let probe_audited = hub
        .count("SELECT COUNT(*) FROM audit_log WHERE action = 'integration.probe' AND details LIKE '%\"path\":\"/x\"%' AND details LIKE '%\"status\":200%'")
        .await;
    assert_eq!(probe_audited, 3, "two as the admin, one as the member");
    let rows = match &backend {
        Backend::Sqlite => {
            let db = hub.data_dir.join("muster.db");
            let mut bytes = std::fs::read(&db).unwrap();
            bytes.extend(std::fs::read(db.with_extension("db-wal")).unwrap_or_default());
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Backend::Postgres(_) => hub.dump_rows().await,
    };
    assert!(rows.contains("http://127.0.0.1"), "the rows were read");
    no_secret("the database", &rows);

    // A secret rotation seals the integrations' secrets again: they still open.
    let (options, pg, tmp) = hub.stop_keeping_data().await;
    muster_hub::rotate_secret(&options, None).await.unwrap();
    let mut hub = TestHub::start_on(options).await.unwrap();
    hub.adopt(pg, tmp);
    for name in ["api", "secure", "keyed"] {
        let out = ok(cli(&hub, None, &["test", name], "", &[]).await);
        assert!(out.contains("connected"), "{name} after rotation: {out}");
    }
    hub.stop().await;

    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logged.contains("integration tested"),
        "the hub's log was captured"
    );
    no_secret("the hub's log", &logged);
}
