//! `muster sso`: single sign-on with an OpenID Connect provider (SPEC §14), and the
//! provider groups whose members may sign in.

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use muster_proto::{CreateSsoGroupRequest, SetSsoRequest, SsoGroupInfo, SsoInfo};

use crate::connection::{ConnectionArgs, client};
use crate::output::{Format, emit, out, table, time};

#[derive(Args)]
pub struct SsoArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    #[command(subcommand)]
    action: SsoCommand,
}

#[derive(Subcommand)]
enum SsoCommand {
    /// The provider the hub signs people in with, and the redirect URL to register there.
    Show {
        #[command(flatten)]
        format: Format,
    },
    /// Set the provider. The hub fetches its discovery document first, so a wrong
    /// issuer fails here. The client secret: the first line of stdin with
    /// --client-secret-stdin, else MUSTER_OIDC_CLIENT_SECRET; kept encrypted.
    Set {
        /// The issuer URL, e.g. https://accounts.example.com (http:// only on loopback).
        #[arg(long, required_unless_present = "entra_tenant")]
        issuer: Option<String>,
        /// Microsoft Entra: the directory (tenant) ID; the issuer is made from it.
        #[arg(long, conflicts_with = "issuer")]
        entra_tenant: Option<String>,
        /// The client (application) ID registered at the provider.
        #[arg(long)]
        client_id: String,
        /// Read the client secret from the first line of stdin.
        #[arg(long)]
        client_secret_stdin: bool,
        /// The provider's name on the sign-in button ("Sign in with NAME").
        #[arg(long)]
        name: Option<String>,
        /// The claim listing a user's groups (default: groups).
        #[arg(long)]
        groups_claim: Option<String>,
        /// A scope to ask for besides openid; repeatable (default: profile, email).
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// Turn single sign-on off (refused while password login is off).
    Unset,
    /// Provider groups whose members may sign in, with their role.
    Groups {
        #[command(subcommand)]
        action: GroupsCommand,
    },
}

#[derive(Subcommand)]
enum GroupsCommand {
    /// Let the members of a group sign in with a role (the highest role wins).
    Add {
        /// The group's value in the groups claim (Entra: the group's object ID).
        group_id: String,
        /// A name for people.
        #[arg(long)]
        name: String,
        /// admin: everything; member: read the fleet and run probes.
        #[arg(long)]
        role: muster_proto::Role,
    },
    /// The authorized groups.
    List {
        #[command(flatten)]
        format: Format,
    },
    /// Stop admitting a group's members (from their next sign-in).
    Remove {
        /// The group's value in the groups claim.
        group_id: String,
    },
}

pub async fn exec(args: SsoArgs) -> Result<()> {
    let client = client(&args.conn)?;
    match args.action {
        SsoCommand::Show { format } => {
            let info = client.sso().await?;
            emit(format, &info, show)
        }
        SsoCommand::Set {
            issuer,
            entra_tenant,
            client_id,
            client_secret_stdin,
            name,
            groups_claim,
            scopes,
        } => {
            let client_secret = secret(client_secret_stdin)?;
            let info = client
                .set_sso(&SetSsoRequest {
                    issuer,
                    entra_tenant,
                    client_id,
                    client_secret,
                    display_name: name,
                    groups_claim,
                    scopes: (!scopes.is_empty()).then_some(scopes),
                })
                .await?;
            out!(
                "Single sign-on set: {}\nRegister this redirect URL at the provider: {}",
                info.issuer.unwrap_or_default(),
                info.redirect_url.unwrap_or_default()
            )
        }
        SsoCommand::Unset => {
            client.clear_sso().await?;
            out!("Single sign-on is off")
        }
        SsoCommand::Groups { action } => match action {
            GroupsCommand::Add {
                group_id,
                name,
                role,
            } => {
                let g = client
                    .add_sso_group(&CreateSsoGroupRequest {
                        id: group_id,
                        name,
                        role,
                    })
                    .await?;
                out!("Members of {} ({}) may sign in as {}", g.name, g.id, g.role)
            }
            GroupsCommand::List { format } => {
                let groups = client.list_sso_groups().await?;
                emit(format, &groups, |g| groups_table(g))
            }
            GroupsCommand::Remove { group_id } => {
                let g = client.remove_sso_group(&group_id).await?;
                out!("Removed group {} ({})", g.name, g.id)
            }
        },
    }
}

/// The client secret, from where `sso set --help` says; none is fine (public
/// clients, or keeping the one set before).
fn secret(from_stdin: bool) -> Result<Option<String>> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the client secret from stdin")?;
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            bail!("--client-secret-stdin: the first line of stdin is empty");
        }
        return Ok(Some(line));
    }
    Ok(std::env::var("MUSTER_OIDC_CLIENT_SECRET")
        .ok()
        .filter(|s| !s.is_empty()))
}

fn show(s: &SsoInfo) -> String {
    let mut lines = Vec::new();
    if !s.enabled {
        lines.push("Single sign-on: off (muster sso set)".to_owned());
    } else {
        lines.push(format!(
            "Single sign-on: on (from the {})",
            s.source.as_deref().unwrap_or("hub")
        ));
        let field = |k: &str, v: Option<&str>| format!("{k:<15}{}", v.unwrap_or("-"));
        lines.push(field("Issuer:", s.issuer.as_deref()));
        lines.push(field("Client ID:", s.client_id.as_deref()));
        lines.push(field(
            "Client secret:",
            Some(if s.client_secret_set { "set" } else { "none" }),
        ));
        lines.push(field("Button:", s.display_name.as_deref()));
        lines.push(field("Groups claim:", s.groups_claim.as_deref()));
        lines.push(field(
            "Scopes:",
            Some(&format!("openid {}", s.scopes.join(" "))),
        ));
    }
    lines.push(format!(
        "{:<15}{}",
        "Redirect URL:",
        s.redirect_url.as_deref().unwrap_or("-")
    ));
    lines.push(format!(
        "{:<15}{}",
        "Passwords:",
        if s.password_login { "on" } else { "off" }
    ));
    lines.join("\n")
}

fn groups_table(groups: &[SsoGroupInfo]) -> String {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.id.clone(),
                g.name.clone(),
                g.role.to_string(),
                time(&g.created_at),
            ]
        })
        .collect();
    table(&["GROUP ID", "NAME", "ROLE", "ADDED"], &rows)
}
