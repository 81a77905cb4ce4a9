//! Group commit: concurrent appends share one transaction.
//!
//! A writer task takes the appends queued meanwhile (up to `max_batch`; when the queue
//! runs dry it first yields to the runtime a few times, so that the callers it has
//! just answered can queue their next appends), orders them by stream name (a stable
//! sort: one stream's appends keep their order; every process locks stream rows in the
//! same order, so batches of two processes cannot deadlock on them) and writes them in
//! two steps:
//!
//! 1. The fast path ([`crate::batch`]): every append without a condition, in one
//!    transaction of a few `append_batch` calls. What it leaves unwritten (a stored
//!    id, an expectation that does not hold) goes on to step 2.
//! 2. The slow path, below: one `append` call per append, which returns the facts a
//!    refusal is decided on. Conditional appends always take it.
//!
//! The slow path sends, pipelined in one round trip:
//!
//! ```text
//! BEGIN; SELECT lock_keys(...); SELECT append(...); SELECT append(...); ...; COMMIT
//! ```
//!
//! `lock_keys` takes the transaction's advisory locks for conditional appends (see
//! [`crate::locks`]), all at once and sorted, before any stream row is locked. A batch
//! whose appends need more than [`MAX_LOCK_KEYS`] keys is split into several
//! transactions.
//!
//! `append` never raises for a refused append: it writes nothing and returns the facts
//! that [`foldstore_core::rules::plan_append`] decides on. So a statement fails only
//! for a rare reason (a concurrent identical append, a timeout, a deadlock); then the
//! transaction has rolled back (PostgreSQL turns the pipelined `COMMIT` of a failed
//! transaction into a rollback), the failing append gets its own answer, and the others
//! run again in a new transaction. One failing append therefore fails alone, without a
//! savepoint per append: with more than 64 subtransactions a transaction's
//! subtransaction cache overflows, which slows every snapshot in the cluster.
//!
//! Answers go out only after `COMMIT` returned.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use foldstore_core::commit_log::CommitLog;
use foldstore_core::dcb::AppendCondition;
use foldstore_core::rules::{AppendPlan, StoredId, StreamState, plan_append};
use foldstore_core::{
    AppendError, AppendResult, BackendError, BackendErrorKind, ExpectedRevision, NewEvent,
    StreamName, group_hash,
};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};
use uuid::Uuid;

use crate::batch;
use crate::error::{Effect, backend, is_duplicate_id, is_transient_conflict};
use crate::locks::{LockSet, matches_everything};
use crate::pg::{Xid8, position, split, to_i64, to_u64};
use crate::pipeline::{self, NotCommitted, Sent, Step};
use crate::store::Shared;

/// An append waiting for a writer.
pub(crate) struct Request {
    pub(crate) stream: StreamName,
    pub(crate) expected: ExpectedRevision,
    pub(crate) events: Vec<NewEvent>,
    /// Checked in the batch's transaction after the expected revision (DCB).
    pub(crate) condition: Option<AppendCondition>,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, AppendError>>,
    /// Times this append ran into a race and was run again.
    pub(crate) races: u32,
}

/// How often an append may lose a race (its facts changed between the check and the
/// write) before it fails; each loss means another append to the same ids or stream
/// committed, so this is never reached in practice.
const MAX_RACES: u32 = 3;
/// How often a batch is run again after a deadlock or serialization failure.
const MAX_CONFLICTS: u32 = 5;
/// Statements of a batch before its first `append`: `BEGIN` and `lock_keys`.
const STEPS_BEFORE_APPENDS: usize = 2;

/// Joins the tags or types of one event or query item for the SQL functions; tags and
/// types hold no control characters, so `chr(31)` cannot occur in them.
const SEPARATOR: &str = "\u{1f}";

/// Tags or types as the SQL functions take them: joined by [`SEPARATOR`], `None` for
/// none.
pub(crate) fn joined(values: &[String]) -> Option<String> {
    (!values.is_empty()).then(|| values.join(SEPARATOR))
}

/// An expected revision as the SQL functions take it: `(kind, revision)`, kind 0 any,
/// 1 no stream, 2 stream exists, 3 exact.
pub(crate) fn expectation(expected: ExpectedRevision) -> (i16, i64) {
    match expected {
        ExpectedRevision::Any => (0, 0),
        ExpectedRevision::NoStream => (1, 0),
        ExpectedRevision::StreamExists => (2, 0),
        ExpectedRevision::Exact(n) => (3, to_i64(n)),
    }
}

/// The advisory-lock keys of one transaction carrying `pending`, sorted, and whether
/// each is taken exclusively (see [`crate::locks`]).
fn lock_keys(schema: &str, pending: &[Request]) -> (Vec<i64>, Vec<bool>) {
    let mut locks = LockSet::default();
    for request in pending {
        locks_of(schema, request, &mut locks);
    }
    locks.arrays()
}

/// How often a writer that found the queue empty lets other tasks run before it
/// closes its batch (see [`writer`]).
const MAX_GATHER_YIELDS: u32 = 4;

/// The most bytes of event data one batch gathers before it is sent.
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

type Queue = Arc<Mutex<mpsc::Receiver<Request>>>;

/// A writer task: runs until the store's queue closes.
pub(crate) async fn writer(shared: Arc<Shared>, queue: Queue) {
    let max_batch = shared.options.max_batch.max(1);
    let mut commit_log = CommitLog::new("postgres");
    loop {
        let batch = {
            let mut rx = queue.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut bytes = size(&first);
            let mut batch = vec![first];
            let mut yields = 0;
            while batch.len() < max_batch && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(request) => {
                        bytes += size(&request);
                        batch.push(request);
                    }
                    Err(_) if yields < MAX_GATHER_YIELDS => {
                        // The queue is empty for now. The callers answered by the last
                        // batch were just woken and are queueing their next appends:
                        // let them run once before this batch closes.
                        yields += 1;
                        tokio::task::yield_now().await;
                        if rx.is_empty() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        let (requests, started) = (batch.len(), Instant::now());
        let events = batch.iter().map(|r| r.events.len()).sum();
        commit_batch(&shared, batch).await;
        commit_log.committed(requests, events, started.elapsed());
    }
}

fn size(request: &Request) -> usize {
    request.events.iter().map(NewEvent::size).sum()
}

/// What one append's statement said.
enum Decision {
    /// Written (or found already stored): the answer once the transaction commits.
    Done(AppendResult),
    /// Refused by the rules; nothing written.
    Refused(AppendError),
    /// The facts changed under it: run it again.
    Race,
}

/// How an attempt at a batch ended.
enum Attempt {
    /// Committed: one decision per request.
    Committed(Vec<Decision>),
    /// Rolled back because request `index` failed with `error`.
    Failed {
        index: usize,
        error: tokio_postgres::Error,
    },
    /// Rolled back because of a deadlock or serialization failure: run the batch again.
    Conflict(tokio_postgres::Error),
    /// The connection failed; `effect` says whether the batch may have committed.
    Lost {
        error: tokio_postgres::Error,
        effect: Effect,
    },
    /// A row could not be decoded.
    Broken(BackendError),
}

/// The most advisory-lock keys one transaction takes (unless a single append needs
/// more): a batch with more is split into transactions, so that no group commit fills
/// PostgreSQL's shared lock table (`max_locks_per_transaction` per connection).
const MAX_LOCK_KEYS: usize = 256;

/// The advisory locks `request` takes (see [`crate::locks`]).
fn locks_of(schema: &str, request: &Request, set: &mut LockSet) {
    set.writer(schema, &request.events);
    if let Some(c) = &request.condition {
        set.condition(schema, &c.fail_if_events_match);
    }
}

async fn commit_batch(shared: &Shared, mut pending: Vec<Request>) {
    pending.sort_by(|a, b| a.stream.cmp(&b.stream));
    // Split by lock keys, keeping the stream order within and across transactions.
    let schema = &shared.options.schema;
    let mut chunks: Vec<Vec<Request>> = Vec::new();
    let mut keys = LockSet::default();
    for request in pending {
        let mut with = LockSet::default();
        locks_of(schema, &request, &mut with);
        locks_of(schema, &request, &mut keys);
        match chunks.last_mut() {
            Some(chunk) if keys.len() <= MAX_LOCK_KEYS => chunk.push(request),
            _ => {
                keys = with;
                chunks.push(vec![request]);
            }
        }
    }
    for chunk in chunks {
        commit_chunk(shared, chunk).await;
    }
}

/// Commits one transaction's worth of appends: those that [`batch::fits`] through the
/// fast path first, then the rest (and whatever the fast path left unwritten) one
/// `append` call each.
async fn commit_chunk(shared: &Shared, pending: Vec<Request>) {
    let (fast, slow): (Vec<Request>, Vec<Request>) = pending.into_iter().partition(batch::fits);
    let mut rest = commit_fast(shared, fast).await;
    if rest.is_empty() {
        rest = slow;
    } else if !slow.is_empty() {
        rest.extend(slow);
        // The slow path locks stream rows in name order too.
        rest.sort_by(|a, b| a.stream.cmp(&b.stream));
    }
    if !rest.is_empty() {
        commit_slow(shared, rest).await;
    }
}

/// Runs `pending` through `append_batch`, answers the appends it wrote, and returns
/// those left for the slow path: the unwritten ones, or all of them when the
/// transaction rolled back.
async fn commit_fast(shared: &Shared, pending: Vec<Request>) -> Vec<Request> {
    if pending.is_empty() {
        return pending;
    }
    let conn = match shared.pool.get().await {
        Ok(conn) => conn,
        Err(e) => {
            fail_all(pending, &crate::error::pool(e));
            return Vec::new();
        }
    };
    let statements = async {
        let stmt = conn.prepare_cached(&shared.sql.append_batch).await?;
        let lock = conn.prepare_cached(&shared.sql.lock_keys).await?;
        Ok::<_, tokio_postgres::Error>((stmt, lock))
    };
    let (stmt, lock) = match statements.await {
        Ok(statements) => statements,
        Err(e) => {
            fail_all(pending, &backend(e, Effect::None));
            return Vec::new();
        }
    };
    let (keys, exclusive) = lock_keys(&shared.options.schema, &pending);
    let delay = shared.options.test_commit_delay;
    match batch::attempt(&conn, &stmt, &lock, (&keys, &exclusive), &pending, delay).await {
        batch::FastAttempt::Committed(outcomes) => {
            // Record the acknowledged transaction before answering, so that a caller's
            // next read of `$all` waits for it.
            if let Some(tx) = outcomes
                .iter()
                .flatten()
                .map(|r| crate::pg::tx_of(r.position))
                .max()
            {
                shared.acknowledged(tx);
            }
            let written = outcomes.iter().flatten().count() as u64;
            shared.stats.fast_written.fetch_add(written, Relaxed);
            shared.stats.fast_transactions.fetch_add(1, Relaxed);
            let mut rest = Vec::new();
            for (request, outcome) in pending.into_iter().zip(outcomes) {
                match outcome {
                    Some(result) => {
                        let _ = request.reply.send(Ok(result));
                    }
                    None => rest.push(request),
                }
            }
            rest
        }
        batch::FastAttempt::RolledBack(error) => {
            shared.stats.fast_rolled_back.fetch_add(1, Relaxed);
            tracing::debug!(%error, "group commit fast path rolled back; running its appends one by one");
            pending
        }
        batch::FastAttempt::Lost { error, effect } => {
            // Do not give the connection back: its state is unknown.
            let _ = deadpool_postgres::Object::take(conn);
            fail_all(pending, &backend(error, effect));
            Vec::new()
        }
        batch::FastAttempt::Broken(e) => {
            fail_all(pending, &e);
            Vec::new()
        }
    }
}

/// Runs `pending` one `append` call each in a transaction, again until every append
/// has its answer.
async fn commit_slow(shared: &Shared, mut pending: Vec<Request>) {
    let mut conflicts = 0;
    while !pending.is_empty() {
        let conn = match shared.pool.get().await {
            Ok(conn) => conn,
            Err(e) => {
                let e = crate::error::pool(e);
                return fail_all(pending, &e);
            }
        };
        let stmt = match conn.prepare_cached(&shared.sql.append).await {
            Ok(stmt) => stmt,
            Err(e) => return fail_all(pending, &backend(e, Effect::None)),
        };
        let lock = match conn.prepare_cached(&shared.sql.lock_keys).await {
            Ok(stmt) => stmt,
            Err(e) => return fail_all(pending, &backend(e, Effect::None)),
        };
        match attempt(shared, &conn, &stmt, &lock, &pending).await {
            Attempt::Committed(decisions) => {
                // Record the acknowledged transactions before answering, so that a
                // caller's next read of `$all` waits for them.
                let acknowledged = decisions
                    .iter()
                    .filter_map(|d| match d {
                        Decision::Done(result) => Some(crate::pg::tx_of(result.position)),
                        _ => None,
                    })
                    .max();
                if let Some(tx) = acknowledged {
                    shared.acknowledged(tx);
                }
                let answered = decisions
                    .iter()
                    .filter(|d| !matches!(d, Decision::Race))
                    .count() as u64;
                shared.stats.slow_answered.fetch_add(answered, Relaxed);
                let mut again = Vec::new();
                for (mut request, decision) in pending.drain(..).zip(decisions) {
                    match decision {
                        Decision::Done(result) => {
                            let _ = request.reply.send(Ok(result));
                        }
                        Decision::Refused(e) => {
                            let _ = request.reply.send(Err(e));
                        }
                        Decision::Race => {
                            request.races += 1;
                            if request.races > MAX_RACES {
                                let e = BackendError::new(
                                    BackendErrorKind::Unavailable,
                                    "the append kept racing with concurrent appends to the same stream or ids",
                                );
                                let _ = request.reply.send(Err(e.into()));
                            } else {
                                again.push(request);
                            }
                        }
                    }
                }
                pending = again;
            }
            Attempt::Failed { index, error } => {
                let mut request = pending.remove(index);
                if is_duplicate_id(&error) && request.races < MAX_RACES {
                    // A concurrent append with these ids committed first: run it again
                    // to get the facts (an idempotent retry or a typed refusal).
                    request.races += 1;
                    pending.insert(index, request);
                } else {
                    let _ = request.reply.send(Err(backend(error, Effect::None).into()));
                }
            }
            Attempt::Conflict(error) => {
                conflicts += 1;
                if conflicts > MAX_CONFLICTS {
                    return fail_all(pending, &backend(error, Effect::None));
                }
                tokio::time::sleep(Duration::from_millis(conflicts.into())).await;
            }
            Attempt::Lost { error, effect } => {
                // Do not give the connection back: its state is unknown.
                let _ = deadpool_postgres::Object::take(conn);
                return fail_all(pending, &backend(error, effect));
            }
            Attempt::Broken(e) => return fail_all(pending, &e),
        }
    }
}

fn fail_all(pending: Vec<Request>, error: &BackendError) {
    for request in pending {
        let e = BackendError::new(error.kind, error.message.clone());
        let _ = request.reply.send(Err(e.into()));
    }
}

/// The parameters of one `append` call.
struct Params<'a> {
    tags: Vec<Option<String>>,
    cond: bool,
    cond_all: bool,
    cond_after_tx: Xid8,
    cond_after_seq: i64,
    cond_types: Vec<Option<String>>,
    cond_tags: Vec<Option<String>>,
    stream: &'a str,
    category: &'a str,
    group_hash: i64,
    category_hash: i64,
    kind: i16,
    revision: i64,
    ids: Vec<Uuid>,
    types: Vec<&'a str>,
    content_types: Vec<&'a str>,
    datas: Vec<&'a [u8]>,
    metadatas: Vec<&'a str>,
}

impl<'a> Params<'a> {
    fn of(request: &'a Request) -> Self {
        let (kind, revision) = expectation(request.expected);
        let events = &request.events;
        let (cond, cond_all, (cond_after_tx, cond_after_seq), cond_types, cond_tags) =
            match &request.condition {
                None => (false, false, (Xid8(0), 0), Vec::new(), Vec::new()),
                Some(c) => {
                    let q = &c.fail_if_events_match;
                    (
                        true,
                        matches_everything(q),
                        c.after.map_or((Xid8(0), 0), |p| split(p, false)),
                        q.items.iter().map(|i| joined(&i.types)).collect(),
                        q.items.iter().map(|i| joined(&i.tags)).collect(),
                    )
                }
            };
        Self {
            tags: events.iter().map(|e| joined(&e.tags)).collect(),
            cond,
            cond_all,
            cond_after_tx,
            cond_after_seq,
            cond_types,
            cond_tags,
            stream: request.stream.as_str(),
            category: request.stream.category(),
            group_hash: to_i64(group_hash(request.stream.id())),
            category_hash: to_i64(group_hash(request.stream.category())),
            kind,
            revision,
            ids: events.iter().map(|e| e.id).collect(),
            types: events.iter().map(|e| e.event_type.as_str()).collect(),
            content_types: events.iter().map(|e| e.content_type.as_str()).collect(),
            datas: events.iter().map(|e| e.data.as_ref()).collect(),
            metadatas: events.iter().map(|e| e.metadata.as_str()).collect(),
        }
    }

    fn refs(&self) -> [&(dyn ToSql + Sync); 18] {
        [
            &self.stream,
            &self.category,
            &self.group_hash,
            &self.category_hash,
            &self.kind,
            &self.revision,
            &self.ids,
            &self.types,
            &self.content_types,
            &self.datas,
            &self.metadatas,
            &self.tags,
            &self.cond,
            &self.cond_all,
            &self.cond_after_tx,
            &self.cond_after_seq,
            &self.cond_types,
            &self.cond_tags,
        ]
    }
}

async fn attempt(
    shared: &Shared,
    conn: &deadpool_postgres::Object,
    stmt: &Statement,
    lock: &Statement,
    pending: &[Request],
) -> Attempt {
    let params: Vec<Params<'_>> = pending.iter().map(Params::of).collect();
    let (keys, exclusive) = lock_keys(&shared.options.schema, pending);
    let delay = shared.options.test_commit_delay;
    let mut steps: Vec<Step<'_, Option<Row>>> = Vec::with_capacity(params.len() + 1);
    // Every advisory lock of the transaction, sorted, before any stream row is locked.
    let (keys, exclusive) = (&keys, &exclusive);
    steps.push(Box::pin(async move {
        conn.execute(lock, &[keys, exclusive]).await.map(|_| None)
    }));
    for p in &params {
        steps.push(Box::pin(async move {
            conn.query_one(stmt, &p.refs()).await.map(Some)
        }));
    }
    let (outputs, commit) = match pipeline::send(conn, steps, delay).await {
        Sent::Ran { outputs, commit } => (outputs, commit),
        Sent::Lost { error, effect } => return Attempt::Lost { error, effect },
        Sent::Failed { index, error } => {
            if index < STEPS_BEFORE_APPENDS || is_transient_conflict(&error) {
                return Attempt::Conflict(error);
            }
            return Attempt::Failed {
                index: index - STEPS_BEFORE_APPENDS,
                error,
            };
        }
    };

    let mut decisions = Vec::with_capacity(pending.len());
    for (request, row) in pending
        .iter()
        .zip(outputs.into_iter().skip(STEPS_BEFORE_APPENDS))
    {
        let decision = match row {
            Some(row) => decide(request, &row),
            None => Err(BackendError::new(
                BackendErrorKind::Internal,
                "append returned no row",
            )),
        };
        match decision {
            Ok(d) => decisions.push(d),
            Err(e) => return Attempt::Broken(pipeline::unreadable(conn, delay, e).await),
        }
    }

    match pipeline::finish(conn, commit, delay).await {
        Ok(()) => Attempt::Committed(decisions),
        Err(NotCommitted::Conflict(error)) => Attempt::Conflict(error),
        Err(NotCommitted::Lost(error)) => Attempt::Lost {
            error,
            effect: Effect::Unknown,
        },
    }
}

fn decode(e: tokio_postgres::Error) -> BackendError {
    BackendError::new(
        BackendErrorKind::Incompatible,
        "the append function returned an unexpected row; is the schema from another foldstore version?",
    )
    .with_source(e)
}

/// Turns `append`'s row into a decision, calling the core rules on refused appends.
fn decide(request: &Request, row: &Row) -> Result<Decision, BackendError> {
    let written: bool = row.try_get("written").map_err(decode)?;
    let n = request.events.len() as u64;
    if written {
        let first: i64 = row.try_get("first_revision").map_err(decode)?;
        let tx: Xid8 = row.try_get("tx").map_err(decode)?;
        let last_seq: i64 = row.try_get("last_seq").map_err(decode)?;
        return Ok(Decision::Done(AppendResult {
            next_expected_revision: to_u64(first, "revision")? + n - 1,
            position: position(tx, last_seq),
        }));
    }
    let last_revision: Option<i64> = row.try_get("last_revision").map_err(decode)?;
    let deleted_before: Option<i64> = row.try_get("deleted_before").map_err(decode)?;
    let tombstoned: Option<bool> = row.try_get("tombstoned").map_err(decode)?;
    let state = StreamState {
        last_revision: last_revision.map(|r| to_u64(r, "revision")).transpose()?,
        deleted_before: to_u64(deleted_before.unwrap_or(0), "revision")?,
        tombstoned: tombstoned.unwrap_or(false),
    };
    let streams: Vec<Option<String>> = row.try_get("stored_streams").map_err(decode)?;
    let revisions: Vec<Option<i64>> = row.try_get("stored_revisions").map_err(decode)?;
    let txs: Vec<Option<Xid8>> = row.try_get("stored_txs").map_err(decode)?;
    let seqs: Vec<Option<i64>> = row.try_get("stored_seqs").map_err(decode)?;
    let mut stored = Vec::with_capacity(streams.len());
    for (((stream, revision), tx), seq) in streams.into_iter().zip(revisions).zip(txs).zip(seqs) {
        stored.push(match (stream, revision, tx, seq) {
            (Some(stream), Some(revision), Some(tx), Some(seq)) => Some(StoredId {
                stream: crate::pg::stream_name(stream)?,
                revision: to_u64(revision, "revision")?,
                position: position(tx, seq),
            }),
            _ => None,
        });
    }
    let condition_tx: Option<Xid8> = row.try_get("condition_tx").map_err(decode)?;
    let condition_seq: Option<i64> = row.try_get("condition_seq").map_err(decode)?;
    match plan_append(
        &request.stream,
        request.expected,
        &state,
        &request.events,
        &stored,
    ) {
        Err(e) => Ok(Decision::Refused(e)),
        Ok(AppendPlan::AlreadyStored(result)) => Ok(Decision::Done(result)),
        // The expected revision held, and the condition found a match.
        Ok(AppendPlan::Write { .. }) => match (condition_tx, condition_seq) {
            (Some(tx), Some(seq)) => Ok(Decision::Refused(AppendError::ConditionFailed {
                position: position(tx, seq),
            })),
            _ => Ok(Decision::Race),
        },
    }
}
