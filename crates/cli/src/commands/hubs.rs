//! `muster hubs`: the hubs sharing one database (SPEC §12).

use anyhow::Result;
use clap::{Args, Subcommand};
use muster_proto::HubInfo;

use crate::connection::{ConnectionArgs, client};
use crate::output::{Format, emit, table, time};

#[derive(Args)]
pub struct HubsArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    #[command(subcommand)]
    action: HubsCommand,
}

#[derive(Subcommand)]
enum HubsCommand {
    /// Hubs sharing the database: address, state, version, sessions held, lease age.
    List {
        #[command(flatten)]
        format: Format,
    },
}

pub async fn exec(args: HubsArgs) -> Result<()> {
    let client = client(&args.conn)?;
    match args.action {
        HubsCommand::List { format } => {
            let hubs = client.list_hubs().await?;
            emit(format, &hubs, |h| hubs_table(h))
        }
    }
}

fn hubs_table(hubs: &[HubInfo]) -> String {
    let rows: Vec<Vec<String>> = hubs
        .iter()
        .map(|h| {
            let address = if h.this_hub {
                format!("{} (this hub)", h.address)
            } else {
                h.address.clone()
            };
            vec![
                address,
                h.state.as_str().to_owned(),
                h.version.clone(),
                h.sessions.to_string(),
                lease_age(h.lease_age_ms),
                time(&h.started_at),
            ]
        })
        .collect();
    table(
        &[
            "ADDRESS",
            "STATE",
            "VERSION",
            "SESSIONS",
            "LEASE AGE",
            "STARTED",
        ],
        &rows,
    )
}

/// `4s`, `3m`, `2h`, `5d`: how long ago the lease was renewed.
fn lease_age(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lease_ages_read_in_the_largest_whole_unit() {
        assert_eq!(super::lease_age(900), "0s");
        assert_eq!(super::lease_age(59_999), "59s");
        assert_eq!(super::lease_age(61_000), "1m");
        assert_eq!(super::lease_age(7_200_000), "2h");
        assert_eq!(super::lease_age(3 * 86_400_000), "3d");
    }
}
