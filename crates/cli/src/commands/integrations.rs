//! `muster integrations`: external HTTPS APIs the hub probes itself (SPEC §15):
//! add one with its credentials (kept encrypted by the hub, never shown again),
//! list, show, test the connection, remove, and run a probe.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use muster_proto::{
    CreateIntegrationRequest, IntegrationInfo, IntegrationProbeResult, RunIntegrationProbeRequest,
};

use crate::connection::{ConnectionArgs, client};
use crate::output::{Format, emit, out, table, time};

/// Where the secret comes from when `--secret-stdin` is not given.
const SECRET_ENV: &str = "MUSTER_INTEGRATION_SECRET";

#[derive(Args)]
pub struct IntegrationsArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    #[command(subcommand)]
    action: IntegrationsCommand,
}

#[derive(Subcommand)]
enum IntegrationsCommand {
    /// Add an integration. The secret (a bearer token, user:password for basic, or
    /// the header's value): the first line of stdin with --secret-stdin, else
    /// MUSTER_INTEGRATION_SECRET; the hub keeps it encrypted and never shows it.
    Add {
        /// Its name: lower-case letters, digits, '.', '_', '-'.
        name: String,
        /// What kind of system it is: http (a generic HTTPS API).
        #[arg(long = "type", default_value = "http", value_parser = ["http"])]
        kind: String,
        /// The base URL every probe stays under: https:// (http:// only on a loopback
        /// address), no credentials, query or fragment.
        #[arg(long)]
        url: String,
        /// How the hub authenticates: none, bearer (Authorization: Bearer SECRET),
        /// basic (SECRET is user:password) or header (SECRET in --header-name).
        #[arg(long, value_parser = ["none", "bearer", "basic", "header"])]
        auth: String,
        /// The header carrying the secret with --auth header, e.g. X-Api-Key.
        #[arg(long)]
        header_name: Option<String>,
        /// Read the secret from the first line of stdin.
        #[arg(long)]
        secret_stdin: bool,
    },
    /// The integrations, with their status.
    List {
        #[command(flatten)]
        format: Format,
    },
    /// One integration: URL, auth, whether a secret is set, status and last error.
    Show {
        /// The integration's name.
        name: String,
        #[command(flatten)]
        format: Format,
    },
    /// Test the connection: a GET of the URL with the credentials. Connected on a
    /// 2xx answer; anything else is an error, kept as the status with its reason
    /// (and the command exits non-zero).
    Test {
        /// The integration's name.
        name: String,
        #[command(flatten)]
        format: Format,
    },
    /// Remove an integration and its secret.
    Remove {
        /// The integration's name.
        name: String,
    },
    /// Run a probe: http.get --param path=/x fetches a path under the URL.
    Probe {
        /// The integration's name.
        name: String,
        /// The probe, e.g. http.get.
        probe: String,
        /// A parameter as key=value; repeatable (http.get: path=/something).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        #[command(flatten)]
        format: Format,
    },
}

pub async fn exec(args: IntegrationsArgs) -> Result<()> {
    let client = client(&args.conn)?;
    match args.action {
        IntegrationsCommand::Add {
            name,
            kind,
            url,
            auth,
            header_name,
            secret_stdin,
        } => {
            let secret = secret(secret_stdin)?;
            if auth != "none" && secret.is_none() {
                bail!(
                    "--auth {auth} needs a secret: --secret-stdin, or {SECRET_ENV} in the environment"
                );
            }
            let i = client
                .create_integration(&CreateIntegrationRequest {
                    name,
                    kind,
                    url,
                    auth,
                    header_name,
                    secret,
                })
                .await?;
            out!(
                "Added integration {} ({}); test it with: muster integrations test {}",
                i.name,
                i.url,
                i.name
            )
        }
        IntegrationsCommand::List { format } => {
            let all = client.list_integrations().await?;
            emit(format, &all, |all| list_table(all))
        }
        IntegrationsCommand::Show { name, format } => {
            let i = client.integration(&name).await?;
            emit(format, &i, show)
        }
        IntegrationsCommand::Test { name, format } => {
            let r = client.test_integration(&name).await?;
            emit(format, &r, |r| match &r.error {
                None => format!("{}: connected ({} ms)", r.integration.name, r.duration_ms),
                Some(e) => format!("{}: error: {e}", r.integration.name),
            })?;
            // Scripts can tell (`muster integrations test api && …`).
            if r.error.is_some() {
                bail!("integration {name} is not connected");
            }
            Ok(())
        }
        IntegrationsCommand::Remove { name } => {
            let i = client.remove_integration(&name).await?;
            out!("Removed integration {}", i.name)
        }
        IntegrationsCommand::Probe {
            name,
            probe,
            params,
            format,
        } => {
            let req = RunIntegrationProbeRequest {
                params: parse_params(&params)?,
            };
            let r = client.run_integration_probe(&name, &probe, &req).await?;
            emit(format, &r, probe_text)
        }
    }
}

/// The secret, from where `integrations add --help` says.
fn secret(from_stdin: bool) -> Result<Option<String>> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the secret from stdin")?;
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            bail!("--secret-stdin: the first line of stdin is empty");
        }
        return Ok(Some(line));
    }
    Ok(std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty()))
}

fn parse_params(params: &[String]) -> Result<BTreeMap<String, String>> {
    params
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("--param {p:?}: expected KEY=VALUE"),
        })
        .collect()
}

fn list_table(all: &[IntegrationInfo]) -> String {
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.kind.clone(),
                i.url.clone(),
                i.auth.clone(),
                i.status.clone(),
                i.last_tested_at.as_deref().map(time).unwrap_or_default(),
            ]
        })
        .collect();
    table(&["NAME", "TYPE", "URL", "AUTH", "STATUS", "TESTED"], &rows)
}

fn show(i: &IntegrationInfo) -> String {
    let field = |k: &str, v: &str| format!("{k:<13}{v}");
    let mut lines = vec![
        field("Name:", &i.name),
        field("Type:", &i.kind),
        field("URL:", &i.url),
        field("Auth:", &i.auth),
    ];
    if let Some(h) = &i.header_name {
        lines.push(field("Header:", h));
    }
    lines.push(field("Secret:", if i.secret_set { "set" } else { "none" }));
    lines.push(field("Status:", &i.status));
    if let Some(e) = &i.last_error {
        lines.push(field("Last error:", e));
    }
    if let Some(t) = &i.last_tested_at {
        lines.push(field("Tested:", &time(t)));
    }
    lines.push(field("Created:", &time(&i.created_at)));
    lines.push(field("Probes:", &i.probes.join(", ")));
    lines.join("\n")
}

fn probe_text(r: &IntegrationProbeResult) -> String {
    if let Some(e) = &r.error {
        return format!("{} {}: error: {e}", r.integration, r.probe);
    }
    let mut out = format!(
        "HTTP {} ({} ms{})",
        r.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
        r.duration_ms,
        if r.truncated { ", body cut" } else { "" }
    );
    if let Some(j) = &r.json {
        out.push('\n');
        out.push_str(&serde_json::to_string_pretty(j).unwrap_or_default());
    } else if let Some(t) = &r.text {
        out.push('\n');
        out.push_str(t);
    }
    out
}
