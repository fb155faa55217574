//! `muster tokens`: enrollment tokens (SPEC §4).

use anyhow::Result;
use clap::{Args, Subcommand};
use muster_proto::{CreateTokenRequest, CreateTokenResponse, TokenInfo};

use crate::connection::{ConnectionArgs, client};
use crate::duration::parse_duration;
use crate::output::{Format, emit, out, parse_label, table, time_or};

#[derive(Args)]
pub struct TokensArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    #[command(subcommand)]
    action: TokensCommand,
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Create an enrollment token (single use, 15 minutes, unless told otherwise).
    Create(CreateTokenArgs),
    /// List tokens (never their values).
    List {
        #[command(flatten)]
        format: Format,
    },
    /// Revoke a token by id or prefix.
    Revoke {
        /// The token's id or prefix.
        id: String,
    },
}

#[derive(Args)]
struct CreateTokenArgs {
    /// How many enrollments the token allows (default 1).
    #[arg(long, conflicts_with = "unlimited")]
    max_uses: Option<u32>,
    /// Allow any number of enrollments.
    #[arg(long)]
    unlimited: bool,
    /// Lifetime, e.g. 15m, 24h, 7d (default 15m).
    #[arg(long, value_parser = parse_duration, conflicts_with = "no_expiry")]
    ttl: Option<std::time::Duration>,
    /// The token never expires.
    #[arg(long)]
    no_expiry: bool,
    /// Hostname glob the enrolling machine must match, e.g. 'web-*'.
    #[arg(long)]
    pattern: Option<String>,
    /// Source network allowed to enroll; repeatable.
    #[arg(long = "cidr")]
    cidrs: Vec<String>,
    /// Label given to every agent enrolled with the token, k=v; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// May replace a live agent of the same name.
    #[arg(long)]
    allow_replace: bool,
    /// A note shown in `tokens list`.
    #[arg(long)]
    description: Option<String>,
    #[command(flatten)]
    format: Format,
}

pub async fn exec(args: TokensArgs) -> Result<()> {
    let client = client(&args.conn)?;
    match args.action {
        TokensCommand::Create(a) => {
            let req = CreateTokenRequest {
                max_uses: if a.unlimited {
                    None
                } else {
                    Some(a.max_uses.unwrap_or(1))
                },
                ttl_s: if a.no_expiry {
                    None
                } else {
                    Some(a.ttl.map_or(15 * 60, |d| d.as_secs()))
                },
                pattern: a.pattern,
                cidrs: a.cidrs,
                labels: a.labels.into_iter().collect(),
                allow_replace: a.allow_replace,
                description: a.description,
            };
            let t = client.create_token(&req).await?;
            emit(a.format, &t, created_text)
        }
        TokensCommand::List { format } => {
            let tokens = client.list_tokens().await?;
            emit(format, &tokens, |t| tokens_table(t))
        }
        TokensCommand::Revoke { id } => {
            let t = client.revoke_token(&id).await?;
            out!("Revoked token {} ({})", t.id, t.prefix)
        }
    }
}

fn created_text(t: &CreateTokenResponse) -> String {
    [
        format!("Token:    {}", t.token),
        format!("ID:       {}", t.id),
        format!("Expires:  {}", time_or(t.expires_at.as_deref(), "never")),
        format!(
            "Uses:     {}",
            t.max_uses.map_or("unlimited".to_owned(), |m| m.to_string())
        ),
        String::new(),
    ]
    .into_iter()
    .chain(match &t.install {
        Some(i) => vec![
            "Install and enroll an agent (each line checks the hub before anything runs;"
                .to_owned(),
            "append --name N, --label k=v, --force as needed):".to_owned(),
            String::new(),
            "  Linux, macOS, BSD (as a user who may sudo):".to_owned(),
            format!("  {}", i.sh),
            String::new(),
            "  Windows (PowerShell as Administrator; -Name, -Label, -Force):".to_owned(),
            format!("  {}", i.powershell),
            String::new(),
            "  Where muster is already installed:".to_owned(),
            format!("  {}", i.enroll),
        ],
        None => vec![
            "Enroll a machine with (the token pins the hub's CA):".to_owned(),
            format!("  {}", t.enroll_command),
        ],
    })
    .chain([
        String::new(),
        "The token is shown only this once.".to_owned(),
    ])
    .collect::<Vec<_>>()
    .join("\n")
}

fn tokens_table(tokens: &[TokenInfo]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.prefix.clone(),
                format!(
                    "{}/{}",
                    t.uses,
                    t.max_uses.map_or("∞".to_owned(), |m| m.to_string())
                ),
                time_or(t.expires_at.as_deref(), "never"),
                t.state.to_string(),
                t.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["ID", "PREFIX", "USES", "EXPIRES", "STATE", "DESCRIPTION"],
        &rows,
    )
}
