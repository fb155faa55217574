//! `muster users`: dashboard users (SPEC §11).

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use muster_proto::UserInfo;

use crate::connection::{ConnectionArgs, client};
use crate::output::{Format, emit, out, table, time};

#[derive(Args)]
pub struct UsersArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    #[command(subcommand)]
    action: UsersCommand,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user. An email address with no password option adds a person who signs
    /// in through single sign-on (matched by email at their first sign-in). Else the
    /// password: the first line of stdin with --password-stdin, else
    /// MUSTER_USER_PASSWORD, else asked for (not echoed) when stdin is a terminal,
    /// else the first line of stdin.
    Add {
        /// The login name, or the person's email address for single sign-on.
        name: String,
        /// admin: everything; member: read the fleet and run probes.
        #[arg(long)]
        role: muster_proto::Role,
        /// Read the password from the first line of stdin (for scripts).
        #[arg(long, conflicts_with = "password")]
        password_stdin: bool,
        /// Give an email-named user a password too (asked for, or MUSTER_USER_PASSWORD).
        #[arg(long)]
        password: bool,
    },
    /// Users with role, state and creation time.
    List {
        #[command(flatten)]
        format: Format,
    },
    /// Refuse the user at once, including sessions already open.
    Disable {
        /// The login name.
        name: String,
    },
    /// Let a disabled user log in again.
    Enable {
        /// The login name.
        name: String,
    },
    /// Remove the user.
    Remove {
        /// The login name.
        name: String,
    },
}

pub async fn exec(args: UsersArgs) -> Result<()> {
    let client = client(&args.conn)?;
    let (name, change, done) = match args.action {
        UsersCommand::Add {
            name,
            role,
            password_stdin,
            password: wants_password,
        } => {
            // An email address with no sign of a password: a single sign-on user.
            let sso_only = name.contains('@')
                && !password_stdin
                && !wants_password
                && std::env::var("MUSTER_USER_PASSWORD").map_or(true, |p| p.is_empty());
            let password = if sso_only {
                None
            } else {
                Some(password(&name, password_stdin)?)
            };
            let u = client
                .create_user(&muster_proto::CreateUserRequest {
                    name,
                    role,
                    password,
                })
                .await?;
            if sso_only {
                return out!(
                    "Added {} ({}): signs in with single sign-on, matched by email",
                    u.name,
                    u.role
                );
            }
            return out!("Added {} ({})", u.name, u.role);
        }
        UsersCommand::List { format } => {
            let users = client.list_users().await?;
            return emit(format, &users, |u| users_table(u));
        }
        UsersCommand::Disable { name } => (name, "disable", "Disabled"),
        UsersCommand::Enable { name } => (name, "enable", "Enabled"),
        UsersCommand::Remove { name } => (name, "remove", "Removed"),
    };
    client.change_user(&name, change).await?;
    out!("{done} {name}")
}

/// The new user's password, from where `users add --help` says.
fn password(name: &str, from_stdin: bool) -> Result<String> {
    use std::io::IsTerminal as _;
    if !from_stdin {
        if let Some(p) = std::env::var("MUSTER_USER_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
        {
            return Ok(p);
        }
        if std::io::stdin().is_terminal() {
            let first = rpassword::prompt_password(format!("Password for {name}: "))
                .context("reading the password from the terminal")?;
            let again = rpassword::prompt_password("The same again: ")
                .context("reading the password from the terminal")?;
            if first != again {
                bail!("the two passwords differ; nothing was changed");
            }
            return Ok(first);
        }
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn users_table(users: &[UserInfo]) -> String {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.name.clone(),
                u.role.to_string(),
                if u.disabled { "disabled" } else { "active" }.to_owned(),
                sign_in(u),
                u.last_login_at.as_deref().map_or("-".to_owned(), time),
                time(&u.created_at),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ROLE",
            "STATE",
            "SIGNS IN WITH",
            "LAST SSO",
            "CREATED",
        ],
        &rows,
    )
}

/// How a user gets in (as the dashboard's Access page says it): a password,
/// single sign-on as added by name, or only through groups (which ones matched last).
fn sign_in(u: &UserInfo) -> String {
    let mut ways = Vec::new();
    if u.password {
        ways.push("password".to_owned());
    }
    if !u.groups.is_empty() {
        ways.push(format!("sso via {}", u.groups.join(", ")));
    } else if u.granted_role.is_none() {
        ways.push("sso via groups".to_owned());
    } else if !u.password || u.subject.is_some() {
        ways.push("sso".to_owned());
    }
    ways.join(", ")
}
