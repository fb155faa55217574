//! Group commit for enrollments.
//!
//! An enrollment's transaction is short, but on a busy hub it is the one step that
//! cannot run in parallel: SQLite has one writer, and the audit chain puts every
//! hub's entries in one order. Each commit also waits for its own fsync, and on
//! SQLite every statement is a round trip to the driver's worker thread. So
//! enrollments that arrive while another commits wait in a queue, and the next
//! commit takes all of them (up to [`MAX_GROUP`]) in one transaction: one fsync, one
//! read of the audit chain's tail, and one multi-row statement per table instead of
//! one of each per enrollment.
//!
//! The commits run on a thread of their own, with their own connection. On the
//! hub's runtime they would queue behind TLS handshakes at every database round trip
//! (a group makes about eight), and under a burst of new connections that multiplied
//! the commit time tenfold. A commit only waits on the database, so the thread costs
//! almost no CPU; it exists for latency.
//!
//! A group never changes an outcome. Its members are checked in the order a single
//! enrollment checks itself: token uses, rule allowance, then the name. A new agent
//! whose name is already taken is answered `NameInUse` and gives back its token use
//! and allowance, as its own rolled-back transaction would (the hub then looks up the
//! holder and replaces it, which is the usual way a machine re-enrolls). Any other
//! refusal (a token's last uses, a rule's hourly allowance, an enrollment id used
//! twice, a deadlock between hubs) rolls the whole group back, and its two halves are
//! tried in turn, down to single enrollments where needed, so that each member gets
//! exactly the answer it would have got alone. A database failure is different: the
//! commit may have happened, so the members are not tried again but all get the
//! error, and an agent's retry with its enrollment id finds out which it was.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use sqlx::{Any, AssertSqlSafe, Transaction};
use tokio::sync::{Mutex, oneshot};

use crate::model::{AgentRecord, EnrollCommits, EnrollMode, EnrollWrite};
use crate::sql::db::{Db, open_pool};
use crate::sql::enroll::{
    ENROLLMENT_ROW, NEW_AGENT_ROW, bind_enrollments, bind_new_agents, complete_request_tx,
    replace_agent, return_rule_use, return_token_uses, take_rule_use, take_token_uses,
};
use crate::sql::rows::{AGENT_COLUMNS, FromRow, rows_sql};
use crate::{Result, StoreError};

/// The most enrollments one transaction takes. Bounds the statement size (sixteen
/// binds per agent row) and how long one commit holds the writer.
pub(crate) const MAX_GROUP: usize = 64;

/// The most enrollments waiting at once. The hub bounds enrollments in flight, but a
/// client that hangs up frees its slot while its write stays queued (it still
/// commits, as a retry would find); this keeps such writes bounded too.
const MAX_WAITING: usize = 4096;

/// Enrollments waiting for a commit, oldest first.
pub(crate) struct EnrollQueue {
    waiting: Arc<StdMutex<Vec<Waiting>>>,
    /// Held by whichever task is committing: the next one takes what queued meanwhile.
    committer: Arc<Mutex<()>>,
    counts: Arc<Counts>,
    /// The store as commits see it: the same database through their own connection.
    db: Db,
    thread: CommitThread,
}

/// The runtime commits run on: one worker thread, shut down with the store.
struct CommitThread(Option<tokio::runtime::Runtime>);

impl Drop for CommitThread {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which async code may not do; nothing waits
        // on a commit once the store is gone.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

#[derive(Default)]
struct Counts {
    transactions: AtomicU64,
    grouped: AtomicU64,
}

struct Waiting {
    write: EnrollWrite,
    reply: oneshot::Sender<Result<AgentRecord>>,
}

impl EnrollQueue {
    /// Start the commit thread and open its connection to the database at `url`.
    pub(crate) async fn start(db: &Db, url: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("muster-commit")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        // Opened on the commit thread, so that thread's reactor drives its socket.
        let (url, postgres) = (url.to_owned(), db.postgres);
        let pool = rt
            .spawn(async move { open_pool(&url, postgres, 1).await })
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))??;
        let mut writer = db.clone();
        writer.pool = pool;
        Ok(EnrollQueue {
            waiting: Default::default(),
            committer: Default::default(),
            counts: Default::default(),
            db: writer,
            thread: CommitThread(Some(rt)),
        })
    }

    pub(crate) fn unchained_for_benchmarks(&mut self) {
        self.db.chained = false;
    }

    /// Queue `write` and wait until a commit (possibly another caller's) has
    /// answered it.
    pub(crate) async fn enroll(&self, write: &EnrollWrite) -> Result<AgentRecord> {
        let Some(rt) = &self.thread.0 else {
            return Err(StoreError::Database(sqlx::Error::PoolClosed));
        };
        let (reply, answer) = oneshot::channel();
        {
            let mut waiting = lock(&self.waiting);
            if waiting.len() >= MAX_WAITING {
                return Err(StoreError::Busy);
            }
            waiting.push(Waiting {
                write: write.clone(),
                reply,
            });
        }
        let (db, waiting, committer, counts) = (
            self.db.clone(),
            self.waiting.clone(),
            self.committer.clone(),
            self.counts.clone(),
        );
        // Its own task: a client that hangs up must not cancel a commit that other
        // enrollments wait on. Every caller starts one; a task that finds the queue
        // already drained by an earlier one ends at once.
        rt.spawn(async move {
            let _turn = committer.lock().await;
            let group: Vec<Waiting> = {
                let mut waiting = lock(&waiting);
                let n = waiting.len().min(MAX_GROUP);
                waiting.drain(..n).collect()
            };
            commit(&db, &counts, group, &waiting).await;
        });
        // The task answers every enrollment it takes; a closed channel means it panicked.
        answer
            .await
            .unwrap_or(Err(StoreError::Database(sqlx::Error::WorkerCrashed)))
    }

    pub(crate) fn commits(&self) -> EnrollCommits {
        EnrollCommits {
            transactions: self.counts.transactions.load(Ordering::Relaxed),
            grouped: self.counts.grouped.load(Ordering::Relaxed),
        }
    }
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The queue stays consistent even if a holder panicked: pushes and drains are whole.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Commit `group` in queue order. A refused group is split in two halves, each tried
/// as a group in turn, down to single enrollments: one refusal among 64 then costs
/// about a dozen transactions instead of 64, and the halves still commit in order.
async fn commit(db: &Db, counts: &Counts, group: Vec<Waiting>, queue: &StdMutex<Vec<Waiting>>) {
    let mut todo = VecDeque::from([group]);
    while let Some(mut group) = todo.pop_front() {
        if group.is_empty() {
            // An earlier task took this caller's write into its group.
            continue;
        }
        if group.len() == 1 {
            let waiting = group.remove(0);
            let answer = db.enroll_one(&waiting.write).await;
            counts.transactions.fetch_add(1, Ordering::Relaxed);
            let down = match &answer {
                Err(e) if e.is_unavailable() => Some(copy_error(e)),
                _ => None,
            };
            let _ = waiting.reply.send(answer);
            if let Some(e) = down {
                fail_all_waiting(&e, todo, queue);
                return;
            }
            continue;
        }
        let writes: Vec<&EnrollWrite> = group.iter().map(|w| &w.write).collect();
        let outcome = enroll_group(db, &writes).await;
        counts.transactions.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(answers) => {
                let committed = answers.iter().filter(|a| a.is_ok()).count();
                counts
                    .grouped
                    .fetch_add(committed as u64, Ordering::Relaxed);
                for (waiting, answer) in group.into_iter().zip(answers) {
                    // The caller may have gone; its enrollment stands, as a retry finds.
                    let _ = waiting.reply.send(answer);
                }
            }
            Err(Group::Refused(e)) => {
                tracing::debug!(size = group.len(), error = %e, "group refused; splitting it");
                let second = group.split_off(group.len() / 2);
                todo.push_front(second);
                todo.push_front(group);
            }
            // The database failed, or the commit's outcome is unknown: committing the
            // members again could apply them twice. Each gets the error; the agent's
            // retry with its enrollment id finds out what happened.
            Err(Group::Failed(e)) => {
                tracing::warn!(size = group.len(), error = %e, "group commit failed");
                for waiting in group {
                    let _ = waiting.reply.send(Err(copy_error(&e)));
                }
                if e.is_unavailable() {
                    fail_all_waiting(&e, todo, queue);
                    return;
                }
            }
        }
    }
}

/// The database is unreachable: answer every enrollment still waiting with the same
/// error now. Found by the PostgreSQL-restart chaos drill (scripts/chaos): each
/// group used to try in turn, each waiting out the pool's acquire timeout (10 s),
/// so the ones queued behind got no answer before their client gave up. None of
/// them was attempted, so failing them can neither lose nor repeat an enrollment.
fn fail_all_waiting(e: &StoreError, todo: VecDeque<Vec<Waiting>>, queue: &StdMutex<Vec<Waiting>>) {
    let queued: Vec<Waiting> = lock(queue).drain(..).collect();
    for waiting in todo.into_iter().flatten().chain(queued) {
        let _ = waiting.reply.send(Err(copy_error(e)));
    }
}

/// Why a group did not commit.
enum Group {
    /// Something in it was refused: its halves are tried instead, down to single
    /// enrollments.
    Refused(StoreError),
    /// The database failed (or the commit's outcome is unknown).
    Failed(StoreError),
}

/// Whether `e` is the database refusing a change, which committing the members alone
/// resolves, rather than failing.
fn is_refusal(e: &StoreError) -> bool {
    match e {
        StoreError::Database(db) => db.as_database_error().is_some_and(|d| {
            d.is_unique_violation()
                // PostgreSQL: serialization failure, deadlock (two hubs' groups).
                || matches!(d.code().as_deref(), Some("40001" | "40P01"))
        }),
        _ => true,
    }
}

/// The same error again, for each member of a failed group (sqlx errors cannot be
/// cloned); keeps what [`StoreError::is_unavailable`] and
/// [`StoreError::is_disk_full`] look at.
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Database(sqlx::Error::PoolTimedOut) => {
            StoreError::Database(sqlx::Error::PoolTimedOut)
        }
        StoreError::Database(sqlx::Error::PoolClosed) => {
            StoreError::Database(sqlx::Error::PoolClosed)
        }
        StoreError::Database(sqlx::Error::Io(io)) => StoreError::Database(sqlx::Error::Io(
            std::io::Error::new(io.kind(), io.to_string()),
        )),
        // A full disk must still read as one for each member (503 naming the disk).
        e if e.is_disk_full() => StoreError::Database(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            e.to_string(),
        ))),
        other => StoreError::Database(sqlx::Error::Protocol(other.to_string())),
    }
}

/// All of `writes` in one transaction, answers in the same order. A name already
/// taken is answered on its own; any other refusal rolls back the whole group.
async fn enroll_group(db: &Db, writes: &[&EnrollWrite]) -> Result<Vec<Result<AgentRecord>>, Group> {
    let (_guard, mut tx) = db.begin_chain_write().await.map_err(Group::Failed)?;
    match write_group(db, &mut tx, writes).await {
        Ok(answers) => {
            tx.commit().await.map_err(|e| Group::Failed(e.into()))?;
            Ok(answers)
        }
        Err(e) => {
            tx.rollback().await.map_err(|e| Group::Failed(e.into()))?;
            Err(if is_refusal(&e) {
                Group::Refused(e)
            } else {
                Group::Failed(e)
            })
        }
    }
}

async fn write_group(
    db: &Db,
    tx: &mut Transaction<'static, Any>,
    writes: &[&EnrollWrite],
) -> Result<Vec<Result<AgentRecord>>> {
    // In the order a single enrollment checks them: token uses, rule allowance, name.
    // Token uses are taken for every member, one statement per token: it either has
    // room for all of them or the group goes one by one (which decides which ones get
    // the last uses).
    let mut uses: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for w in writes {
        if let Some(token) = &w.consume_token {
            let (n, now) = uses.entry(token).or_insert((0, w.now));
            *n += 1;
            *now = (*now).max(w.now);
        }
    }
    for (token, (n, now)) in uses {
        if !take_token_uses(tx, token, n, now).await? {
            return Err(StoreError::TokenExhausted);
        }
    }
    for w in writes {
        if let Some(rule) = &w.consume_rule {
            take_rule_use(tx, rule, w.now).await?;
        }
    }

    // New agents in one statement that skips a name already taken: that enrollment
    // alone is answered `NameInUse` (the hub then replaces the holder), gives back its
    // token use and rule allowance, and writes nothing else.
    let mut answers: Vec<Option<Result<AgentRecord>>> = writes.iter().map(|_| None).collect();
    let new: Vec<&EnrollWrite> = writes
        .iter()
        .filter(|w| w.mode == EnrollMode::New)
        .copied()
        .collect();
    if !new.is_empty() {
        let sql = format!(
            "{} ON CONFLICT DO NOTHING RETURNING {AGENT_COLUMNS}",
            rows_sql(NEW_AGENT_ROW, new.len())
        );
        let rows = bind_new_agents(sqlx::query(AssertSqlSafe(sql)), &new)
            .fetch_all(&mut **tx)
            .await?;
        let mut inserted: HashMap<String, AgentRecord> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let agent = AgentRecord::from_row(row)?;
            inserted.insert(agent.id.clone(), agent);
        }
        for (answer, w) in answers.iter_mut().zip(writes) {
            if w.mode == EnrollMode::New {
                *answer = Some(inserted.remove(&w.agent_id).ok_or(StoreError::NameInUse));
            }
        }
    }
    let taken: Vec<&EnrollWrite> = writes
        .iter()
        .zip(&answers)
        .filter(|(_, a)| matches!(a, Some(Err(_))))
        .map(|(w, _)| *w)
        .collect();
    // A name both claimed and taken by a re-enrollment in this group: who wins depends
    // on their order, which only one-by-one commits keep.
    if taken.iter().any(|t| {
        writes
            .iter()
            .any(|w| w.mode == EnrollMode::Replace && w.name == t.name)
    }) {
        return Err(StoreError::NameInUse);
    }
    for (answer, w) in answers.iter_mut().zip(writes) {
        if w.mode == EnrollMode::Replace {
            let agent = replace_agent(tx, w).await?;
            db.notify_agent_changed(tx, &agent.id).await?;
            *answer = Some(Ok(agent));
        }
    }
    let mut returned: BTreeMap<&str, i64> = BTreeMap::new();
    for w in &taken {
        if let Some(token) = &w.consume_token {
            *returned.entry(token).or_insert(0) += 1;
        }
        if let Some(rule) = &w.consume_rule {
            return_rule_use(tx, rule).await?;
        }
    }
    for (token, n) in returned {
        return_token_uses(tx, token, n).await?;
    }

    let done: Vec<&EnrollWrite> = writes
        .iter()
        .zip(&answers)
        .filter(|(_, a)| matches!(a, Some(Ok(_))))
        .map(|(w, _)| *w)
        .collect();
    let records: Vec<_> = done.iter().filter_map(|w| w.enrollment.as_ref()).collect();
    if !records.is_empty() {
        let sql = rows_sql(ENROLLMENT_ROW, records.len());
        bind_enrollments(sqlx::query(AssertSqlSafe(sql)), &records)
            .execute(&mut **tx)
            .await?;
    }
    for w in &done {
        if let Some(id) = &w.complete_request {
            complete_request_tx(tx, id, w.now).await?;
        }
    }
    // Appended here rather than through `AuditedTx::commit`: a failed append must roll
    // the group back and be sorted into refused or failed like every other statement
    // (see `enroll_group`), and only the members that committed have an entry.
    let entries: Vec<_> = done.iter().map(|w| &w.audit).collect();
    db.append_audit_many(tx, &entries, &db.audit_key, true)
        .await?;
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or(Err(StoreError::NotFound)))
        .collect())
}
