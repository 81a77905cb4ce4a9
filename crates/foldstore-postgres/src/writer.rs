//! Group commit: concurrent appends share one transaction.
//!
//! A writer task takes the appends queued meanwhile (up to `max_batch`; when the queue
//! runs dry it first yields to the runtime a few times, so that the callers it has
//! just answered can queue their next appends), orders them by stream name (a stable
//! sort: one stream's appends keep their order; every process locks stream rows in the
//! same order, so batches of two processes cannot deadlock on them) and writes them in
//! two steps:
//!
//! 1. The fast path ([`crate::batch`]): every plain append (a transaction of one part,
//!    without a condition or tracking), in one transaction of a few `append_batch`
//!    calls. What it leaves unwritten (a stored id, an expectation that does not hold)
//!    goes on to step 2.
//! 2. The slow path, below: one `append_transaction` call per request, which returns
//!    the facts a refusal is decided on. Conditional appends, transactions of several
//!    streams and transactions with tracking always take it.
//!
//! The slow path sends, pipelined in one round trip:
//!
//! ```text
//! BEGIN; SELECT lock_keys(...); [SELECT lock_streams(...);]
//!        SELECT append_transaction(...); SELECT append_transaction(...); ...; COMMIT
//! ```
//!
//! `lock_keys` takes the transaction's advisory locks for conditions and tracking (see
//! [`crate::locks`]), all at once and sorted, before any stream row is locked. A batch
//! whose requests need more than [`MAX_LOCK_KEYS`] keys is split into several
//! transactions. When a request names several streams, `lock_streams` then locks every
//! stream row of the batch at once, in name order, so that the batch takes its row
//! locks in one order as every other batch does (requests of one stream each are
//! sorted by stream name, and lock their rows in that order without it).
//!
//! `append_transaction` never raises for a refused request: it writes nothing and
//! returns the facts that [`foldstore_core::rules::plan_transaction`] and
//! [`foldstore_core::rules::check_tracking`] decide on. So a statement fails only
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
use foldstore_core::rules::{
    StoredId, StreamState, TransactionPlan, check_tracking, plan_transaction,
};
use foldstore_core::transaction::{
    AppendTransaction, StreamAppend, StreamRevision, TransactionResult,
};
use foldstore_core::{
    AppendError, BackendError, BackendErrorKind, ExpectedRevision, NewEvent, Position, group_hash,
};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use crate::batch;
use crate::error::{Effect, backend, is_duplicate_id, is_transient_conflict};
use crate::locks::{LockSet, matches_everything};
use crate::pg::{Xid8, position, split, to_i64, to_u64};
use crate::pipeline::{self, NotCommitted, Sent, Step};
use crate::store::Shared;

/// A transaction waiting for a writer (a plain or conditional append is one of one
/// part), validated.
pub(crate) struct Request {
    pub(crate) transaction: AppendTransaction,
    pub(crate) reply: oneshot::Sender<Result<TransactionResult, AppendError>>,
    /// Times this request ran into a race and was run again.
    pub(crate) races: u32,
}

impl Request {
    /// The stream a batch sorts this request by: its first stream in name order (none
    /// for tracking alone).
    fn sort_key(&self) -> &str {
        self.transaction
            .parts
            .iter()
            .map(|p| p.stream.as_str())
            .min()
            .unwrap_or("")
    }

    /// The one part of a request that names a single stream.
    pub(crate) fn single(&self) -> Option<&StreamAppend> {
        match self.transaction.parts.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// How often an append may lose a race (its facts changed between the check and the
/// write) before it fails; each loss means another append to the same ids or stream
/// committed, so this is never reached in practice.
const MAX_RACES: u32 = 3;
/// How often a batch is run again after a deadlock or serialization failure.
const MAX_CONFLICTS: u32 = 5;

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
        let events = batch.iter().map(|r| r.transaction.event_count()).sum();
        commit_batch(&shared, batch).await;
        commit_log.committed(requests, events, started.elapsed());
    }
}

fn size(request: &Request) -> usize {
    request.transaction.events().map(NewEvent::size).sum()
}

/// What one request's statement said.
enum Decision {
    /// Written (or found already stored): the answer once the transaction commits.
    Done(TransactionResult),
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
    let tx = &request.transaction;
    for part in &tx.parts {
        set.writer(schema, &part.events);
    }
    if let Some(c) = &tx.condition {
        set.condition(schema, &c.fail_if_events_match);
    }
    if let Some(t) = &tx.tracking {
        set.tracking(schema, &t.source);
    }
}

async fn commit_batch(shared: &Shared, mut pending: Vec<Request>) {
    pending.sort_by(|a, b| a.sort_key().cmp(b.sort_key()));
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
        rest.sort_by(|a, b| a.sort_key().cmp(b.sort_key()));
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
                .filter_map(|r| r.last_position)
                .map(crate::pg::tx_of)
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
        let statements = async {
            Ok::<_, tokio_postgres::Error>(Statements {
                append: conn.prepare_cached(&shared.sql.append_transaction).await?,
                lock_keys: conn.prepare_cached(&shared.sql.lock_keys).await?,
                lock_streams: conn.prepare_cached(&shared.sql.lock_streams).await?,
            })
        };
        let statements = match statements.await {
            Ok(statements) => statements,
            Err(e) => return fail_all(pending, &backend(e, Effect::None)),
        };
        match attempt(shared, &conn, &statements, &pending).await {
            Attempt::Committed(decisions) => {
                // Record the acknowledged transactions before answering, so that a
                // caller's next read of `$all` waits for them.
                let acknowledged = decisions
                    .iter()
                    .filter_map(|d| match d {
                        Decision::Done(result) => result.last_position.map(crate::pg::tx_of),
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
                                    "the append kept racing with concurrent appends to the same streams or ids",
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
                shared.stats.slow_conflicts.fetch_add(1, Relaxed);
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

/// The slow path's prepared statements.
struct Statements {
    append: Statement,
    lock_keys: Statement,
    lock_streams: Statement,
}

/// The parameters of one `append_transaction` call.
struct Params<'a> {
    columns: batch::EventColumns<'a>,
    cond: bool,
    cond_all: bool,
    cond_after_tx: Xid8,
    cond_after_seq: i64,
    cond_types: Vec<Option<String>>,
    cond_tags: Vec<Option<String>>,
    tracking_source: Option<&'a str>,
    tracking_position: Option<String>,
}

impl<'a> Params<'a> {
    fn of(request: &'a Request) -> Self {
        let tx = &request.transaction;
        let mut p = Params {
            columns: batch::EventColumns::default(),
            cond: false,
            cond_all: false,
            cond_after_tx: Xid8(0),
            cond_after_seq: 0,
            cond_types: Vec::new(),
            cond_tags: Vec::new(),
            tracking_source: tx.tracking.as_ref().map(|t| t.source.as_str()),
            tracking_position: tx.tracking.as_ref().map(|t| t.position.to_string()),
        };
        for (index, part) in tx.parts.iter().enumerate() {
            let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
            p.columns.push(number, part);
        }
        if let Some(c) = &tx.condition {
            let q = &c.fail_if_events_match;
            p.cond = true;
            p.cond_all = matches_everything(q);
            (p.cond_after_tx, p.cond_after_seq) = c.after.map_or((Xid8(0), 0), |a| split(a, false));
            p.cond_types = q.items.iter().map(|i| joined(&i.types)).collect();
            p.cond_tags = q.items.iter().map(|i| joined(&i.tags)).collect();
        }
        p
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut refs = Vec::with_capacity(23);
        refs.extend(self.columns.refs());
        refs.extend([
            &self.cond as &(dyn ToSql + Sync),
            &self.cond_all,
            &self.cond_after_tx,
            &self.cond_after_seq,
            &self.cond_types,
            &self.cond_tags,
            &self.tracking_source,
            &self.tracking_position,
        ]);
        refs
    }
}

/// The stream rows a batch locks up front (`lock_streams`) when one of its requests
/// names several streams: every stream of the batch, with what creating its row needs.
/// `None` when every request names at most one stream.
fn streams_to_lock(pending: &[Request]) -> Option<(Vec<&str>, Vec<&str>, Vec<i64>)> {
    if pending.iter().all(|r| r.transaction.parts.len() <= 1) {
        return None;
    }
    let mut streams: Vec<&StreamAppend> = pending
        .iter()
        .flat_map(|r| r.transaction.parts.iter())
        .collect();
    streams.sort_by(|a, b| a.stream.cmp(&b.stream));
    streams.dedup_by(|a, b| a.stream == b.stream);
    Some((
        streams.iter().map(|p| p.stream.as_str()).collect(),
        streams.iter().map(|p| p.stream.category()).collect(),
        streams
            .iter()
            .map(|p| to_i64(group_hash(p.stream.id())))
            .collect(),
    ))
}

async fn attempt(
    shared: &Shared,
    conn: &deadpool_postgres::Object,
    statements: &Statements,
    pending: &[Request],
) -> Attempt {
    let params: Vec<Params<'_>> = pending.iter().map(Params::of).collect();
    let (keys, exclusive) = lock_keys(&shared.options.schema, pending);
    let rows = streams_to_lock(pending);
    let delay = shared.options.test_commit_delay;
    let mut steps: Vec<Step<'_, Option<Row>>> = Vec::with_capacity(params.len() + 2);
    // Every advisory lock of the transaction, sorted, before any stream row is locked.
    let (keys, exclusive) = (&keys, &exclusive);
    steps.push(Box::pin(async move {
        conn.execute(&statements.lock_keys, &[keys, exclusive])
            .await
            .map(|_| None)
    }));
    if let Some((names, categories, hashes)) = &rows {
        steps.push(Box::pin(async move {
            conn.execute(&statements.lock_streams, &[names, categories, hashes])
                .await
                .map(|_| None)
        }));
    }
    // `BEGIN`, then the lock statements.
    let before = 1 + steps.len();
    for p in &params {
        steps.push(Box::pin(async move {
            conn.query_one(&statements.append, &p.refs())
                .await
                .map(Some)
        }));
    }
    let (outputs, commit) = match pipeline::send(conn, steps, delay).await {
        Sent::Ran { outputs, commit } => (outputs, commit),
        Sent::Lost { error, effect } => return Attempt::Lost { error, effect },
        Sent::Failed { index, error } => {
            if index < before || is_transient_conflict(&error) {
                return Attempt::Conflict(error);
            }
            return Attempt::Failed {
                index: index - before,
                error,
            };
        }
    };

    let mut decisions = Vec::with_capacity(pending.len());
    for (request, row) in pending.iter().zip(outputs.into_iter().skip(before)) {
        let decision = match row {
            Some(row) => decide(request, &row),
            None => Err(BackendError::new(
                BackendErrorKind::Internal,
                "append_transaction returned no row",
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
        "the append_transaction function returned an unexpected row; is the schema from another foldstore version?",
    )
    .with_source(e)
}

/// Reads an array column that is NULL when it has no elements.
fn array<'r, T: tokio_postgres::types::FromSql<'r>>(
    row: &'r Row,
    column: &str,
) -> Result<Vec<T>, BackendError> {
    let values: Option<Vec<T>> = row.try_get(column).map_err(decode)?;
    Ok(values.unwrap_or_default())
}

/// Turns `append_transaction`'s row into a decision, calling the core rules on
/// refused requests.
fn decide(request: &Request, row: &Row) -> Result<Decision, BackendError> {
    let tx = &request.transaction;
    let written: bool = row.try_get("written").map_err(decode)?;
    if written {
        let xid: Xid8 = row.try_get("tx").map_err(decode)?;
        let firsts: Vec<Option<i64>> = array(row, "first_revisions")?;
        let first_seq: Option<i64> = row.try_get("first_seq").map_err(decode)?;
        let last_seq: Option<i64> = row.try_get("last_seq").map_err(decode)?;
        let mut streams = Vec::with_capacity(tx.parts.len());
        for (part, first) in tx.parts.iter().zip(firsts) {
            let first = first.ok_or_else(|| {
                BackendError::new(BackendErrorKind::Internal, "a written part has no revision")
            })?;
            streams.push(StreamRevision {
                stream: part.stream.clone(),
                next_expected_revision: to_u64(first, "revision")? + part.events.len() as u64 - 1,
            });
        }
        return Ok(Decision::Done(TransactionResult {
            streams,
            first_position: first_seq.map(|s| position(xid, s)),
            last_position: last_seq.map(|s| position(xid, s)),
        }));
    }
    let last_revisions: Vec<Option<i64>> = array(row, "last_revisions")?;
    let deleted_befores: Vec<Option<i64>> = array(row, "deleted_befores")?;
    let tombstones: Vec<Option<bool>> = array(row, "tombstones")?;
    let mut states = Vec::with_capacity(tx.parts.len());
    for i in 0..tx.parts.len() {
        states.push(StreamState {
            last_revision: last_revisions
                .get(i)
                .copied()
                .flatten()
                .map(|r| to_u64(r, "revision"))
                .transpose()?,
            deleted_before: to_u64(
                deleted_befores.get(i).copied().flatten().unwrap_or(0),
                "revision",
            )?,
            tombstoned: tombstones.get(i).copied().flatten().unwrap_or(false),
        });
    }
    let streams: Vec<Option<String>> = array(row, "stored_streams")?;
    let revisions: Vec<Option<i64>> = array(row, "stored_revisions")?;
    let txs: Vec<Option<Xid8>> = array(row, "stored_txs")?;
    let seqs: Vec<Option<i64>> = array(row, "stored_seqs")?;
    let mut flat = Vec::with_capacity(streams.len());
    for (((stream, revision), xid), seq) in streams.into_iter().zip(revisions).zip(txs).zip(seqs) {
        flat.push(match (stream, revision, xid, seq) {
            (Some(stream), Some(revision), Some(xid), Some(seq)) => Some(StoredId {
                stream: crate::pg::stream_name(stream)?,
                revision: to_u64(revision, "revision")?,
                position: position(xid, seq),
            }),
            _ => None,
        });
    }
    let mut flat = flat.into_iter();
    let stored: Vec<Vec<Option<StoredId>>> = tx
        .parts
        .iter()
        .map(|p| (&mut flat).take(p.events.len()).collect())
        .collect();
    match plan_transaction(&tx.parts, &states, &stored) {
        Err(e) => return Ok(Decision::Refused(e)),
        Ok(TransactionPlan::AlreadyStored(result)) => return Ok(Decision::Done(result)),
        Ok(TransactionPlan::Write { .. }) => {}
    }
    if let Some(t) = &tx.tracking {
        let tracked: Option<String> = row.try_get("tracked_position").map_err(decode)?;
        let tracked = tracked
            .map(|p| {
                p.parse::<Position>().map_err(|e| {
                    BackendError::new(
                        BackendErrorKind::Incompatible,
                        "a stored tracking position is not a whole number; the data was changed outside foldstore",
                    )
                    .with_source(e)
                })
            })
            .transpose()?;
        if let Err(e) = check_tracking(t, tracked) {
            return Ok(Decision::Refused(e));
        }
    }
    // The expected revisions and the tracking held; the condition found a match, or
    // the facts changed between the checks and this read.
    let condition_tx: Option<Xid8> = row.try_get("condition_tx").map_err(decode)?;
    let condition_seq: Option<i64> = row.try_get("condition_seq").map_err(decode)?;
    match (condition_tx, condition_seq) {
        (Some(xid), Some(seq)) => Ok(Decision::Refused(AppendError::ConditionFailed {
            position: position(xid, seq),
        })),
        _ => Ok(Decision::Race),
    }
}
