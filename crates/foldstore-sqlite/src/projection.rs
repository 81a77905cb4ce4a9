//! Exactly-once read models in SQLite.
//!
//! A [`SqliteReadModel`] is a [`ProjectionTarget`] over a SQLite database of your own
//! (not the event store's file): each batch of events is applied by your
//! [`SqliteProjection`] through one `rusqlite::Transaction`, and the same transaction
//! writes the projection's checkpoint row in `foldstore_checkpoints(name, position,
//! updated_at)`. The batch and its checkpoint commit together or not at all, so after
//! any crash the runner resumes exactly after the last event that took effect: every
//! event counts once.
//!
//! One runner per projection: [`ProjectionTarget::try_acquire`] takes an exclusive OS
//! file lock on `<database>.<projection>.projection-lock` beside the database. The OS
//! releases it when the process dies, so a standby runner (in this or another process)
//! takes over within its retry interval. The checkpoint update is also a
//! compare-and-set on the previous checkpoint, so even a runner that bypassed the lock
//! could not apply a batch twice.
//!
//! Why a file lock rather than a lease row with an expiry: a lease must be renewed, and
//! a holder that stalls past its expiry (a long batch, a paused VM) keeps writing while
//! another runner already holds the lease, unless every write is fenced; a lease also
//! makes fail-over wait for the expiry. The file lock is held exactly as long as the
//! process (or the read model) lives, costs nothing per batch, and needs no clock. It
//! assumes what the store's own lock assumes: a local file system that honours `flock`.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use foldstore_core::projection::{
    HandlerError, ProjectionError, ProjectionTarget, RunnerLock, validate_name,
};
use foldstore_core::{Position, RecordedEvent};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

/// A read model kept in SQLite: your tables, updated inside the runner's transaction.
///
/// ```
/// use foldstore_core::RecordedEvent;
/// use foldstore_core::projection::HandlerError;
/// use foldstore_sqlite::projection::SqliteProjection;
/// use rusqlite::Transaction;
///
/// struct Balances;
///
/// impl SqliteProjection for Balances {
///     fn setup(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
///         tx.execute_batch("CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, cents INTEGER NOT NULL)")
///     }
///     fn apply(&mut self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), HandlerError> {
///         let amount = event.json::<serde_json::Value>()?["cents"].as_i64().ok_or("no cents")?;
///         tx.execute(
///             "INSERT INTO balances VALUES (?1, ?2)
///              ON CONFLICT (account) DO UPDATE SET cents = cents + excluded.cents",
///             (event.stream.as_str(), amount),
///         )?;
///         Ok(())
///     }
///     fn reset(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
///         tx.execute("DELETE FROM balances", []).map(|_| ())
///     }
/// }
/// ```
pub trait SqliteProjection: Send + 'static {
    /// Creates the read model's tables when they are missing. Runs in a transaction
    /// when the read model is opened.
    fn setup(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()>;

    /// Applies one event. An error rolls back the whole batch (and its checkpoint).
    fn apply(&mut self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), HandlerError>;

    /// Empties the read model, before a rebuild. Runs in the transaction that also
    /// removes the checkpoint.
    fn reset(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()>;
}

/// An exclusive OS file lock (`flock`, via `File::try_lock`) on a lock file: the
/// [`RunnerLock`] for SQLite deployments. The OS releases it when the holding process
/// dies, however it dies; dropping it releases it too. Read models hold one
/// themselves; give one to a saga runner (`SagaRunner::lock(FileLock::new(..))`) to
/// run the saga in several processes.
///
/// ```
/// use foldstore_core::projection::RunnerLock;
/// use foldstore_sqlite::projection::FileLock;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// # let dir = tempfile::tempdir()?;
/// let path = dir.path().join("billing-saga.lock");
/// let (mut a, mut b) = (FileLock::new(&path), FileLock::new(&path));
/// assert!(a.try_acquire().await?);
/// assert!(!b.try_acquire().await?);
/// a.release().await?;
/// assert!(b.try_acquire().await?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FileLock {
    path: PathBuf,
    file: Option<File>,
}

impl FileLock {
    /// A lock on the file at `path` (created when first acquired), not yet taken.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            file: None,
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl RunnerLock for FileLock {
    async fn try_acquire(&mut self) -> Result<bool, HandlerError> {
        if self.file.is_some() {
            return Ok(true);
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)?;
        match file.try_lock() {
            Ok(()) => {
                self.file = Some(file);
                Ok(true)
            }
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(e)) => Err(e.into()),
        }
    }

    fn is_held(&self) -> bool {
        self.file.is_some()
    }

    async fn release(&mut self) -> Result<(), HandlerError> {
        // Closing the file releases the lock.
        self.file = None;
        Ok(())
    }
}

struct Inner<P> {
    conn: Connection,
    projection: P,
}

/// A [`ProjectionTarget`] that keeps a [`SqliteProjection`]'s tables and its checkpoint
/// in one SQLite database, updated in one transaction per batch (exactly once).
///
/// ```
/// # use foldstore_core::RecordedEvent;
/// # use foldstore_core::projection::HandlerError;
/// # use foldstore_sqlite::projection::SqliteProjection;
/// # use rusqlite::Transaction;
/// # struct Counts;
/// # impl SqliteProjection for Counts {
/// #     fn setup(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
/// #         tx.execute_batch("CREATE TABLE IF NOT EXISTS counts (stream TEXT PRIMARY KEY, n INTEGER NOT NULL)")
/// #     }
/// #     fn apply(&mut self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), HandlerError> {
/// #         tx.execute("INSERT INTO counts VALUES (?1, 1) ON CONFLICT (stream) DO UPDATE SET n = n + 1", [event.stream.as_str()])?;
/// #         Ok(())
/// #     }
/// #     fn reset(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
/// #         tx.execute("DELETE FROM counts", []).map(|_| ())
/// #     }
/// # }
/// use std::sync::Arc;
/// use foldstore_core::projection::ProjectionRunner;
/// use foldstore_core::{EventStore, ExpectedRevision, NewEvent, StreamName};
/// use foldstore_sqlite::projection::SqliteReadModel;
/// use foldstore_sqlite::{SqliteOptions, SqliteStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let store = SqliteStore::open(dir.path().join("events.db"), SqliteOptions::default()).await?;
/// let order = StreamName::new("order-1")?;
/// store.append(&order, ExpectedRevision::Any, vec![NewEvent::json("Placed", &())?]).await?;
///
/// let read_model = SqliteReadModel::open(dir.path().join("read.db"), "counts", Counts)?;
/// let mut runner = ProjectionRunner::new(Arc::new(store), read_model);
/// runner.catch_up().await?;
/// let n: i64 = runner.target().with_connection(|c| {
///     c.query_row("SELECT n FROM counts WHERE stream = 'order-1'", [], |r| r.get(0))
/// })?;
/// assert_eq!(n, 1);
/// # Ok(())
/// # }
/// ```
pub struct SqliteReadModel<P> {
    name: String,
    inner: Arc<Mutex<Inner<P>>>,
    lock: FileLock,
}

impl<P> std::fmt::Debug for SqliteReadModel<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReadModel")
            .field("name", &self.name)
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

const CHECKPOINTS_SQL: &str = "CREATE TABLE IF NOT EXISTS foldstore_checkpoints (
    name TEXT PRIMARY KEY,
    position TEXT NOT NULL,
    updated_at TEXT NOT NULL
)";

fn lock_inner<P>(inner: &Mutex<Inner<P>>) -> MutexGuard<'_, Inner<P>> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_checkpoint(conn: &Connection, name: &str) -> Result<Option<Position>, HandlerError> {
    let text: Option<String> = conn
        .query_row(
            "SELECT position FROM foldstore_checkpoints WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()?;
    Ok(match text {
        Some(t) => Some(t.parse::<Position>()?),
        None => None,
    })
}

impl<P: SqliteProjection> SqliteReadModel<P> {
    /// Opens (creating it if needed) the read-model database at `path` for the
    /// projection `name`: WAL mode, `synchronous=FULL` (a committed batch survives a
    /// power loss), the checkpoint table, then [`SqliteProjection::setup`].
    ///
    /// Several projections may share one database; each has its own checkpoint row and
    /// lock file. It does not take the lock yet: the runner does.
    pub fn open(
        path: impl AsRef<Path>,
        name: impl Into<String>,
        mut projection: P,
    ) -> Result<Self, ProjectionError> {
        let name = name.into();
        validate_name(&name)?;
        let path = path.as_ref();
        let storage = |e: rusqlite::Error| ProjectionError::storage(&name, e);
        let mut conn = Connection::open(path).map_err(storage)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(storage)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(storage)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(storage)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        tx.execute_batch(CHECKPOINTS_SQL).map_err(storage)?;
        projection.setup(&tx).map_err(storage)?;
        tx.commit().map_err(storage)?;
        let mut file_name = path.file_name().unwrap_or_default().to_os_string();
        file_name.push(format!(".{name}.projection-lock"));
        Ok(Self {
            lock: FileLock::new(path.with_file_name(file_name)),
            name,
            inner: Arc::new(Mutex::new(Inner { conn, projection })),
        })
    }

    /// Runs `f` on the read model's connection (blocking the calling thread while a
    /// batch is being applied). Handy for queries in tests; applications usually read
    /// the database through connections of their own.
    pub fn with_connection<R>(&self, f: impl FnOnce(&Connection) -> R) -> R {
        f(&lock_inner(&self.inner).conn)
    }

    /// Whether this read model holds the projection's lock.
    pub fn is_locked(&self) -> bool {
        self.lock.is_held()
    }

    /// The lock file's path: `<database>.<projection>.projection-lock`.
    pub fn lock_path(&self) -> &Path {
        self.lock.path()
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner<P>) -> Result<R, ProjectionError> + Send + 'static,
    ) -> Result<R, ProjectionError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut lock_inner(&inner)))
            .await
            .map_err(|e| ProjectionError::storage(&self.name, e))?
    }

    async fn ensure_locked(&mut self) -> Result<(), ProjectionError> {
        if self.lock.is_held() || self.try_acquire().await? {
            Ok(())
        } else {
            Err(ProjectionError::LockLost {
                name: self.name.clone(),
                reason: format!("another runner holds {}", self.lock.path().display()),
            })
        }
    }
}

#[async_trait]
impl<P: SqliteProjection> ProjectionTarget for SqliteReadModel<P> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn try_acquire(&mut self) -> Result<bool, ProjectionError> {
        let acquired = self.lock.try_acquire().await;
        acquired.map_err(|e| ProjectionError::storage(&self.name, e))
    }

    async fn release(&mut self) -> Result<(), ProjectionError> {
        let released = self.lock.release().await;
        released.map_err(|e| ProjectionError::storage(&self.name, e))
    }

    async fn checkpoint(&mut self) -> Result<Option<Position>, ProjectionError> {
        let name = self.name.clone();
        self.blocking(move |inner| {
            read_checkpoint(&inner.conn, &name).map_err(|e| ProjectionError::storage(&name, e))
        })
        .await
    }

    async fn apply_batch(
        &mut self,
        previous: Option<Position>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(());
        };
        self.ensure_locked().await?;
        let name = self.name.clone();
        let events = events.to_vec();
        self.blocking(move |inner| {
            let storage = |e: HandlerError| ProjectionError::storage(&name, e);
            let Inner { conn, projection } = inner;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| storage(e.into()))?;
            let found = read_checkpoint(&tx, &name).map_err(storage)?;
            if found != previous {
                return Err(ProjectionError::CheckpointMoved {
                    name,
                    expected: previous,
                    found,
                });
            }
            for event in &events {
                projection
                    .apply(&tx, event)
                    .map_err(|e| ProjectionError::handler(&name, event, e))?;
            }
            tx.execute(
                "INSERT INTO foldstore_checkpoints (name, position, updated_at)
                 VALUES (?1, ?2, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                 ON CONFLICT (name) DO UPDATE
                 SET position = excluded.position, updated_at = excluded.updated_at",
                (&name, last.to_string()),
            )
            .map_err(|e| storage(e.into()))?;
            tx.commit().map_err(|e| storage(e.into()))
        })
        .await
    }

    async fn reset(&mut self) -> Result<(), ProjectionError> {
        self.ensure_locked().await?;
        let name = self.name.clone();
        self.blocking(move |inner| {
            let storage = |e: rusqlite::Error| ProjectionError::storage(&name, e);
            let Inner { conn, projection } = inner;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(storage)?;
            projection.reset(&tx).map_err(storage)?;
            tx.execute("DELETE FROM foldstore_checkpoints WHERE name = ?1", [&name])
                .map_err(storage)?;
            tx.commit().map_err(storage)
        })
        .await
    }
}

/// `docs/projections-and-sagas.md`, included so that its examples run as doctests.
#[doc = include_str!("../../../docs/projections-and-sagas.md")]
#[cfg(doctest)]
pub struct ProjectionsAndSagasGuide;
