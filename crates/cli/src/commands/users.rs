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
    /// Add a user. The password: the first line of stdin with --password-stdin, else
    /// MUSTER_USER_PASSWORD, else asked for (not echoed) when stdin is a terminal,
    /// else the first line of stdin.
    Add {
        /// The login name.
        name: String,
        /// admin: everything; member: read the fleet and run probes.
        #[arg(long)]
        role: muster_proto::Role,
        /// Read the password from the first line of stdin (for scripts).
        #[arg(long)]
        password_stdin: bool,
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
        } => {
            let password = password(&name, password_stdin)?;
            let u = client
                .create_user(&muster_proto::CreateUserRequest {
                    name,
                    role,
                    password,
                })
                .await?;
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
                time(&u.created_at),
            ]
        })
        .collect();
    table(&["NAME", "ROLE", "STATE", "CREATED"], &rows)
}
