//! Changes to agents' credentials made by any hub sharing a PostgreSQL database
//! (SPEC §12: a revocation on one hub closes the session another holds within a
//! second). Transactions that revoke, remove, replace or mark an agent cloned call
//! `pg_notify` (see `Db::notify_agent_changed`); this listens on its own connection
//! and hands the agent ids to the hub.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

use crate::model::AgentChange;
use crate::sql::db::AGENT_CHANNEL;

/// Listen at `url` from a task of its own, until the receiver is dropped. Whenever
/// announcements may have been lost (the connection dropped, or could not be made),
/// `Missed` is sent once the listener is listening again, so that a re-check then
/// sees everything.
pub(crate) fn watch(url: String) -> mpsc::Receiver<AgentChange> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut listener = None;
        loop {
            let Some(l) = listener.as_mut() else {
                tokio::select! {
                    () = tx.closed() => return,
                    connected = listen(&url) => match connected {
                        Ok(l) => {
                            listener = Some(l);
                            if tx.send(AgentChange::Missed).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot listen for agent changes; retrying in 1 s");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    },
                }
                continue;
            };
            let received = tokio::select! {
                // The hub stopped listening: close the connection now, not at the
                // next announcement.
                () = tx.closed() => return,
                received = l.try_recv() => received,
            };
            let change = match received {
                Ok(Some(n)) => AgentChange::Changed(n.payload().to_owned()),
                // The connection was lost and sqlx has listened again on a new one:
                // whatever was announced in between is gone.
                Ok(None) => AgentChange::Missed,
                Err(e) => {
                    tracing::warn!(error = %e, "listening for agent changes failed; reconnecting");
                    listener = None;
                    continue;
                }
            };
            if tx.send(change).await.is_err() {
                return;
            }
        }
    });
    rx
}

async fn listen(url: &str) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(AGENT_CHANNEL).await?;
    Ok(listener)
}
