//! `muster keys`: API keys for people and tools (SPEC §11).

use anyhow::Result;
use clap::{Args, Subcommand};
use muster_proto::{CreatedKey, KeyInfo};

use crate::connection::{ConnectionArgs, client};
use crate::duration::parse_duration;
use crate::output::{Format, emit, out, table, time_or};

#[derive(Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    #[command(subcommand)]
    action: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; its value is shown once.
    Create {
        /// Who or what the key is for.
        #[arg(long)]
        name: String,
        /// admin: everything; member: read the fleet and run probes within its scopes.
        #[arg(long)]
        role: muster_proto::Role,
        /// Member keys: agent names this key may see (glob).
        #[arg(long)]
        agents: Option<String>,
        /// Member keys: probes this key may run, comma-separated.
        #[arg(long, value_delimiter = ',')]
        probes: Vec<String>,
        /// Lifetime, e.g. 90d; default: no expiry.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<std::time::Duration>,
        #[command(flatten)]
        format: Format,
    },
    /// Keys with role, scope, expiry and last use (never their values).
    List {
        #[command(flatten)]
        format: Format,
    },
    /// Replace a key's value; the old value stops working at once.
    Rotate {
        /// The key's id.
        id: String,
    },
    /// Revoke a key; it stops working at once.
    Revoke {
        /// The key's id.
        id: String,
    },
}

pub async fn exec(args: KeysArgs) -> Result<()> {
    let client = client(&args.conn)?;
    match args.action {
        KeysCommand::Create {
            name,
            role,
            agents,
            probes,
            expires,
            format,
        } => {
            let created = client
                .create_key(&muster_proto::CreateKeyRequest {
                    name,
                    role,
                    agents,
                    probes,
                    expires_s: expires.map(|d| d.as_secs()),
                })
                .await?;
            emit(format, &created, created_text)
        }
        KeysCommand::List { format } => {
            let keys = client.list_keys().await?;
            emit(format, &keys, |k| keys_table(k))
        }
        KeysCommand::Rotate { id } => {
            let k = client.rotate_key(&id).await?;
            out!("Key:  {}", k.key)?;
            out!("The old value no longer works; the new one is shown only this once.")
        }
        KeysCommand::Revoke { id } => {
            let k = client.revoke_key(&id).await?;
            out!("Revoked key {} ({})", k.id, k.name)
        }
    }
}

fn created_text(created: &CreatedKey) -> String {
    [
        format!("Key:  {}", created.key),
        format!("ID:   {}", created.info.id),
        format!("Role: {}", created.info.role),
        "The key is shown only this once.".to_owned(),
    ]
    .join("\n")
}

fn keys_table(keys: &[KeyInfo]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.name.clone(),
                k.prefix.clone(),
                k.role.to_string(),
                k.agents.clone().unwrap_or_else(|| "*".to_owned()),
                k.state.to_string(),
                time_or(k.expires_at.as_deref(), "never"),
                time_or(k.last_used_at.as_deref(), "never"),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "PREFIX",
            "ROLE",
            "AGENTS",
            "STATE",
            "EXPIRES",
            "LAST USED",
        ],
        &rows,
    )
}
