//! # foldstore-sqlite
//!
//! The embedded SQLite backend of foldstore: one file, no server, durable by default.
//! [`SqliteStore`] implements [`foldstore_core::EventStore`] and passes the same
//! conformance kit as every other backend.
//!
//! ```
//! use foldstore_core::{EventStore, ExpectedRevision, NewEvent, ReadStreamOptions, StreamName};
//! use foldstore_sqlite::{SqliteOptions, SqliteStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("foldstore.db");
//! let store = SqliteStore::open(&path, SqliteOptions::default()).await?;
//! let stream = StreamName::new("account-42")?;
//! let deposited = NewEvent::json("Deposited", &serde_json::json!({ "amount": 10 }))?;
//! let result = store.append(&stream, ExpectedRevision::NoStream, vec![deposited]).await?;
//! assert_eq!(result.next_expected_revision, 0);
//!
//! let events = store.read_stream(&stream, ReadStreamOptions::forwards()).await?;
//! assert_eq!(events[0].event_type, "Deposited");
//! store.close().await?; // finishes queued writes, checkpoints, releases the file
//! # Ok(())
//! # }
//! ```
//!
//! ## How it works
//!
//! - **One writer at a time**: the only write connection, with its cache of stream
//!   state, sits behind a mutex. Appends, deletes, tombstones and metadata changes are
//!   queued to a writer thread, so they are ordered and the cache stays right. A caller
//!   that finds the writer idle (nothing queued or being committed, and the last commit
//!   served one request) commits its own write on its own thread instead, inside
//!   Tokio's `block_in_place` (multi-threaded runtimes only), so a lone writer pays no
//!   hand-off between threads; writes arriving meanwhile queue to the writer thread.
//! - **Group commit**: the writer takes every request that queued while the previous
//!   commit was being flushed (up to [`SqliteOptions::max_batch_events`] events) and
//!   applies them in one transaction. Each request is checked on its own
//!   ([`foldstore_core::rules::plan_append`] against the stream's state and an event-id
//!   lookup in the database), in arrival order, so requests of one batch see each other's
//!   effects and a refused request never fails its neighbours. Replies are sent after the
//!   commit; then subscribers are woken. When several writers are active, the writer
//!   waits a moment (while requests keep arriving, at most half a batch's duration and
//!   1 ms) for the ones it just answered, so that they share the next commit instead of
//!   alternating between two half-size ones; a lone writer never waits.
//! - **Readers** use their own read-only connections ([`SqliteOptions::readers`]), on
//!   Tokio's blocking pool; WAL mode lets them run beside the writer, and they only ever
//!   see committed transactions.
//! - **One process per file**: [`SqliteStore::open`] takes an exclusive lock on
//!   `<file>.lock` and refuses with [`OpenError::Locked`] when it is held, also by another
//!   store in the same process.
//! - The schema is versioned (`PRAGMA user_version`) and migrated on open; a file written
//!   by a newer foldstore is refused with [`OpenError::NewerSchema`]. The schema is in
//!   `src/sql/schema_v1.sql`, `src/sql/schema_v2.sql` (tags, the tag and type
//!   indexes, snapshots) and `src/sql/schema_v3.sql` (tracking).
//! - **Dynamic Consistency Boundary**: an event's tags are stored on its row (returned
//!   by every read) and in the `event_tags` index, so
//!   [`read_query`](EventStore::read_query) walks only the index entries of each query
//!   item's first tag (or, for items with types only, of its types), never the whole
//!   log. [`append_if`](EventStore::append_if)'s condition is checked by the writer in
//!   the batch's transaction, in arrival order, after the idempotency and
//!   expected-revision checks: it sees the appends queued before it in the same group
//!   commit, and a failing condition refuses only its own append.
//! - **Transactions** ([`append_transaction`](EventStore::append_transaction)): a plain
//!   or conditional append is a transaction of one part, so every write of events is
//!   one request to the writer. A transaction's checks (each part's stream state and
//!   event ids, the tracking row, the condition) all run in the batch's transaction
//!   before its first insert, so a refused transaction writes nothing and fails alone,
//!   and each sees the requests before it in the same group commit.
//! - **Snapshots** ([`SnapshotStore`]) are rows of the same file, saved through the
//!   writer with the same durability as events.
//! - The WAL is checkpointed by a background thread, off the commit path; when it has
//!   grown past 32 MiB the writer finishes the job between two batches so that the WAL
//!   restarts (SQLite only restarts it when a write begins with everything
//!   checkpointed). [`SqliteStore::close`] checkpoints it completely.
//! - The schema keeps each commit small (see the `.sql` file): integer keys, event ids
//!   as two integers indexed in time order, no per-append update of a streams row, and
//!   one index per lookup that needs one (stream and revision; event id; category, so
//!   category reads and consumer groups read only their category's events). Event ids
//!   above the greatest stored id are known to be new without an index lookup.
//!
//! ## Durability
//!
//! An append is acknowledged (its future resolves `Ok`) only after the transaction that
//! holds it committed. What "committed" promises depends on [`Durability`]:
//!
//! | setting | survives a process crash (kill -9) | survives power loss or an OS crash |
//! |---|---|---|
//! | [`Durability::Full`] (default) | yes | yes |
//! | [`Durability::Normal`] | yes | the last commits may be lost; never torn |
//!
//! - **`Full`** runs SQLite in WAL mode with `synchronous=FULL`: the commit's WAL frames
//!   are written and `fsync`ed before the append is acknowledged.
//! - **`Normal`** uses `synchronous=NORMAL`: a commit is written to the WAL (the OS has
//!   it, so a process crash loses nothing) but not `fsync`ed; the WAL is synced at
//!   checkpoints. After a power loss the database is consistent, but appends acknowledged
//!   since the last sync may be missing. Choose it only when losing the last moments of
//!   writes on power loss is acceptable.
//!
//! Both settings assume what SQLite assumes of the machine:
//!
//! - `fsync`/`fdatasync` returning success means the data is on stable storage. A disk
//!   (or virtual disk, or controller cache without power protection) that acknowledges
//!   flushes it has not done voids the power-loss guarantee of `Full`, never the
//!   process-crash guarantee.
//! - Writes of a sector are not torn into garbage that passes SQLite's WAL checksums.
//! - A failed `fsync` fails the commit, and foldstore never retries an `fsync` as if it
//!   had worked, nor commits anything after it: on Linux a failed sync may drop the
//!   unwritten pages and clear the error, so a later sync could report success for data
//!   that never reached the disk. See "After a disk error" below.
//! - File locks (`flock`) work on the file system holding the database; network file
//!   systems that ignore them void the one-process guarantee.
//!
//! Every acknowledged append is all-or-nothing and revisions stay gapless whatever
//! happens; `tests/crash.rs` kills a writing process over and over to check it.
//!
//! ## A full disk
//!
//! When the disk is full (`SQLITE_FULL`), the write is refused whole with
//! [`BackendErrorKind::StorageFull`]: nothing of it is written, wherever the disk ran
//! out. Reads keep working, and each later write tries again, so the first one after
//! space is freed commits, without reopening the store. The disk filling up is logged
//! once as an error, and writes committing again as info.
//!
//! ## After a disk error
//!
//! When a write fails with any other I/O-class SQLite error (`SQLITE_IOERR` and its
//! extended codes such as a failed `fsync`, `SQLITE_CORRUPT`, `SQLITE_NOTADB`,
//! `SQLITE_CANTOPEN`), the store **stops accepting writes** until it is reopened, and
//! logs the error with its cause:
//!
//! - The requests of the batch that failed get [`BackendErrorKind::OutcomeUnknown`] when
//!   the error came from the commit (its WAL frames may or may not have reached the
//!   disk), or [`BackendErrorKind::Storage`] when it came earlier (nothing was written).
//! - Every later append, delete, tombstone, metadata change and snapshot save gets a
//!   [`BackendErrorKind::Storage`] error saying when the store stopped, why, and what to
//!   do: check the disk's health, then reopen the store (restart the process).
//! - Reads keep working and show every acknowledged write.
//! - [`SqliteStore::close`] still closes and releases the file, but does not checkpoint:
//!   the WAL, whose frames carry checksums, stays as the disk has it, and the next open
//!   recovers from it. Reopened, the store has every acknowledged write, and the failed
//!   batch either whole or not at all; retry its appends with the same event ids.
//!
//! Other failures of a batch (a constraint, a bug) fail only that batch: nothing of it
//! is written and the writer goes on.

mod error;
mod failstop;
pub mod projection;
mod query;
mod reader;
mod schema;
mod writer;

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use foldstore_core::dcb::{Query, ReadQueryOptions};
use foldstore_core::rules::validate_transaction;
use foldstore_core::snapshot::{Snapshot, SnapshotError, SnapshotStore, validate_state_type};
use foldstore_core::subscription::{subscribe_all, subscribe_stream};
use foldstore_core::transaction::{AppendTransaction, TransactionResult, validate_tracking_source};
use foldstore_core::{
    AppendError, BackendError, BackendErrorKind, DeleteError, EventFilter, EventStore,
    EventSubscription, ExpectedRevision, Limits, MetadataError, Position, ReadAllOptions,
    ReadError, ReadStreamOptions, RecordedEvent, StreamMetadata, StreamName, SubscribeFrom,
    SubscribeStreamFrom,
};
use tokio::sync::oneshot;
use tracing::Instrument;

pub use error::OpenError;

use crate::reader::Readers;
use crate::writer::{Checkpointer, Request, Shared, WriteSide, Writer};

/// What an acknowledged append promises. See the crate docs, "Durability".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// The default: WAL with `synchronous=FULL`. An append is acknowledged only after its
    /// commit was `fsync`ed: it survives a process crash and a power loss (if the disk
    /// honours `fsync`).
    #[default]
    Full,
    /// WAL with `synchronous=NORMAL`: commits are not `fsync`ed (the WAL is synced at
    /// checkpoints). May lose the last commits on power loss, never on a process crash;
    /// the database is never torn. Faster for small appends.
    Normal,
}

/// Options of [`SqliteStore::open`].
///
/// ```
/// use foldstore_sqlite::{Durability, SqliteOptions};
///
/// let options = SqliteOptions { durability: Durability::Normal, ..SqliteOptions::default() };
/// assert_eq!(options.readers, 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// What an acknowledged append promises; [`Durability::Full`] by default.
    pub durability: Durability,
    /// Limits applied to every append.
    pub limits: Limits,
    /// Read connections in the pool (at least 1); 4 by default.
    pub readers: usize,
    /// The group-commit cap: the writer stops adding requests to a transaction once it
    /// holds this many events (a single larger append still goes in whole). 4096 by
    /// default.
    pub max_batch_events: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            limits: Limits::default(),
            readers: 4,
            max_batch_events: 4096,
        }
    }
}

/// The SQLite event store. Cloning gives another handle to the same store.
///
/// Open it with [`SqliteStore::open`]; close it with [`SqliteStore::close`] to finish
/// queued writes and checkpoint the WAL (dropping the last handle does the same, blocking
/// the dropping thread until the writer is done).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` only while dropping.
    requests: Option<mpsc::Sender<Request>>,
    /// The writer, shared with the writer thread (for the lone-writer fast path).
    write: Arc<WriteSide>,
    readers: Arc<Readers>,
    shared: Arc<Shared>,
    limits: Limits,
    path: PathBuf,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer ends once every sender is gone; wait for it so that the lock file
        // is free when the last handle is dropped.
        drop(self.requests.take());
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// The lock file of a database: `<file>.lock` beside it.
fn lock_path_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Runs blocking work on Tokio's blocking pool when inside Tokio, else in place.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.spawn_blocking(f).await,
        Err(_) => Ok(f()),
    }
}

impl SqliteStore {
    /// Opens (creating the file and its directory if needed) and migrates the database
    /// at `path`, takes the lock on `<path>.lock`, and starts the writer.
    ///
    /// ```
    /// use foldstore_sqlite::{OpenError, SqliteOptions, SqliteStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("data/foldstore.db");
    /// let store = SqliteStore::open(&path, SqliteOptions::default()).await?;
    /// // A second open of the same file is refused while the first is open.
    /// let second = SqliteStore::open(&path, SqliteOptions::default()).await;
    /// assert!(matches!(second, Err(OpenError::Locked { .. })));
    /// store.close().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteStore, OpenError> {
        let path = path.as_ref().to_owned();
        let at = path.clone();
        blocking(move || open_blocking(path, options))
            .await
            .map_err(|e| OpenError::Io {
                action: "open",
                path: at,
                source: std::io::Error::other(e.to_string()),
            })?
    }

    /// Finishes the writes queued so far, checkpoints the WAL into the database file,
    /// closes every connection and releases the lock. Other handles get
    /// [`BackendErrorKind::Unavailable`] errors afterwards. After a disk error it skips
    /// the checkpoint and leaves the WAL for the next open to recover (see "After a disk
    /// error" in the crate docs).
    pub async fn close(self) -> Result<(), OpenError> {
        let path = self.inner.path.clone();
        self.inner.readers.close().await;
        let (reply, answer) = oneshot::channel();
        let sent = match &self.inner.requests {
            Some(requests) => requests.send(Request::Close { reply }).is_ok(),
            None => false,
        };
        if !sent {
            return Err(OpenError::Closed { path });
        }
        let result = answer.await.unwrap_or(Err(OpenError::Closed { path }));
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            // The writer has answered; it only returns now.
            let _ = blocking(move || handle.join()).await;
        }
        result
    }

    /// The durability the write connection actually runs with (it reads
    /// `PRAGMA synchronous` there).
    pub async fn effective_durability(&self) -> Result<Durability, BackendError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Synchronous { reply })?;
        match answer.await.map_err(|_| self.writer_gone())?? {
            2 => Ok(Durability::Full),
            1 => Ok(Durability::Normal),
            other => Err(BackendError::new(
                BackendErrorKind::Internal,
                format!("the write connection runs with PRAGMA synchronous = {other}"),
            )),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Hands `request` to the writer thread.
    fn send(&self, request: Request) -> Result<(), BackendError> {
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(error::closed());
        }
        let Some(requests) = &self.inner.requests else {
            return Err(error::closed());
        };
        shared.queued.fetch_add(1, Ordering::AcqRel);
        requests.send(request).map_err(|_| {
            shared.queued.fetch_sub(1, Ordering::AcqRel);
            error::closed()
        })?;
        #[cfg(test)]
        shared.handed.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Has a write committed: on this thread when the writer is idle (the lone-writer
    /// fast path), else by the writer thread. The answer arrives on the request's reply
    /// channel either way.
    fn write(&self, request: Request) -> Result<(), BackendError> {
        match self.inner.write.try_lead(request) {
            None => Ok(()),
            Some(request) => self.send(request),
        }
    }

    /// The error for a request the writer dropped without answering.
    fn writer_gone(&self) -> BackendError {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            // Dropped unread after the writer stopped taking requests: nothing was written.
            return error::closed();
        }
        BackendError::new(
            BackendErrorKind::OutcomeUnknown,
            "the SQLite writer stopped before answering; retry with the same event ids (appends are idempotent)",
        )
    }
}

fn open_blocking(path: PathBuf, options: SqliteOptions) -> Result<SqliteStore, OpenError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| OpenError::Io {
            action,
            path,
            source,
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io("create the directory", parent))?;
    }
    let lock_file = lock_path_of(&path);
    let lock: File = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_file)
        .map_err(io("open the lock file", &lock_file))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(OpenError::Locked { path, lock_file });
        }
        Err(TryLockError::Error(e)) => return Err(io("lock", &lock_file)(e)),
    }
    let conn = schema::open_writer(&path, &options)?;
    let head: Option<i64> = conn
        .query_row("SELECT max(position) FROM events", [], |r| r.get(0))
        .map_err(|source| OpenError::Sqlite {
            action: "reading the last position",
            path: path.clone(),
            source,
        })?;
    let readers = (0..options.readers.max(1))
        .map(|_| schema::open_reader(&path))
        .collect::<Result<Vec<_>, _>>()?;
    let checkpointer = Checkpointer::spawn(schema::open_checkpointer(&path)?)
        .map_err(io("start the checkpoint thread for", &path))?;
    let shared = Arc::new(Shared::new(head.unwrap_or(0)));
    // Unbounded, but every request has a caller awaiting its answer: the queue holds at
    // most one request per pending call.
    let (requests, queue) = mpsc::channel();
    let write = Arc::new(WriteSide::new(Writer::new(
        conn,
        Arc::clone(&shared),
        options.max_batch_events,
        Some(checkpointer),
        lock,
        path.clone(),
    )));
    let side = Arc::clone(&write);
    let handle = std::thread::Builder::new()
        .name("foldstore-writer".into())
        .spawn(move || side.run(queue))
        .map_err(io("start the writer thread for", &path))?;
    Ok(SqliteStore {
        inner: Arc::new(Inner {
            requests: Some(requests),
            write,
            readers: Arc::new(Readers::new(readers)),
            shared,
            limits: options.limits,
            path,
            writer: Mutex::new(Some(handle)),
        }),
    })
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append_transaction(
        &self,
        transaction: AppendTransaction,
    ) -> Result<TransactionResult, AppendError> {
        validate_transaction(&transaction, &self.inner.limits)?;
        let (reply, answer) = oneshot::channel();
        // From the hand-off to the answer: the wait for the group commit that carries
        // this transaction, and the commit itself when this call leads it.
        let commit = tracing::debug_span!("sqlite.commit", events = transaction.event_count());
        commit.in_scope(|| self.write(Request::Append { transaction, reply }))?;
        answer
            .instrument(commit)
            .await
            .map_err(|_| self.writer_gone())?
    }

    async fn tracking(&self, source: &str) -> Result<Option<Position>, ReadError> {
        validate_tracking_source(source)?;
        let source = source.to_owned();
        self.inner
            .readers
            .run(move |rc| reader::tracking(rc, &source))
            .await
    }

    async fn read_query(
        &self,
        query: &Query,
        options: ReadQueryOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        query.validate()?;
        let query = query.clone();
        self.inner
            .readers
            .run(move |rc| reader::read_query(rc, &query, &options))
            .await
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let stream = stream.clone();
        self.inner
            .readers
            .run(move |rc| reader::read_stream(rc, &stream, &options))
            .await
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError> {
        options.filter.validate()?;
        self.inner
            .readers
            .run(move |rc| reader::read_all(rc, &options))
            .await
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError> {
        self.delete(stream, expected, false).await
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError> {
        self.delete(stream, expected, true).await
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamName>, ReadError> {
        let prefix = prefix.to_owned();
        let after = after.map(|a| a.as_str().to_owned());
        self.inner
            .readers
            .run(move |rc| reader::list_streams(rc, &prefix, after.as_deref(), limit))
            .await
    }

    async fn stream_metadata(
        &self,
        stream: &StreamName,
    ) -> Result<Option<StreamMetadata>, MetadataError> {
        let stream = stream.clone();
        self.inner
            .readers
            .run(move |rc| reader::stream_metadata(rc, &stream))
            .await
    }

    async fn set_stream_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<(), MetadataError> {
        let (reply, answer) = oneshot::channel();
        self.write(Request::SetMetadata {
            stream: stream.clone(),
            metadata,
            reply,
        })?;
        answer.await.map_err(|_| self.writer_gone())?
    }

    async fn head_position(&self) -> Result<Option<Position>, ReadError> {
        // Set by the writer after each commit: only committed positions.
        let head = self.inner.shared.head.load(Ordering::Acquire);
        Ok(u64::try_from(head)
            .ok()
            .filter(|&h| h > 0)
            .map(|h| Position::new(u128::from(h))))
    }

    /// `Err` once the writer stopped after a disk error (see "After a disk error" in the
    /// crate docs).
    fn writable(&self) -> Result<(), BackendError> {
        self.inner.shared.failstop.refusal().map_or(Ok(()), Err)
    }

    async fn subscribe_to_all(
        &self,
        from: SubscribeFrom,
        filter: EventFilter,
    ) -> Result<EventSubscription, ReadError> {
        filter.validate()?;
        subscribe_all(self.clone(), &self.inner.shared.commits, from, filter).await
    }

    async fn subscribe_to_stream(
        &self,
        stream: &StreamName,
        from: SubscribeStreamFrom,
    ) -> Result<EventSubscription, ReadError> {
        subscribe_stream(
            self.clone(),
            &self.inner.shared.commits,
            stream.clone(),
            from,
        )
        .await
    }
}

impl SqliteStore {
    async fn delete(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        tombstone: bool,
    ) -> Result<(), DeleteError> {
        let (reply, answer) = oneshot::channel();
        self.write(Request::Delete {
            stream: stream.clone(),
            expected,
            tombstone,
            reply,
        })?;
        answer.await.map_err(|_| self.writer_gone())?
    }
}

/// Snapshots live in the same file, in the `snapshots` table. A save goes through the
/// writer like an append: it is acknowledged after its commit, with the store's
/// [`Durability`].
#[async_trait]
impl SnapshotStore for SqliteStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), SnapshotError> {
        validate_state_type(&snapshot.state_type)?;
        let (reply, answer) = oneshot::channel();
        self.write(Request::SaveSnapshot { snapshot, reply })?;
        answer.await.map_err(|_| self.writer_gone())?
    }

    async fn load_snapshot(
        &self,
        stream: &StreamName,
        state_type: &str,
    ) -> Result<Option<Snapshot>, SnapshotError> {
        validate_state_type(state_type)?;
        let (stream, state_type) = (stream.clone(), state_type.to_owned());
        self.inner
            .readers
            .run(move |rc| {
                reader::load_snapshot(rc, &stream, &state_type).map_err(SnapshotError::from)
            })
            .await
    }
}
