//! Changes to agents' credentials made by any hub sharing a PostgreSQL database
//! (SPEC §12: a revocation on one hub closes the session another holds within a
//! second). Transactions that revoke, remove, replace or mark an agent cloned call
//! `pg_notify` (see `Db::notify_agent_changed`); this listens on its own connection
//! and hands the agent ids to the hub.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

use crate::Result;
use crate::model::AgentChange;
use crate::sql::AGENT_CHANNEL;

/// Start listening at `url`; the receiver ends when the listener task does (never,
/// while the receiver lives: a lost connection is retried and reported as `Missed`).
pub(crate) async fn watch(url: &str) -> Result<mpsc::Receiver<AgentChange>> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(AGENT_CHANNEL).await?;
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let received = tokio::select! {
                // The hub stopped listening: close the connection now, not at the
                // next announcement.
                () = tx.closed() => return,
                received = listener.try_recv() => received,
            };
            let change = match received {
                Ok(Some(n)) => AgentChange::Changed(n.payload().to_owned()),
                // The connection was lost (the next call reconnects and listens
                // again): whatever was announced meanwhile is gone.
                Ok(None) => AgentChange::Missed,
                Err(e) => {
                    tracing::warn!(error = %e, "listening for agent changes failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    AgentChange::Missed
                }
            };
            if tx.send(change).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
