//! The write side: the only connection that writes, with group commit.
//!
//! ## Who commits
//!
//! The [`Writer`] (the write connection, its cache of stream state, the checkpointer
//! and the lock file) lives behind one mutex, in [`WriteSide`]. Whoever holds the mutex
//! is the only one writing; two threads take turns at it:
//!
//! - **The writer thread** ([`WriteSide::run`]) blocks for one request on the channel,
//!   drains whatever queued meanwhile (up to `max_batch_events` events), lingers a
//!   moment when several callers are active, then takes the mutex and commits the
//!   batch. This is the group commit that concurrent callers share.
//! - **A leader** ([`WriteSide::try_lead`]): a caller that finds nothing queued or being
//!   committed, and the last commit serving a single request, takes the mutex itself
//!   and commits its own write on its own thread (inside Tokio's `block_in_place`, so
//!   only on a multi-threaded runtime). A lone writer thus pays no hand-off: with the
//!   channel, each append costs two thread wake-ups (caller to writer, writer to
//!   caller), about a third of a one-row commit on a fast disk. Writes arriving while
//!   a leader commits find the mutex taken and go to the writer thread, which commits
//!   them as one group after the leader. `Shared::queued` counts the requests handed to
//!   the writer thread and not yet answered; a caller leads only when it is 0 (checked
//!   again under the mutex), so a write never overtakes one queued before it. (Two
//!   callers handing requests to the writer thread at the same moment are ordered by
//!   the channel, in whichever order their sends land: neither call has returned, so
//!   neither came first.)
//!
//! Everything else is the same for both: each commit runs [`Writer::commit_batch`], and
//! `Close` goes through the channel (the writer thread takes the `Writer` out of the
//! mutex to finish it, after which leaders find nothing to lead).
//!
//! ## A batch
//!
//! A batch is applied in one transaction, each request with its own checks against the
//! database and the writer's cache. Requests of one batch see each other's effects,
//! because they run in order on the same connection and cache. A refused request writes
//! nothing (every check runs before its first insert), so it never affects its
//! neighbours. Replies are sent only after `COMMIT` returned, that is after the WAL was
//! fsynced with `Durability::Full`.
//!
//! If anything fails at the SQL level (an insert, the commit), the transaction is rolled
//! back, every request of the batch gets the error and the cache is dropped, to be
//! reloaded from the database: nothing unacknowledged is ever believed written. After a
//! constraint or logic error, and after a full disk (`SQLITE_FULL`, answered
//! `StorageFull`), the writer goes on with the next batch: each new write tries again.
//! After a disk error that leaves the disk's contents in doubt (`SQLITE_IOERR*`, such
//! as a failed `fsync`, `SQLITE_CORRUPT`, `SQLITE_NOTADB`, `SQLITE_CANTOPEN`) it fails
//! stop: it refuses every later write and no longer checkpoints, until the store is
//! reopened (see [`crate::failstop`] for why, and why a full disk is safe to go on
//! from).

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use foldstore_core::commit_log::CommitLog;
use foldstore_core::dcb::AppendCondition;
use foldstore_core::rules::{
    StoredId, StreamState, TransactionPlan, check_delete, check_tracking, plan_transaction,
};
use foldstore_core::snapshot::{Snapshot, SnapshotError};
use foldstore_core::subscription::CommitNotifier;
use foldstore_core::transaction::{AppendTransaction, StreamRevision, TransactionResult};
use foldstore_core::{
    AppendError, BackendError, BackendErrorKind, DeleteError, ExpectedRevision, JSON,
    MetadataError, NewEvent, Position, StreamMetadata, StreamName, group_hash,
};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::OpenError;
use crate::error::{backend, disk_failure, disk_full, incompatible};
use crate::failstop::{self, FailStop};

/// A request to the writer.
pub(crate) enum Request {
    /// A transaction (a plain or conditional append is one of one part), validated.
    Append {
        transaction: AppendTransaction,
        reply: oneshot::Sender<Result<TransactionResult, AppendError>>,
    },
    SaveSnapshot {
        snapshot: Snapshot,
        reply: oneshot::Sender<Result<(), SnapshotError>>,
    },
    Delete {
        stream: StreamName,
        expected: ExpectedRevision,
        tombstone: bool,
        reply: oneshot::Sender<Result<(), DeleteError>>,
    },
    SetMetadata {
        stream: StreamName,
        metadata: StreamMetadata,
        reply: oneshot::Sender<Result<(), MetadataError>>,
    },
    /// Reports `PRAGMA synchronous` of the write connection (for tests and diagnostics).
    Synchronous {
        reply: oneshot::Sender<Result<i64, BackendError>>,
    },
    /// Finishes what is queued, checkpoints, closes the connection, releases the lock.
    Close {
        reply: oneshot::Sender<Result<(), OpenError>>,
    },
}

/// Where a batch failed: in its statements (nothing of it can be in the WAL as
/// committed) or at `COMMIT` (it may be).
#[derive(Debug, Clone, Copy)]
enum Stage {
    Statements,
    Commit,
}

/// What a request did, before the commit decides whether it stands.
enum Outcome {
    Append(Result<TransactionResult, AppendError>),
    Delete(Result<(), DeleteError>),
    Metadata(Result<(), MetadataError>),
    Snapshot,
}

impl Request {
    /// How much of the batch cap this request uses.
    fn weight(&self) -> usize {
        match self {
            Request::Append { transaction, .. } => transaction.event_count().max(1),
            _ => 1,
        }
    }

    fn answer(self, outcome: Result<Outcome, BackendError>) {
        // A caller that gave up (dropped its future) no longer listens: ignore send errors.
        match (self, outcome) {
            (Request::Append { reply, .. }, Ok(Outcome::Append(r))) => {
                let _ = reply.send(r);
            }
            (Request::Delete { reply, .. }, Ok(Outcome::Delete(r))) => {
                let _ = reply.send(r);
            }
            (Request::SetMetadata { reply, .. }, Ok(Outcome::Metadata(r))) => {
                let _ = reply.send(r);
            }
            (Request::SaveSnapshot { reply, .. }, Ok(Outcome::Snapshot)) => {
                let _ = reply.send(Ok(()));
            }
            (Request::SaveSnapshot { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(e.into()));
            }
            (Request::Append { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(e.into()));
            }
            (Request::Delete { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(e.into()));
            }
            (Request::SetMetadata { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(e.into()));
            }
            (Request::Synchronous { reply }, _) => {
                let _ = reply.send(Err(internal("a diagnostic request reached a batch")));
            }
            (Request::Close { reply }, _) => {
                let _ = reply.send(Ok(()));
            }
            (request, Ok(_)) => request.answer(Err(internal("a request got another's outcome"))),
        }
    }
}

fn internal(message: &str) -> BackendError {
    BackendError::new(BackendErrorKind::Internal, message)
}

/// The longest the writer waits for more requests before starting a batch.
const MAX_LINGER: Duration = Duration::from_millis(1);

/// While lingering, the writer starts the batch once no request came for this long.
const LINGER_QUIET: Duration = Duration::from_micros(80);

/// State shared by the writer and the store's handles.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Set by the writer when it stops taking requests.
    pub(crate) closed: AtomicBool,
    /// The position of the last committed event, 0 when there is none.
    pub(crate) head: AtomicI64,
    /// Woken after every commit.
    pub(crate) commits: CommitNotifier,
    /// Set by the writer after a disk failure; from then on writes are refused.
    pub(crate) failstop: FailStop,
    /// Requests handed to the writer thread and not yet answered.
    pub(crate) queued: AtomicUsize,
    /// Whether the last commit served a single request with nothing queued behind it:
    /// the next write may then commit on its caller's thread ([`WriteSide::try_lead`]).
    lone: AtomicBool,
    /// A fault the crate's tests make the next `COMMIT` hit.
    #[cfg(test)]
    fault: std::sync::Mutex<Option<crate::failstop::Fault>>,
    /// Writes committed by their caller's thread (tests only).
    #[cfg(test)]
    pub(crate) led: AtomicUsize,
    /// Requests that are in the writer thread's channel or past it (tests only):
    /// `queued` counts a request just before it is sent, so two concurrent senders
    /// may both be counted while the channel holds them in either order.
    #[cfg(test)]
    pub(crate) handed: AtomicUsize,
}

impl Shared {
    /// The state of a store whose last committed position is `head` (0: empty).
    pub(crate) fn new(head: i64) -> Self {
        Self {
            closed: AtomicBool::new(false),
            head: AtomicI64::new(head),
            commits: CommitNotifier::new(),
            failstop: FailStop::default(),
            queued: AtomicUsize::new(0),
            lone: AtomicBool::new(true),
            #[cfg(test)]
            fault: std::sync::Mutex::new(None),
            #[cfg(test)]
            led: AtomicUsize::new(0),
            #[cfg(test)]
            handed: AtomicUsize::new(0),
        }
    }

    /// Makes the next `COMMIT` of the writer fail with `fault` (tests only).
    #[cfg(test)]
    pub(crate) fn inject(&self, fault: crate::failstop::Fault) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(fault);
    }

    #[cfg(test)]
    fn take_fault(&self) -> Option<crate::failstop::Fault> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What the writer knows about one stream that has a row in `streams`.
#[derive(Debug, Clone, Copy)]
struct CachedStream {
    id: i64,
    category_id: i64,
    state: StreamState,
}

/// Streams and categories the writer has looked at. It may hold uncommitted changes of
/// the running batch; it is dropped whenever a batch fails. Correct only because this
/// process is the only writer of the file (the lock file guarantees it).
#[derive(Default)]
struct Cache {
    streams: HashMap<StreamName, CachedStream>,
    categories: HashMap<String, i64>,
    /// The position of the next event, `None` when it must be read from the database.
    next_position: Option<i64>,
    /// The greatest event id stored (as an unsigned 128-bit number), `Some(None)` for an
    /// empty store, `None` when it must be read from the database. An id above it cannot
    /// be stored, so its lookup is skipped: with time-ordered ids (UUIDv7, the default)
    /// that is every new event. Retries carry ids at or below it and are looked up. It
    /// is derived from the database and only grows, so it never hides a stored id.
    max_id: Option<Option<u128>>,
}

/// Past this many entries the cache is emptied (and refilled lazily) between batches.
const CACHE_LIMIT: usize = 200_000;

type SqlResult<T> = Result<T, BackendError>;

fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> BackendError {
    move |e| backend(what, e)
}

impl Cache {
    fn reset(&mut self) {
        self.streams.clear();
        self.categories.clear();
        self.next_position = None;
        self.max_id = None;
    }

    /// The greatest stored event id (see [`Cache::max_id`]).
    fn max_id(&mut self, conn: &Connection) -> SqlResult<Option<u128>> {
        if let Some(max) = self.max_id {
            return Ok(max);
        }
        // The index orders the halves as signed integers; the greatest unsigned value
        // is the greatest negative one if there is any, else the greatest one.
        let max_of = |query: &str, key: Option<i64>| -> SqlResult<Option<i64>> {
            conn.prepare_cached(query)
                .and_then(|mut s| match key {
                    Some(k) => s.query_row([k], |r| r.get(0)),
                    None => s.query_row([], |r| r.get(0)),
                })
                .map_err(sql("reading the greatest event id"))
        };
        let hi = match max_of("SELECT max(id_hi) FROM events WHERE id_hi < 0", None)? {
            Some(hi) => Some(hi),
            None => max_of("SELECT max(id_hi) FROM events", None)?,
        };
        let max = match hi {
            None => None,
            Some(hi) => {
                let lo = match max_of(
                    "SELECT max(id_lo) FROM events WHERE id_hi = ?1 AND id_lo < 0",
                    Some(hi),
                )? {
                    Some(lo) => lo,
                    None => max_of("SELECT max(id_lo) FROM events WHERE id_hi = ?1", Some(hi))?
                        .unwrap_or(0),
                };
                Some((u128::from(hi as u64) << 64) | u128::from(lo as u64))
            }
        };
        self.max_id = Some(max);
        Ok(max)
    }

    fn next_position(&mut self, conn: &Connection) -> SqlResult<i64> {
        if let Some(p) = self.next_position {
            return Ok(p);
        }
        let max: Option<i64> = conn
            .prepare_cached("SELECT max(position) FROM events")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(sql("reading the last position"))?;
        let next = max.unwrap_or(0) + 1;
        self.next_position = Some(next);
        Ok(next)
    }

    /// The stream's row and state, loading them on a miss. `None`: no row.
    fn stream(&mut self, conn: &Connection, name: &StreamName) -> SqlResult<Option<CachedStream>> {
        if let Some(c) = self.streams.get(name) {
            return Ok(Some(*c));
        }
        let row = conn
            .prepare_cached(
                "SELECT stream_id, category_id, deleted_before, tombstoned FROM streams WHERE name = ?1",
            )
            .and_then(|mut s| {
                s.query_row([name.as_str()], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, bool>(3)?,
                    ))
                })
                .optional()
            })
            .map_err(sql("loading a stream"))?;
        let Some((id, category_id, deleted_before, tombstoned)) = row else {
            return Ok(None);
        };
        let last: Option<i64> = conn
            .prepare_cached("SELECT max(revision) FROM events WHERE stream_id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)))
            .map_err(sql("loading a stream's revision"))?;
        let cached = CachedStream {
            id,
            category_id,
            state: StreamState {
                last_revision: last.map(to_u64).transpose()?,
                deleted_before: to_u64(deleted_before)?,
                tombstoned,
            },
        };
        self.streams.insert(name.clone(), cached);
        Ok(Some(cached))
    }

    fn category(&mut self, conn: &Connection, name: &str) -> SqlResult<i64> {
        if let Some(&id) = self.categories.get(name) {
            return Ok(id);
        }
        let found: Option<i64> = conn
            .prepare_cached("SELECT category_id FROM categories WHERE name = ?1")
            .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
            .map_err(sql("loading a category"))?;
        let id = match found {
            Some(id) => id,
            None => {
                conn.prepare_cached("INSERT INTO categories (name) VALUES (?1)")
                    .and_then(|mut s| s.execute([name]))
                    .map_err(sql("creating a category"))?;
                conn.last_insert_rowid()
            }
        };
        self.categories.insert(name.to_owned(), id);
        Ok(id)
    }

    /// The stream's row, created when missing.
    fn ensure_stream(&mut self, conn: &Connection, name: &StreamName) -> SqlResult<CachedStream> {
        if let Some(c) = self.stream(conn, name)? {
            return Ok(c);
        }
        let category_id = self.category(conn, name.category())?;
        let hash =
            i64::try_from(group_hash(name.id())).map_err(|_| internal("group hash overflow"))?;
        conn.prepare_cached(
            "INSERT INTO streams (name, category_id, group_hash) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| s.execute(params![name.as_str(), category_id, hash]))
        .map_err(sql("creating a stream"))?;
        let cached = CachedStream {
            id: conn.last_insert_rowid(),
            category_id,
            state: StreamState::default(),
        };
        self.streams.insert(name.clone(), cached);
        Ok(cached)
    }
}

fn to_u64(v: i64) -> SqlResult<u64> {
    u64::try_from(v).map_err(|_| incompatible(format!("negative revision {v} in the database")))
}

fn to_i64(v: u64) -> SqlResult<i64> {
    i64::try_from(v).map_err(|_| internal("a revision does not fit SQLite's 64-bit integers"))
}

/// A UUID as the two signed halves the schema stores.
pub(crate) fn split_id(id: Uuid) -> (i64, i64) {
    let (hi, lo) = id.as_u64_pair();
    (hi as i64, lo as i64)
}

/// The background checkpointer: the writer signals it after commits; it copies the WAL
/// into the database file off the commit path, at most every [`CHECKPOINT_EVERY`].
///
/// SQLite restarts the WAL from its beginning only when a write transaction starts while
/// the whole WAL is checkpointed, which under a steady write load a checkpoint running
/// beside the writer never achieves. So once the WAL is larger than [`RESTART_AT`], the
/// writer itself checkpoints between two batches: the background thread has already
/// copied nearly everything, so this is short, and the next batch restarts the WAL.
pub(crate) struct Checkpointer {
    signal: std_mpsc::SyncSender<()>,
    thread: JoinHandle<()>,
    /// Set by the writer after a commit, cleared by the checkpointer before it copies.
    dirty: Arc<AtomicBool>,
    /// WAL frames at the background thread's last checkpoint.
    wal_frames: Arc<AtomicI64>,
}

/// How often the background checkpointer runs at most while commits keep coming.
///
/// Each checkpoint ends with an fsync of the database file, and commits that land
/// meanwhile wait longer for their own WAL fsync. At 200 ms those checkpoints were the
/// tail of append latency: under `append-1 --concurrency 64`, p99 4.7-6.4 ms against
/// 2.8-3.8 ms at 500 ms, and `subscribe-latency --concurrency 64 --rate 15000` p99
/// 9.2-13.2 ms against 5.8-7.8 ms, at the same throughput (A/B in docs/benchmarks.md,
/// stop 10). At 1 s p99 fell further but the worst case doubled (56-66 ms): each
/// checkpoint then copies twice as much.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// WAL frames (pages) past which the writer checkpoints between batches so that the
/// WAL restarts (32 MiB with 4 KiB pages). Bounded on purpose: a WAL that restarts is
/// rewritten in place, and an `fdatasync` that need not also record a larger file size
/// is about twice as fast on ext4 as one that must. Not smaller: every restart holds
/// the appends queued behind the writer's checkpoint. At 8 MiB (2,048 frames) the WAL
/// restarted several times a second under `append-1 --concurrency 64`, and those
/// restarts were the tail of append latency (`subscribe-latency` p99 10.5-13.4 ms
/// against 7.7-11.0 ms at 32 MiB, the same throughput: A/B runs in
/// docs/benchmarks.md, stop 10). Larger still (64 and 128 MiB) lowered p99 a little
/// more but doubled p50 and the worst case.
const RESTART_AT: i64 = 8_192;

/// WAL frames that a background checkpoint may leave behind before it forces a
/// restart of the log (about 1 GiB with 4 KiB pages), so the WAL cannot grow forever
/// even when readers keep the writer's restarts from succeeding.
const WAL_HARD_LIMIT: i64 = 262_144;

impl Checkpointer {
    pub(crate) fn spawn(conn: Connection) -> std::io::Result<Self> {
        let (signal, rx) = std_mpsc::sync_channel::<()>(1);
        let wal_frames = Arc::new(AtomicI64::new(0));
        let dirty = Arc::new(AtomicBool::new(false));
        let (frames, flag) = (Arc::clone(&wal_frames), Arc::clone(&dirty));
        let thread = std::thread::Builder::new()
            .name("foldstore-checkpoint".into())
            .spawn(move || checkpoint_loop(&conn, &rx, &flag, &frames))?;
        Ok(Self {
            signal,
            thread,
            dirty,
            wal_frames,
        })
    }

    /// Tells the checkpointer there is something to copy. Only the first commit after a
    /// checkpoint wakes its thread.
    fn poke(&self) {
        if !self.dirty.swap(true, Ordering::AcqRel) {
            let _ = self.signal.try_send(());
        }
    }

    /// Whether the writer should checkpoint now so that the WAL restarts.
    fn wal_is_large(&self) -> bool {
        self.wal_frames.load(Ordering::Relaxed) > RESTART_AT
    }

    fn stop(self) {
        drop(self.signal);
        let _ = self.thread.join();
    }
}

fn checkpoint_loop(
    conn: &Connection,
    rx: &std_mpsc::Receiver<()>,
    dirty: &AtomicBool,
    wal_frames: &AtomicI64,
) {
    loop {
        // Sleep until a commit follows the last checkpoint...
        if rx.recv().is_err() {
            return;
        }
        // ...then let commits accumulate for a while; leave at once when the writer is
        // gone (it checkpoints the whole WAL itself when it closes).
        let until = Instant::now() + CHECKPOINT_EVERY;
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            match rx.recv_timeout(until - now) {
                Ok(()) | Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        // Commits from now on signal again.
        dirty.store(false, Ordering::Release);
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        if let Ok((log, _)) = result {
            wal_frames.store(log, Ordering::Relaxed);
        }
        match result {
            Ok((log, done)) if log - done > WAL_HARD_LIMIT => {
                if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(RESTART)") {
                    tracing::warn!(error = %e, "forced WAL checkpoint failed");
                }
            }
            Ok(_) => {}
            // A failed checkpoint, even on a disk error, needs no fail-stop: SQLite marks
            // WAL frames as copied only after the database file's sync succeeded, so the
            // next checkpoint copies them again from the WAL (fsynced at commit), and
            // the WAL is never restarted over frames whose copy was not synced.
            Err(e) => tracing::warn!(error = %e, "background WAL checkpoint failed"),
        }
    }
}

/// The write side of a store: the [`Writer`] behind the mutex that lets one thread
/// at a time write, shared by the writer thread and by leaders (see the module docs).
pub(crate) struct WriteSide {
    /// `None` once the writer thread has closed the connection.
    writer: Mutex<Option<Writer>>,
    shared: Arc<Shared>,
    max_batch_events: usize,
    path: PathBuf,
}

impl WriteSide {
    pub(crate) fn new(writer: Writer) -> Self {
        Self {
            shared: Arc::clone(&writer.shared),
            max_batch_events: writer.max_batch_events,
            path: writer.path.clone(),
            writer: Mutex::new(Some(writer)),
        }
    }

    /// The writer, `None` if a commit panicked while holding it (then nothing more is
    /// written: the writer thread stops, and callers are told so).
    fn lock(&self) -> Option<MutexGuard<'_, Option<Writer>>> {
        self.writer.lock().ok()
    }

    /// The lone-writer fast path: commits `request` on the calling thread when no
    /// request is queued or being committed and the last commit served a single
    /// request. Gives the request back (for the writer thread) when someone else is
    /// writing (or was, a moment ago), when the calling thread may not block (no
    /// multi-threaded Tokio runtime), or when the store is closing.
    pub(crate) fn try_lead(&self, request: Request) -> Option<Request> {
        let shared = &self.shared;
        if !shared.lone.load(Ordering::Acquire)
            || shared.queued.load(Ordering::Acquire) != 0
            || shared.closed.load(Ordering::Acquire)
            || !may_block_in_place()
        {
            return Some(request);
        }
        let Ok(mut guard) = self.writer.try_lock() else {
            return Some(request);
        };
        // Checked again while holding the writer: a request handed to the writer thread
        // before this one must be committed first.
        if shared.queued.load(Ordering::Acquire) != 0 {
            return Some(request);
        }
        let Some(writer) = guard.as_mut() else {
            return Some(request);
        };
        // One commit on this thread; Tokio moves the thread's other tasks elsewhere.
        tokio::task::block_in_place(|| {
            writer.commit_batch(vec![request]);
            writer.restart_wal_if_large();
        });
        shared.lone.store(
            shared.queued.load(Ordering::Acquire) == 0,
            Ordering::Release,
        );
        #[cfg(test)]
        shared.led.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// The writer thread: runs until a `Close` request or until every handle is gone.
    pub(crate) fn run(&self, rx: std_mpsc::Receiver<Request>) {
        let mut closers = Vec::new();
        let mut batch = Vec::new();
        let mut weight = 0;
        let mut last_batch_len = 0;
        let mut last_batch_time = Duration::ZERO;
        while closers.is_empty() {
            let Ok(first) = rx.recv() else {
                break;
            };
            self.take(first, &mut batch, &mut weight, &mut closers);
            // Everything that queued while the last batch was committing.
            while weight < self.max_batch_events && closers.is_empty() {
                match rx.try_recv() {
                    Ok(request) => self.take(request, &mut batch, &mut weight, &mut closers),
                    Err(_) => break,
                }
            }
            // With concurrent writers, the ones answered a moment ago are resubmitting
            // right now: wait for them while they keep coming (at most half a batch's
            // time), so that one commit serves them all instead of every other one.
            // A lone writer never waits.
            if closers.is_empty() && (batch.len() > 1 || last_batch_len > 1) {
                let deadline = Instant::now() + (last_batch_time / 2).min(MAX_LINGER);
                while weight < self.max_batch_events && closers.is_empty() {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match rx.recv_timeout(LINGER_QUIET.min(deadline - now)) {
                        Ok(request) => self.take(request, &mut batch, &mut weight, &mut closers),
                        Err(_) => break,
                    }
                }
            }
            if !batch.is_empty() {
                last_batch_len = batch.len();
                let started = Instant::now();
                if !self.commit(std::mem::take(&mut batch)) {
                    return;
                }
                last_batch_time = started.elapsed();
                weight = 0;
            }
        }
        // Refuse new requests, answer what was queued before, then stop.
        self.shared.closed.store(true, Ordering::Release);
        while let Ok(request) = rx.try_recv() {
            self.take(request, &mut batch, &mut weight, &mut closers);
            if weight >= self.max_batch_events {
                if !self.commit(std::mem::take(&mut batch)) {
                    return;
                }
                weight = 0;
            }
        }
        if !batch.is_empty() && !self.commit(batch) {
            return;
        }
        let writer = self.lock().and_then(|mut w| w.take());
        let mut result = writer.map(Writer::finish);
        for reply in closers {
            let r = result.take().unwrap_or_else(|| {
                Err(OpenError::Closed {
                    path: self.path.clone(),
                })
            });
            let _ = reply.send(r);
        }
    }

    /// Commits a batch the writer thread collected. `false` when the writer is gone
    /// (a commit panicked): the batch's callers are told the writer stopped.
    fn commit(&self, batch: Vec<Request>) -> bool {
        let n = batch.len();
        let Some(mut guard) = self.lock() else {
            return false;
        };
        let Some(writer) = guard.as_mut() else {
            return false;
        };
        writer.commit_batch(batch);
        writer.restart_wal_if_large();
        let left = self.shared.queued.fetch_sub(n, Ordering::AcqRel) - n;
        self.shared
            .lone
            .store(n == 1 && left == 0, Ordering::Release);
        true
    }

    /// Sorts one request into the batch, or answers it at once when it is no write.
    fn take(
        &self,
        request: Request,
        batch: &mut Vec<Request>,
        weight: &mut usize,
        closers: &mut Vec<oneshot::Sender<Result<(), OpenError>>>,
    ) {
        match request {
            Request::Close { reply } => closers.push(reply),
            Request::Synchronous { reply } => {
                let answer = match self.lock().as_deref() {
                    Some(Some(writer)) => writer.synchronous(),
                    _ => Err(crate::error::closed()),
                };
                let _ = reply.send(answer);
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            }
            request => {
                *weight += request.weight();
                batch.push(request);
            }
        }
    }
}

/// Whether the calling thread may block for one commit: only inside a multi-threaded
/// Tokio runtime, where `block_in_place` hands the thread's other tasks to another
/// thread. (A current-thread runtime has no other thread; outside Tokio, the caller
/// may be an executor that cannot be blocked.)
fn may_block_in_place() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// The writer: owns the write connection, the cache and the lock file.
pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) shared: Arc<Shared>,
    pub(crate) max_batch_events: usize,
    pub(crate) checkpointer: Option<Checkpointer>,
    /// Held (locked) until the writer ends.
    pub(crate) lock: File,
    pub(crate) path: PathBuf,
    cache: Cache,
    /// Group-commit statistics for the logs.
    commit_log: CommitLog,
    /// Since when writes have been refused for a full disk; `None` while they commit.
    /// Only the change is logged as an error, so a full disk does not flood the log.
    full_since: Option<chrono::DateTime<Utc>>,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        shared: Arc<Shared>,
        max_batch_events: usize,
        checkpointer: Option<Checkpointer>,
        lock: File,
        path: PathBuf,
    ) -> Self {
        Self {
            conn,
            shared,
            max_batch_events: max_batch_events.max(1),
            checkpointer,
            lock,
            path,
            cache: Cache::default(),
            commit_log: CommitLog::new("sqlite"),
            full_since: None,
        }
    }

    /// Checkpoints on the write connection, between batches, when the WAL is large, so
    /// that the next write transaction restarts the WAL (see [`Checkpointer`]).
    fn restart_wal_if_large(&self) {
        let Some(c) = &self.checkpointer else {
            return;
        };
        if !c.wal_is_large() {
            return;
        }
        match self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            }) {
            Ok((log, done)) if log == done => c.wal_frames.store(0, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint by the writer failed"),
        }
    }

    fn synchronous(&self) -> Result<i64, BackendError> {
        self.conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .map_err(sql("reading PRAGMA synchronous"))
    }

    /// Stops the checkpointer, checkpoints the whole WAL into the database file, closes
    /// the connection, then releases the lock. After a disk failure it does not
    /// checkpoint: the WAL stays for the next open to recover (see [`crate::failstop`]).
    fn finish(self) -> Result<(), OpenError> {
        let Writer {
            conn,
            shared,
            checkpointer,
            lock,
            path,
            ..
        } = self;
        if let Some(c) = checkpointer {
            c.stop();
        }
        let sqlite = |action, source| OpenError::Sqlite {
            action,
            path: path.clone(),
            source,
        };
        let checkpoint = if shared.failstop.is_tripped() {
            tracing::warn!(
                path = %path.display(),
                "closing without a checkpoint after a disk failure; the next open recovers from the WAL"
            );
            Ok(())
        } else {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(|e| sqlite("checkpointing on close", e))
        };
        let closed = conn
            .close()
            .map_err(|(_, e)| sqlite("closing the database", e));
        drop(lock);
        checkpoint.and(closed)
    }

    /// Applies one batch in one transaction, commits, then answers every request.
    fn commit_batch(&mut self, batch: Vec<Request>) {
        if let Some(refusal) = self.shared.failstop.refusal() {
            for request in batch {
                request.answer(Err(BackendError::new(
                    refusal.kind,
                    refusal.message.clone(),
                )));
            }
            return;
        }
        if self.cache.streams.len() > CACHE_LIMIT || self.cache.categories.len() > CACHE_LIMIT {
            self.cache.streams.clear();
            self.cache.categories.clear();
        }
        let before = self.cache.next_position;
        let mut outcomes = Vec::with_capacity(batch.len());
        let now_us = Utc::now().timestamp_micros();
        let mut changed = false;
        let started = Instant::now();
        let result = match self.apply(&batch, now_us, &mut outcomes, &mut changed) {
            Ok(()) => self.commit().map_err(|e| (e, Stage::Commit)),
            Err(e) => Err((e, Stage::Statements)),
        };
        match result {
            Ok(()) => {
                if let Some(next) = self.cache.next_position
                    && before != Some(next)
                {
                    self.shared.head.store(next - 1, Ordering::Release);
                }
                let events = batch.iter().map(Request::weight).sum();
                self.commit_log
                    .committed(batch.len(), events, started.elapsed());
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    request.answer(Ok(outcome));
                }
                if let Some(since) = self.full_since.take() {
                    tracing::info!(
                        path = %self.path.display(),
                        full_since = %since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        "the disk has room again: writes commit again"
                    );
                }
                if changed {
                    self.shared.commits.notify();
                    if let Some(c) = &self.checkpointer {
                        c.poke();
                    }
                }
            }
            Err((e, stage)) => self.fail_batch(batch, &e, stage),
        }
    }

    /// Rolls a failed batch back and answers its requests. After a disk failure the
    /// writer stops writing (see [`crate::failstop`]); after any other failure it goes
    /// on with the next batch.
    fn fail_batch(&mut self, batch: Vec<Request>, e: &BackendError, stage: Stage) {
        if !self.conn.is_autocommit()
            && let Err(rollback) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %rollback, "rollback after a failed batch failed");
        }
        self.cache.reset();
        if let Some(cause) = disk_full(e).map(ToString::to_string) {
            if self.full_since.is_none() {
                self.full_since = Some(Utc::now());
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    requests = batch.len(),
                    "the disk is full: writes are refused (nothing of them is written) until space is freed; reads go on, and writes commit again by themselves once there is room"
                );
            } else {
                tracing::debug!(error = %e, requests = batch.len(), "a write refused: the disk is still full");
            }
            let requests = batch.len();
            for request in batch {
                request.answer(Err(failstop::disk_full(&cause, requests)));
            }
            return;
        }
        match disk_failure(e).map(ToString::to_string) {
            Some(cause) => {
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    cause = %cause,
                    stage = ?stage,
                    requests = batch.len(),
                    "a disk error failed a write batch and left what is on the disk in doubt; the store stops accepting writes until it is reopened (fail-stop): check the disk, then restart"
                );
                self.stop_writing(cause.clone());
                let requests = batch.len();
                for request in batch {
                    let err = match stage {
                        Stage::Commit => failstop::outcome_unknown(&cause, requests),
                        Stage::Statements => failstop::not_written(&cause, requests),
                    };
                    request.answer(Err(err));
                }
            }
            None => {
                tracing::error!(error = %e, requests = batch.len(), "a write batch failed; none of it was written");
                let message = format!(
                    "{}; none of the {} requests committed together was written",
                    e.message,
                    batch.len()
                );
                for request in batch {
                    let err = BackendError::new(e.kind, message.clone());
                    request.answer(Err(err));
                }
            }
        }
    }

    /// Fail-stop: records the failure, stops checkpointing (the background checkpointer,
    /// the writer's own restarts and SQLite's checkpoint when the connection closes).
    fn stop_writing(&mut self, cause: String) {
        self.shared.failstop.trip(cause);
        if let Some(c) = self.checkpointer.take() {
            c.stop();
        }
        if let Err(e) = self
            .conn
            .set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        {
            tracing::warn!(error = %e, "could not turn off the checkpoint on close");
        }
    }

    /// Commits the batch's transaction. Tests can make it fail (see
    /// [`Shared::inject`]).
    fn commit(&self) -> SqlResult<()> {
        #[cfg(test)]
        if let Some(fault) = self.shared.take_fault() {
            if fault == failstop::Fault::DiskFull {
                return Err(backend("committing", failstop::full_error()));
            }
            if fault == failstop::Fault::FailAfterCommit {
                self.conn
                    .execute_batch("COMMIT")
                    .map_err(sql("committing"))?;
            }
            return Err(backend("committing", failstop::fsync_error()));
        }
        self.conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(|e| {
                let mut err = backend("committing", e);
                if err.kind != BackendErrorKind::StorageFull {
                    err.kind = BackendErrorKind::Storage;
                }
                err
            })
    }

    /// Runs the batch's statements in a new transaction, leaving it open for
    /// [`Writer::commit`].
    fn apply(
        &mut self,
        batch: &[Request],
        now_us: i64,
        outcomes: &mut Vec<Outcome>,
        changed: &mut bool,
    ) -> SqlResult<()> {
        let conn = &self.conn;
        let cache = &mut self.cache;
        cache.next_position(conn)?;
        conn.prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]))
            .map_err(sql("starting a write transaction"))?;
        for request in batch {
            let outcome = match request {
                Request::Append { transaction, .. } => {
                    let r = append(conn, cache, transaction, now_us)?;
                    *changed |= r.is_ok();
                    Outcome::Append(r)
                }
                Request::Delete {
                    stream,
                    expected,
                    tombstone,
                    ..
                } => {
                    let r = delete(conn, cache, stream, *expected, *tombstone)?;
                    *changed |= r.is_ok();
                    Outcome::Delete(r)
                }
                Request::SetMetadata {
                    stream, metadata, ..
                } => {
                    let r = set_metadata(conn, cache, stream, metadata)?;
                    *changed |= r.is_ok();
                    Outcome::Metadata(r)
                }
                Request::SaveSnapshot { snapshot, .. } => {
                    save_snapshot(conn, snapshot)?;
                    Outcome::Snapshot
                }
                Request::Synchronous { .. } | Request::Close { .. } => {
                    return Err(internal("a control request reached a batch"));
                }
            };
            outcomes.push(outcome);
        }
        Ok(())
    }
}

fn stream_name(conn: &Connection, stream_id: i64) -> SqlResult<StreamName> {
    let name: String = conn
        .prepare_cached("SELECT name FROM streams WHERE stream_id = ?1")
        .and_then(|mut s| s.query_row([stream_id], |r| r.get(0)))
        .map_err(sql("loading a stream name"))?;
    StreamName::new(name)
        .map_err(|e| incompatible(format!("invalid stream name in the database: {e}")))
}

/// One transaction (a plain or conditional append is one of one part), inside the
/// batch's transaction. The outer error fails the batch; the inner one refuses this
/// transaction only.
///
/// The checks run in the order `EventStore::append_transaction` documents: each part's
/// tombstone, idempotency and expected revision (`rules::plan_transaction`; a retry of a
/// stored transaction returns its first result and checks nothing else); the tracking;
/// then `condition`, on this transaction, which holds every earlier request of the
/// batch. All of them run before the first insert, so a refusal writes nothing.
fn append(
    conn: &Connection,
    cache: &mut Cache,
    tx: &AppendTransaction,
    now_us: i64,
) -> SqlResult<Result<TransactionResult, AppendError>> {
    let mut targets = Vec::with_capacity(tx.parts.len());
    let mut states = Vec::with_capacity(tx.parts.len());
    let mut stored = Vec::with_capacity(tx.parts.len());
    for part in &tx.parts {
        let cached = cache.stream(conn, &part.stream)?;
        states.push(cached.map(|c| c.state).unwrap_or_default());
        stored.push(stored_ids(conn, cache, &part.stream, cached, &part.events)?);
        targets.push(cached);
    }
    let first_revisions = match plan_transaction(&tx.parts, &states, &stored) {
        Err(e) => return Ok(Err(e)),
        Ok(TransactionPlan::AlreadyStored(result)) => return Ok(Ok(result)),
        Ok(TransactionPlan::Write { first_revisions }) => first_revisions,
    };
    if let Some(t) = &tx.tracking
        && let Err(e) = check_tracking(t, tracked(conn, &t.source)?)
    {
        return Ok(Err(e));
    }
    if let Some(c) = &tx.condition
        && let Some(position) = first_match(conn, c)?
    {
        return Ok(Err(AppendError::ConditionFailed { position }));
    }
    let first_position = cache.next_position(conn)?;
    let mut streams = Vec::with_capacity(tx.parts.len());
    for ((part, target), first_revision) in tx.parts.iter().zip(targets).zip(first_revisions) {
        let target = match target {
            Some(c) => c,
            None => cache.ensure_stream(conn, &part.stream)?,
        };
        let last_revision =
            insert_events(conn, cache, target, first_revision, &part.events, now_us)?;
        if let Some(c) = cache.streams.get_mut(&part.stream) {
            c.state.last_revision = Some(last_revision);
        }
        streams.push(StreamRevision {
            stream: part.stream.clone(),
            next_expected_revision: last_revision,
        });
    }
    if let Some(t) = &tx.tracking {
        conn.prepare_cached(
            "INSERT INTO tracking (source, position) VALUES (?1, ?2) \
             ON CONFLICT (source) DO UPDATE SET position = excluded.position",
        )
        .and_then(|mut s| s.execute(params![t.source, t.position.to_string()]))
        .map_err(sql("storing the tracking position"))?;
    }
    let next_position = cache.next_position(conn)?;
    let written = first_position..next_position;
    let position = |p: i64| to_u64(p).map(|p| Position::new(u128::from(p)));
    Ok(Ok(TransactionResult {
        streams,
        first_position: (!written.is_empty())
            .then(|| position(written.start))
            .transpose()?,
        last_position: written.clone().last().map(position).transpose()?,
    }))
}

/// The stored events with the ids of `events` (`None` for a new id), looked up in the
/// database itself (this transaction sees the batch's earlier requests), never in a
/// cache of recent writes; only ids above the greatest stored one are known to be new
/// without a lookup.
fn stored_ids(
    conn: &Connection,
    cache: &mut Cache,
    stream: &StreamName,
    cached: Option<CachedStream>,
    events: &[NewEvent],
) -> SqlResult<Vec<Option<StoredId>>> {
    let max_id = cache.max_id(conn)?;
    let mut stored = Vec::with_capacity(events.len());
    let mut find = conn
        .prepare_cached(
            "SELECT position, stream_id, revision FROM events WHERE id_hi = ?1 AND id_lo = ?2",
        )
        .map_err(sql("preparing the event-id lookup"))?;
    for e in events {
        if max_id.is_none_or(|max| e.id.as_u128() > max) {
            stored.push(None);
            continue;
        }
        let (hi, lo) = split_id(e.id);
        let row = find
            .query_row(params![hi, lo], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .optional()
            .map_err(sql("looking up an event id"))?;
        stored.push(match row {
            None => None,
            Some((position, stream_id, revision)) => Some(StoredId {
                stream: if cached.is_some_and(|c| c.id == stream_id) {
                    stream.clone()
                } else {
                    stream_name(conn, stream_id)?
                },
                revision: to_u64(revision)?,
                position: Position::new(u128::from(to_u64(position)?)),
            }),
        });
    }
    Ok(stored)
}

/// The position stored for tracking `source`, seen from the batch's transaction.
pub(crate) fn tracked(conn: &Connection, source: &str) -> SqlResult<Option<Position>> {
    let text: Option<String> = conn
        .prepare_cached("SELECT position FROM tracking WHERE source = ?1")
        .and_then(|mut s| s.query_row([source], |r| r.get(0)).optional())
        .map_err(sql("reading a tracking position"))?;
    text.map(|t| {
        t.parse::<Position>()
            .map_err(|e| incompatible(format!("a stored tracking position is not a number: {e}")))
    })
    .transpose()
}

/// Inserts one part's events into `target` from `first_revision` on, at the next
/// positions, with their tags; returns the last revision.
fn insert_events(
    conn: &Connection,
    cache: &mut Cache,
    target: CachedStream,
    first_revision: u64,
    events: &[NewEvent],
    now_us: i64,
) -> SqlResult<u64> {
    let max_id = cache.max_id(conn)?;
    let mut position = cache.next_position(conn)?;
    let mut revision = first_revision;
    // Several rows per statement: one step inserts a chunk, which saves most of the
    // per-statement overhead on large appends.
    for chunk in events.chunks(INSERT_CHUNK) {
        let mut insert = conn
            .prepare_cached(insert_sql(chunk.len()))
            .map_err(sql("preparing the event insert"))?;
        let mut index = 0;
        for e in chunk {
            let (hi, lo) = split_id(e.id);
            let content_type = (e.content_type != JSON).then_some(e.content_type.as_str());
            let tags = tags_json(&e.tags)?;
            let row: [&dyn rusqlite::ToSql; 12] = [
                &position,
                &target.id,
                &to_i64(revision)?,
                &target.category_id,
                &hi,
                &lo,
                &e.event_type,
                &content_type,
                &&e.data[..],
                &e.metadata.as_str(),
                &now_us,
                &tags,
            ];
            for value in row {
                index += 1;
                insert
                    .raw_bind_parameter(index, value)
                    .map_err(sql("binding an event"))?;
            }
            position += 1;
            revision += 1;
        }
        insert.raw_execute().map_err(sql("inserting events"))?;
    }
    // Most appends carry no tags: they skip the statement cache lookup.
    if events.iter().any(|e| !e.tags.is_empty()) {
        let mut tag = conn
            .prepare_cached("INSERT OR IGNORE INTO event_tags (tag, position) VALUES (?1, ?2)")
            .map_err(sql("preparing the tag insert"))?;
        let first_position = position - events.len() as i64;
        for (offset, e) in events.iter().enumerate() {
            for t in &e.tags {
                tag.execute(params![t, first_position + offset as i64])
                    .map_err(sql("inserting a tag"))?;
            }
        }
    }
    cache.next_position = Some(position);
    let appended_max = events.iter().map(|e| e.id.as_u128()).max();
    cache.max_id = Some(max_id.max(appended_max));
    Ok(revision - 1)
}

/// Rows per multi-row insert statement.
const INSERT_CHUNK: usize = 16;

/// The insert statement for `rows` rows (1..=[`INSERT_CHUNK`]).
fn insert_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (1..=INSERT_CHUNK)
            .map(|n| {
                let mut q = String::from(
                    "INSERT INTO events (position, stream_id, revision, category_id, id_hi, \
                     id_lo, event_type, content_type, data, metadata, recorded_at, tags) VALUES ",
                );
                for i in 0..n {
                    if i > 0 {
                        q.push_str(", ");
                    }
                    q.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
                }
                q
            })
            .collect()
    });
    &all[rows.clamp(1, INSERT_CHUNK) - 1]
}

/// An event's tags as stored in `events.tags`: a JSON array, NULL when there are none.
fn tags_json(tags: &[String]) -> SqlResult<Option<String>> {
    if tags.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(tags)
        .map(Some)
        .map_err(|e| internal(&format!("tags did not serialize: {e}")))
}

/// The first position after the condition's `after` of an event matching its query,
/// seen from the batch's transaction (so earlier appends of the batch count).
fn first_match(conn: &Connection, condition: &AppendCondition) -> SqlResult<Option<Position>> {
    let after = condition
        .after
        .map_or(0, |p| p.to_i64().unwrap_or(i64::MAX));
    let (q, values) = crate::query::first_match(&condition.fail_if_events_match, after);
    let found: Option<i64> = conn
        .prepare_cached(&q)
        .and_then(|mut s| s.query_row(rusqlite::params_from_iter(values), |r| r.get(0)))
        .map_err(sql("checking an append condition"))?;
    found
        .map(|p| Ok(Position::new(u128::from(to_u64(p)?))))
        .transpose()
}

/// Saves a snapshot, inside the batch's transaction. The row is replaced only when
/// `foldstore_core::snapshot::should_replace` says so: another schema version, or a
/// revision at or after the stored one.
fn save_snapshot(conn: &Connection, snapshot: &Snapshot) -> SqlResult<()> {
    let revision = to_i64(snapshot.revision)?;
    conn.prepare_cached(
        "INSERT INTO snapshots (stream, state_type, schema_version, revision, data, recorded_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (stream, state_type) DO UPDATE SET \
           schema_version = excluded.schema_version, revision = excluded.revision, \
           data = excluded.data, recorded_at = excluded.recorded_at \
         WHERE snapshots.schema_version <> excluded.schema_version \
            OR excluded.revision >= snapshots.revision",
    )
    .and_then(|mut s| {
        s.execute(params![
            snapshot.stream.as_str(),
            snapshot.state_type,
            i64::from(snapshot.schema_version),
            revision,
            &snapshot.data[..],
            snapshot.recorded_at.timestamp_micros(),
        ])
    })
    .map_err(sql("saving a snapshot"))?;
    Ok(())
}

/// A soft delete or a tombstone, inside the batch's transaction.
fn delete(
    conn: &Connection,
    cache: &mut Cache,
    stream: &StreamName,
    expected: ExpectedRevision,
    tombstone: bool,
) -> SqlResult<Result<(), DeleteError>> {
    let cached = cache.stream(conn, stream)?;
    let state = cached.map(|c| c.state).unwrap_or_default();
    if let Err(refused) = check_delete(stream, expected, &state) {
        return Ok(Err(refused));
    }
    if cached.is_none() && !tombstone {
        // Soft-deleting a stream that has no row changes nothing anyone can observe.
        return Ok(Ok(()));
    }
    let target = cache.ensure_stream(conn, stream)?;
    let mut state = target.state;
    if tombstone {
        state.tombstoned = true;
        conn.prepare_cached("UPDATE streams SET tombstoned = 1 WHERE stream_id = ?1")
            .and_then(|mut s| s.execute([target.id]))
            .map_err(sql("tombstoning a stream"))?;
    } else {
        state.deleted_before = state.next_revision();
        let deleted_before = to_i64(state.deleted_before)?;
        conn.prepare_cached("UPDATE streams SET deleted_before = ?2 WHERE stream_id = ?1")
            .and_then(|mut s| s.execute(params![target.id, deleted_before]))
            .map_err(sql("deleting a stream"))?;
    }
    if let Some(c) = cache.streams.get_mut(stream) {
        c.state = state;
    }
    Ok(Ok(()))
}

/// Replaces a stream's metadata, inside the batch's transaction.
fn set_metadata(
    conn: &Connection,
    cache: &mut Cache,
    stream: &StreamName,
    metadata: &StreamMetadata,
) -> SqlResult<Result<(), MetadataError>> {
    let cached = cache.stream(conn, stream)?;
    if cached.is_some_and(|c| c.state.tombstoned) {
        return Ok(Err(MetadataError::StreamTombstoned {
            stream: stream.clone(),
        }));
    }
    let json = serde_json::to_string(metadata)
        .map_err(|e| internal(&format!("stream metadata did not serialize: {e}")))?;
    let target = cache.ensure_stream(conn, stream)?;
    conn.prepare_cached("UPDATE streams SET metadata = ?2 WHERE stream_id = ?1")
        .and_then(|mut s| s.execute(params![target.id, json]))
        .map_err(sql("setting stream metadata"))?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    //! Group commit, deterministically: batches are built by hand and applied with
    //! `commit_batch`, so the requests are known to share one transaction.

    use foldstore_core::{AppendResult, CurrentRevision, EventStore};

    use super::*;
    use crate::SqliteOptions;

    struct Fixture {
        writer: Writer,
        _dir: tempfile::TempDir,
    }

    /// A fixture whose store holds one event, `A` at revision 0 of `a-1`.
    fn fixture_with_a_1() -> Fixture {
        let mut f = fixture();
        let answers = run_batch(
            &mut f.writer,
            vec![append_request(
                "a-1",
                ExpectedRevision::NoStream,
                vec![event("A")],
            )],
        );
        assert!(answers[0].is_ok());
        f
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = crate::schema::open_writer(&path, &SqliteOptions::default()).unwrap();
        let lock = File::create(dir.path().join("w.db.lock")).unwrap();
        let shared = Arc::new(Shared::new(0));
        Fixture {
            writer: Writer::new(conn, shared, 4096, None, lock, path),
            _dir: dir,
        }
    }

    type AppendReply = oneshot::Receiver<Result<TransactionResult, AppendError>>;

    fn transaction_request(transaction: AppendTransaction) -> (Request, AppendReply) {
        let (reply, rx) = oneshot::channel();
        (Request::Append { transaction, reply }, rx)
    }

    fn append_request(
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> (Request, AppendReply) {
        transaction_request(AppendTransaction::single(
            StreamName::new(stream).unwrap(),
            expected,
            events,
            None,
        ))
    }

    fn event(event_type: &str) -> NewEvent {
        NewEvent::raw(event_type, "{}", JSON)
    }

    /// Applies `requests` as one batch and returns the transaction answers in order.
    fn run_transactions(
        writer: &mut Writer,
        requests: Vec<(Request, AppendReply)>,
    ) -> Vec<Result<TransactionResult, AppendError>> {
        let (batch, replies): (Vec<_>, Vec<_>) = requests.into_iter().unzip();
        writer.commit_batch(batch);
        replies
            .into_iter()
            .map(|mut rx| rx.try_recv().expect("every request is answered"))
            .collect()
    }

    /// Applies `requests` (one-part transactions) as one batch and returns the append
    /// answers in order.
    fn run_batch(
        writer: &mut Writer,
        requests: Vec<(Request, AppendReply)>,
    ) -> Vec<Result<AppendResult, AppendError>> {
        run_transactions(writer, requests)
            .into_iter()
            .map(|r| r.map(|t| t.append_result().expect("one part with events")))
            .collect()
    }

    fn count_events(writer: &Writer) -> i64 {
        writer
            .conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn two_exact_appends_to_one_stream_in_one_batch_first_wins() {
        let mut f = fixture();
        let answers = run_batch(
            &mut f.writer,
            vec![
                append_request("a-1", ExpectedRevision::NoStream, vec![event("A")]),
                append_request("a-1", ExpectedRevision::Exact(0), vec![event("B")]),
                append_request("a-1", ExpectedRevision::Exact(0), vec![event("C")]),
            ],
        );
        assert_eq!(answers[0].as_ref().unwrap().next_expected_revision, 0);
        assert_eq!(answers[1].as_ref().unwrap().next_expected_revision, 1);
        match &answers[2] {
            Err(AppendError::WrongExpectedRevision { actual, .. }) => {
                assert_eq!(*actual, CurrentRevision::Current(1));
            }
            other => panic!("expected WrongExpectedRevision, got {other:?}"),
        }
        assert_eq!(count_events(&f.writer), 2);
        assert_eq!(f.writer.shared.head.load(Ordering::Acquire), 2);
    }

    #[test]
    fn duplicate_ids_across_appends_of_one_batch() {
        let mut f = fixture();
        let first = vec![event("A"), event("B")];
        let retry = first.clone();
        let overlap = vec![first[1].clone(), event("C")];
        let elsewhere = vec![first[0].clone(), first[1].clone()];
        let answers = run_batch(
            &mut f.writer,
            vec![
                append_request("a-1", ExpectedRevision::Any, first),
                // The same append again, in the same batch: an idempotent retry.
                append_request("a-1", ExpectedRevision::Any, retry),
                // Partly the same ids: refused.
                append_request("a-1", ExpectedRevision::Any, overlap),
                // The same ids in another stream: refused.
                append_request("b-1", ExpectedRevision::Any, elsewhere),
                append_request("b-1", ExpectedRevision::Any, vec![event("D")]),
            ],
        );
        let first = answers[0].as_ref().unwrap();
        assert_eq!(answers[1].as_ref().unwrap(), first);
        assert!(matches!(
            answers[2],
            Err(AppendError::DuplicateEventId { .. })
        ));
        assert!(matches!(
            answers[3],
            Err(AppendError::DuplicateEventId { .. })
        ));
        assert_eq!(answers[4].as_ref().unwrap().next_expected_revision, 0);
        assert_eq!(count_events(&f.writer), 3);
    }

    #[test]
    fn one_refused_append_does_not_fail_its_neighbours() {
        let mut f = fixture();
        let mut requests = Vec::new();
        for i in 0..50 {
            let expected = if i == 25 {
                ExpectedRevision::Exact(7) // the stream does not exist: refused
            } else {
                ExpectedRevision::NoStream
            };
            requests.push(append_request(
                &format!("s-{i}"),
                expected,
                vec![event("A"), event("B")],
            ));
        }
        let answers = run_batch(&mut f.writer, requests);
        for (i, a) in answers.iter().enumerate() {
            assert_eq!(a.is_ok(), i != 25, "append {i}: {a:?}");
        }
        assert_eq!(count_events(&f.writer), 98);
    }

    #[test]
    fn a_failed_batch_fails_every_request_and_rolls_the_cache_back() {
        let mut f = fixture_with_a_1();
        // Inject a failure: any insert of type Boom aborts.
        f.writer
            .conn
            .execute_batch(
                "CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.event_type = 'Boom'
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
            )
            .unwrap();
        let answers = run_batch(
            &mut f.writer,
            vec![
                append_request("a-1", ExpectedRevision::Exact(0), vec![event("B")]),
                append_request("new-1", ExpectedRevision::NoStream, vec![event("C")]),
                append_request("b-1", ExpectedRevision::Any, vec![event("Boom")]),
            ],
        );
        for a in &answers {
            assert!(matches!(a, Err(AppendError::Backend(_))), "{a:?}");
        }
        // A constraint-style failure is no disk failure: the writer goes on.
        assert!(!f.writer.shared.failstop.is_tripped());
        assert_eq!(count_events(&f.writer), 1);
        assert_eq!(f.writer.shared.head.load(Ordering::Acquire), 1);
        // The cache forgot the failed batch: the streams are where the database says.
        let answers = run_batch(
            &mut f.writer,
            vec![
                append_request("a-1", ExpectedRevision::Exact(0), vec![event("B")]),
                append_request("new-1", ExpectedRevision::NoStream, vec![event("C")]),
            ],
        );
        let a = answers[0].as_ref().unwrap();
        assert_eq!(a.next_expected_revision, 1);
        assert_eq!(a.position, Position::new(2));
        let b = answers[1].as_ref().unwrap();
        assert_eq!(b.next_expected_revision, 0);
        assert_eq!(b.position, Position::new(3));
        assert_eq!(f.writer.shared.head.load(Ordering::Acquire), 3);
    }

    /// After a disk error at `COMMIT`, every request of the batch is of unknown
    /// outcome, nothing of it is believed written, and every later write is refused
    /// without touching the database.
    #[test]
    fn a_disk_error_at_commit_stops_the_writer() {
        let mut f = fixture_with_a_1();
        f.writer.shared.inject(failstop::Fault::FailCommit);
        let answers = run_batch(
            &mut f.writer,
            vec![
                append_request("a-1", ExpectedRevision::Exact(0), vec![event("B")]),
                append_request("new-1", ExpectedRevision::NoStream, vec![event("C")]),
            ],
        );
        for a in &answers {
            match a {
                Err(AppendError::Backend(e)) => {
                    assert_eq!(e.kind, BackendErrorKind::OutcomeUnknown, "{e}");
                    assert!(e.message.contains("the 1 writes committed with it"), "{e}");
                }
                other => panic!("expected an unknown outcome, got {other:?}"),
            }
        }
        assert!(f.writer.shared.failstop.is_tripped());
        assert!(
            f.writer.conn.is_autocommit(),
            "the failed batch was rolled back"
        );
        assert_eq!(count_events(&f.writer), 1);
        assert_eq!(f.writer.shared.head.load(Ordering::Acquire), 1);
        let (delete, mut deleted) = {
            let (reply, rx) = oneshot::channel();
            let request = Request::Delete {
                stream: StreamName::new("a-1").unwrap(),
                expected: ExpectedRevision::Any,
                tombstone: true,
                reply,
            };
            (request, rx)
        };
        let (append, mut appended) =
            append_request("a-1", ExpectedRevision::Exact(0), vec![event("B")]);
        f.writer.commit_batch(vec![append, delete]);
        match appended.try_recv().unwrap() {
            Err(AppendError::Backend(e)) => assert_eq!(e.kind, BackendErrorKind::Storage),
            other => panic!("expected a refusal, got {other:?}"),
        }
        match deleted.try_recv().unwrap() {
            Err(DeleteError::Backend(e)) => assert_eq!(e.kind, BackendErrorKind::Storage),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(count_events(&f.writer), 1);
    }

    /// The events logged while `f` runs on this thread: level and `name=value` fields.
    fn logged<T>(f: impl FnOnce() -> T) -> (T, Vec<(tracing::Level, String)>) {
        use std::sync::Mutex;
        use tracing::span::{Attributes, Id, Record};

        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        impl tracing::Subscriber for Capture {
            fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &Attributes<'_>) -> Id {
                Id::from_u64(1)
            }
            fn record(&self, _: &Id, _: &Record<'_>) {}
            fn record_follows_from(&self, _: &Id, _: &Id) {}
            fn event(&self, event: &tracing::Event<'_>) {
                let mut fields = Fields(String::new());
                event.record(&mut fields);
                self.0
                    .lock()
                    .unwrap()
                    .push((*event.metadata().level(), fields.0));
            }
            fn enter(&self, _: &Id) {}
            fn exit(&self, _: &Id) {}
        }
        let capture = Capture::default();
        let out = tracing::subscriber::with_default(capture.clone(), f);
        let events = capture.0.lock().unwrap().clone();
        (out, events)
    }

    /// A failed `fsync` stays fail-stop, and the log says so as an error, with the
    /// cause (SQLite's message and code) and the stage it struck, so that the operator
    /// the refusals send to the log finds it there.
    #[test]
    fn a_failed_fsync_is_fail_stop_and_logged_as_an_error_with_its_cause() {
        let mut f = fixture_with_a_1();
        f.writer.shared.inject(failstop::Fault::FailCommit);
        let (answers, log) = logged(|| {
            run_batch(
                &mut f.writer,
                vec![append_request(
                    "a-1",
                    ExpectedRevision::Exact(0),
                    vec![event("B")],
                )],
            )
        });
        assert!(
            matches!(&answers[0], Err(AppendError::Backend(e)) if e.kind == BackendErrorKind::OutcomeUnknown)
        );
        assert!(f.writer.shared.failstop.is_tripped());
        let errors: Vec<_> = log
            .iter()
            .filter(|(level, _)| *level == tracing::Level::ERROR)
            .collect();
        assert_eq!(errors.len(), 1, "{log:?}");
        let line = &errors[0].1;
        assert!(
            line.contains("fail-stop")
                && line.contains("disk I/O error")
                && line.contains("stage=Commit"),
            "{line}"
        );
    }

    /// A full disk refuses the batch without stopping the writer: the next batch
    /// commits at the position the refused one would have had. The log shows the disk
    /// filling up once as an error (not once per refused write) and its end once.
    #[test]
    fn a_full_disk_refuses_the_batch_logs_the_change_once_and_the_next_batch_commits() {
        let mut f = fixture_with_a_1();
        let (_, log) = logged(|| {
            for _ in 0..3 {
                f.writer.shared.inject(failstop::Fault::DiskFull);
                let answers = run_batch(
                    &mut f.writer,
                    vec![
                        append_request("a-1", ExpectedRevision::Exact(0), vec![event("B")]),
                        append_request("new-1", ExpectedRevision::NoStream, vec![event("C")]),
                    ],
                );
                for a in &answers {
                    match a {
                        Err(AppendError::Backend(e)) => {
                            assert_eq!(e.kind, BackendErrorKind::StorageFull, "{e}");
                        }
                        other => panic!("expected a full disk, got {other:?}"),
                    }
                }
                assert!(!f.writer.shared.failstop.is_tripped());
                assert!(f.writer.conn.is_autocommit(), "the batch was rolled back");
                assert_eq!(count_events(&f.writer), 1);
                assert_eq!(f.writer.shared.head.load(Ordering::Acquire), 1);
            }
            let answers = run_batch(
                &mut f.writer,
                vec![
                    append_request("a-1", ExpectedRevision::Exact(0), vec![event("B")]),
                    append_request("new-1", ExpectedRevision::NoStream, vec![event("C")]),
                ],
            );
            assert_eq!(answers[0].as_ref().unwrap().position, Position::new(2));
            assert_eq!(answers[1].as_ref().unwrap().position, Position::new(3));
        });
        let at = |level| log.iter().filter(|(l, _)| *l == level).collect::<Vec<_>>();
        let errors = at(tracing::Level::ERROR);
        assert_eq!(errors.len(), 1, "{log:?}");
        assert!(
            errors[0].1.contains("the disk is full")
                && errors[0].1.contains("database or disk is full"),
            "{errors:?}"
        );
        let resumed = at(tracing::Level::INFO);
        assert_eq!(resumed.len(), 1, "{log:?}");
        assert!(resumed[0].1.contains("writes commit again"), "{resumed:?}");
    }

    #[test]
    fn the_greatest_stored_id_is_read_back_as_unsigned_and_retries_are_still_found() {
        let mut f = fixture();
        let big = Uuid::from_u128(u128::MAX - 5); // both halves negative as i64
        let same_hi_small_lo = Uuid::from_u128((u128::MAX << 64) | 7);
        let small = Uuid::from_u128(42);
        let answers = run_batch(
            &mut f.writer,
            vec![
                append_request("a-1", ExpectedRevision::Any, vec![event("A").with_id(big)]),
                append_request(
                    "a-1",
                    ExpectedRevision::Any,
                    vec![event("B").with_id(same_hi_small_lo)],
                ),
                // Below the greatest id: looked up, new, written.
                append_request(
                    "a-1",
                    ExpectedRevision::Any,
                    vec![event("C").with_id(small)],
                ),
            ],
        );
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        f.writer.cache.reset();
        assert_eq!(
            f.writer.cache.max_id(&f.writer.conn).unwrap(),
            Some(big.as_u128())
        );
        // Retries below the greatest id are recognised after the reload.
        let answers = run_batch(
            &mut f.writer,
            vec![
                append_request(
                    "a-1",
                    ExpectedRevision::Any,
                    vec![event("C").with_id(small)],
                ),
                append_request("b-1", ExpectedRevision::Any, vec![event("C").with_id(big)]),
            ],
        );
        assert_eq!(answers[0].as_ref().unwrap().next_expected_revision, 2);
        assert!(matches!(
            answers[1],
            Err(AppendError::DuplicateEventId { .. })
        ));
        assert_eq!(count_events(&f.writer), 3);
    }

    /// Transactions in one batch: each is checked against the batch's earlier requests
    /// (a transfer sees the revision the one before it wrote; a tracking position sees
    /// the one stored just before); a refused transaction, whether by its second part,
    /// its tracking or its condition, writes nothing and fails alone.
    #[test]
    fn transactions_in_one_batch_see_earlier_ones_and_fail_alone() {
        use foldstore_core::dcb::{Query, QueryItem};

        let mut f = fixture_with_a_1();
        let name = |s: &str| StreamName::new(s).unwrap();
        let transfer = |a: u64, b: ExpectedRevision| {
            AppendTransaction::new()
                .stream(name("a-1"), ExpectedRevision::Exact(a), vec![event("Out")])
                .stream(name("b-1"), b, vec![event("In").with_tags(["t:1"])])
        };
        let answers = run_transactions(
            &mut f.writer,
            vec![
                transaction_request(
                    transfer(0, ExpectedRevision::NoStream).tracking("s", Position::new(1)),
                ),
                // Stale: a-1 is at 1 now. Refused by its first part.
                transaction_request(transfer(0, ExpectedRevision::Exact(0))),
                // Refused by its second part: b-1 is at 0, not 5; a-1 is not written.
                transaction_request(transfer(1, ExpectedRevision::Exact(5))),
                // Refused by its tracking: position 1 of `s` was stored just before.
                transaction_request(
                    transfer(1, ExpectedRevision::Exact(0)).tracking("s", Position::new(1)),
                ),
                // Refused by its condition: the first transfer's tagged event.
                transaction_request(transfer(1, ExpectedRevision::Exact(0)).condition(
                    AppendCondition::new(Query::from_items([QueryItem::new().tags(["t:1"])]), None),
                )),
                transaction_request(
                    transfer(1, ExpectedRevision::Exact(0)).tracking("s", Position::new(2)),
                ),
            ],
        );
        let first = answers[0].as_ref().unwrap();
        assert_eq!(first.first_position, Some(Position::new(2)));
        assert_eq!(first.last_position, Some(Position::new(3)));
        assert!(
            matches!(&answers[1], Err(AppendError::WrongExpectedRevision { stream, .. }) if stream.as_str() == "a-1")
        );
        assert!(
            matches!(&answers[2], Err(AppendError::WrongExpectedRevision { stream, .. }) if stream.as_str() == "b-1")
        );
        assert!(
            matches!(&answers[3], Err(AppendError::AlreadyProcessed { stored, .. }) if *stored == Position::new(1))
        );
        assert!(
            matches!(&answers[4], Err(AppendError::ConditionFailed { position }) if *position == Position::new(3))
        );
        let last = answers[5].as_ref().unwrap();
        assert_eq!(
            last.streams
                .iter()
                .map(|s| s.next_expected_revision)
                .collect::<Vec<_>>(),
            [2, 1]
        );
        assert_eq!(last.first_position, Some(Position::new(4)));
        assert_eq!(count_events(&f.writer), 5, "the refused ones wrote nothing");
        assert_eq!(
            tracked(&f.writer.conn, "s").unwrap(),
            Some(Position::new(2))
        );
        // The cache agrees with the database after the batch: the next transfer sees
        // the revisions of the last one.
        let next = run_transactions(
            &mut f.writer,
            vec![transaction_request(transfer(2, ExpectedRevision::Exact(1)))],
        );
        assert!(next[0].is_ok(), "{next:?}");
    }

    /// While a batch's transaction is open, readers and `head_position` must not see
    /// its events; after `COMMIT` they must.
    #[test]
    fn an_open_batch_is_invisible_to_readers_and_to_the_head() {
        let mut f = fixture();
        let reader = crate::schema::open_reader(&f.writer.path).unwrap();
        let count = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
                .unwrap()
        };
        let w = &mut f.writer;
        w.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let stream = StreamName::new("a-1").unwrap();
        let tx =
            AppendTransaction::single(stream, ExpectedRevision::NoStream, vec![event("A")], None);
        let written = append(&w.conn, &mut w.cache, &tx, 0).unwrap().unwrap();
        assert_eq!(written.last_position, Some(Position::new(1)));
        assert_eq!(count(&reader), 0, "a reader saw an uncommitted event");
        assert_eq!(w.shared.head.load(Ordering::Acquire), 0);
        w.conn.execute_batch("COMMIT").unwrap();
        assert_eq!(count(&reader), 1);
    }

    /// Conditional appends in one batch: each condition is checked in the batch's
    /// transaction in arrival order, so a claim sees the claim before it in the same
    /// batch; a failing condition refuses only its own append.
    #[test]
    fn conditional_appends_in_one_batch_see_earlier_ones_and_fail_alone() {
        use foldstore_core::dcb::{Query, QueryItem};

        let mut f = fixture();
        let claim = Query::from_items([QueryItem::new().tags(["seat:1"])]);
        let conditional = |stream: &str, tag: &str, query: &Query| {
            transaction_request(AppendTransaction::single(
                StreamName::new(stream).unwrap(),
                ExpectedRevision::Any,
                vec![event("Claimed").with_tags([tag])],
                Some(AppendCondition::new(query.clone(), None)),
            ))
        };
        let answers = run_batch(
            &mut f.writer,
            vec![
                append_request("n-1", ExpectedRevision::Any, vec![event("Noted")]),
                conditional("a-1", "seat:1", &claim),
                conditional("b-1", "seat:1", &claim),
                append_request("n-1", ExpectedRevision::Exact(0), vec![event("Noted")]),
                conditional(
                    "c-1",
                    "seat:2",
                    &Query::from_items([QueryItem::new().tags(["seat:2"])]),
                ),
            ],
        );
        let first = answers[1].as_ref().unwrap();
        assert_eq!(first.position, Position::new(2));
        match &answers[2] {
            Err(AppendError::ConditionFailed { position }) => assert_eq!(*position, first.position),
            other => panic!("expected ConditionFailed, got {other:?}"),
        }
        assert!(
            answers[0].is_ok() && answers[3].is_ok() && answers[4].is_ok(),
            "{answers:?}"
        );
        assert_eq!(count_events(&f.writer), 4);
        let tags: i64 = f
            .writer
            .conn
            .query_row("SELECT count(*) FROM event_tags", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tags, 2, "the refused claim left no tag row");
    }

    /// The lone-writer fast path: on a multi-threaded runtime, a caller that finds the
    /// writer idle commits its own append; on a current-thread runtime it never does.
    #[test]
    fn a_lone_writer_commits_on_its_own_thread_only_on_a_multi_threaded_runtime() {
        for (runtime, leads) in [
            (
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .build()
                    .unwrap(),
                true,
            ),
            (
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap(),
                false,
            ),
        ] {
            runtime.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let store =
                    crate::SqliteStore::open(dir.path().join("l.db"), SqliteOptions::default())
                        .await
                        .unwrap();
                let stream = StreamName::new("a-1").unwrap();
                // From a task (a worker thread) and from `block_on` (not one).
                let s = store.clone();
                let from_task = tokio::spawn(async move {
                    for n in 0..10u64 {
                        let expected = n
                            .checked_sub(1)
                            .map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
                        let r = s
                            .append(&StreamName::new("a-1").unwrap(), expected, vec![event("A")])
                            .await
                            .unwrap();
                        assert_eq!(r.next_expected_revision, n);
                    }
                });
                from_task.await.unwrap();
                let r = store
                    .append(&stream, ExpectedRevision::Exact(9), vec![event("B")])
                    .await
                    .unwrap();
                assert_eq!(r.position, Position::new(11));
                let led = store.inner.shared.led.load(Ordering::Relaxed);
                assert_eq!(led, if leads { 11 } else { 0 });
                assert_eq!(
                    store.head_position().await.unwrap(),
                    Some(Position::new(11))
                );
                store.close().await.unwrap();
            });
        }
    }

    /// A write handed to the writer thread is committed before a later one, even when
    /// the later one arrives as the writer becomes free (it must not lead past it).
    #[test]
    fn a_caller_never_leads_past_a_write_queued_before_it() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = crate::SqliteStore::open(dir.path().join("o.db"), SqliteOptions::default())
                .await
                .unwrap();
            for round in 0..20 {
                // Hold the writer so that the first append must be handed off.
                let guard = store.inner.write.writer.lock().unwrap();
                let handed = store.inner.shared.handed.load(Ordering::Acquire);
                let s = store.clone();
                let first = tokio::spawn(async move {
                    s.append(
                        &StreamName::new("a-1").unwrap(),
                        ExpectedRevision::Any,
                        vec![event("First")],
                    )
                    .await
                    .unwrap()
                });
                // Wait until the first append is in the writer thread's channel (not
                // merely counted in `queued`, which happens just before the send).
                while store.inner.shared.handed.load(Ordering::Acquire) == handed {
                    std::thread::yield_now();
                }
                drop(guard);
                let second = store
                    .append(
                        &StreamName::new("b-1").unwrap(),
                        ExpectedRevision::Any,
                        vec![event("Second")],
                    )
                    .await
                    .unwrap();
                let first = first.await.unwrap();
                assert!(
                    first.position < second.position,
                    "round {round}: {first:?} {second:?}"
                );
            }
            store.close().await.unwrap();
        });
    }

    #[test]
    fn deletes_and_appends_in_one_batch_are_ordered() {
        let mut f = fixture();
        let (delete, mut deleted) = {
            let (reply, rx) = oneshot::channel();
            let request = Request::Delete {
                stream: StreamName::new("a-1").unwrap(),
                expected: ExpectedRevision::Exact(1),
                tombstone: false,
                reply,
            };
            (request, rx)
        };
        let (first, mut first_rx) = append_request(
            "a-1",
            ExpectedRevision::NoStream,
            vec![event("A"), event("B")],
        );
        let (after, mut after_rx) =
            append_request("a-1", ExpectedRevision::NoStream, vec![event("C")]);
        f.writer.commit_batch(vec![first, delete, after]);
        assert_eq!(
            first_rx.try_recv().unwrap().unwrap().streams[0].next_expected_revision,
            1
        );
        deleted.try_recv().unwrap().unwrap();
        // Soft-deleted in the same batch: NoStream matches, and revisions continue.
        assert_eq!(
            after_rx.try_recv().unwrap().unwrap().streams[0].next_expected_revision,
            2
        );
    }
}
