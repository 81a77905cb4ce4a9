//! Exactly-once read models in PostgreSQL.
//!
//! A [`PostgresReadModel`] is a [`ProjectionTarget`] over a PostgreSQL schema of your
//! choice: each batch of events is applied by your [`PostgresProjection`] through one
//! `tokio_postgres::Transaction`, and the same transaction updates the projection's
//! row in `<schema>.foldstore_checkpoints(name, position, updated_at)`. The batch and
//! its checkpoint commit together or not at all, so every event takes effect exactly
//! once, whatever crashes.
//!
//! One runner per projection, across processes: the read model holds a dedicated
//! connection, takes a session-level advisory lock on it
//! (`pg_try_advisory_lock(key)`, the key derived from the schema and the projection
//! name) and runs every batch on that same connection. If the process dies or the
//! connection breaks, the server ends the session and releases the lock, and a
//! standby runner takes over; the old holder cannot commit anything more, because its
//! transactions ran on the connection that is gone. The checkpoint update is also a
//! compare-and-set on the previous checkpoint (read `FOR UPDATE`).
//!
//! The read model's database may be the event store's or another one; positions are
//! stored as `numeric(39,0)` (they are 128-bit on PostgreSQL). In the event store's
//! cluster, an open batch transaction holds back what `$all` readers see, like any
//! writing transaction (`docs/semantics.md` §5): keep batches short. Between batches
//! the connection is outside any transaction.

use async_trait::async_trait;
use foldstore_core::projection::{
    HandlerError, ProjectionError, ProjectionTarget, RunnerLock, validate_name,
};
use foldstore_core::{Position, RecordedEvent};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, Transaction};

use crate::schema::check_schema_name;

/// A read model kept in PostgreSQL: your tables, updated inside the runner's
/// transaction. The connection's `search_path` is the read model's schema, so
/// unqualified table names land there.
///
/// ```
/// use async_trait::async_trait;
/// use foldstore_core::RecordedEvent;
/// use foldstore_core::projection::HandlerError;
/// use foldstore_postgres::projection::PostgresProjection;
/// use tokio_postgres::Transaction;
///
/// struct Counts;
///
/// #[async_trait]
/// impl PostgresProjection for Counts {
///     async fn setup(&mut self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
///         tx.batch_execute("CREATE TABLE IF NOT EXISTS counts (stream text PRIMARY KEY, n bigint NOT NULL)").await
///     }
///     async fn apply(&mut self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), HandlerError> {
///         tx.execute(
///             "INSERT INTO counts VALUES ($1, 1) ON CONFLICT (stream) DO UPDATE SET n = counts.n + 1",
///             &[&event.stream.as_str()],
///         )
///         .await?;
///         Ok(())
///     }
///     async fn reset(&mut self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
///         tx.batch_execute("DELETE FROM counts").await
///     }
/// }
/// ```
#[async_trait]
pub trait PostgresProjection: Send + 'static {
    /// Creates the read model's tables when they are missing. Runs in a transaction,
    /// one process at a time, when the read model connects.
    async fn setup(&mut self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error>;

    /// Applies one event. An error rolls back the whole batch (and its checkpoint).
    async fn apply(
        &mut self,
        tx: &Transaction<'_>,
        event: &RecordedEvent,
    ) -> Result<(), HandlerError>;

    /// Empties the read model, before a rebuild. Runs in the transaction that also
    /// removes the checkpoint.
    async fn reset(&mut self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error>;
}

/// A [`ProjectionTarget`] that keeps a [`PostgresProjection`]'s tables and checkpoint in
/// one PostgreSQL schema, updated in one transaction per batch (exactly once), with a
/// session advisory lock so that one runner per projection is active.
///
/// ```no_run
/// # use async_trait::async_trait;
/// # use foldstore_core::RecordedEvent;
/// # use foldstore_core::projection::HandlerError;
/// # use foldstore_postgres::projection::PostgresProjection;
/// # use tokio_postgres::Transaction;
/// # struct Counts;
/// # #[async_trait]
/// # impl PostgresProjection for Counts {
/// #     async fn setup(&mut self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> { Ok(()) }
/// #     async fn apply(&mut self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), HandlerError> { Ok(()) }
/// #     async fn reset(&mut self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> { Ok(()) }
/// # }
/// use std::sync::Arc;
/// use foldstore_core::projection::{ProjectionRunner, Stopper};
/// use foldstore_postgres::projection::PostgresReadModel;
/// use foldstore_postgres::{PostgresOptions, PostgresStore};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let url = "postgres://app@127.0.0.1:5432/app";
/// let store = PostgresStore::connect(PostgresOptions::new(url)).await?;
/// let read_model = PostgresReadModel::connect(url, "reports", "counts", Counts).await?;
/// let mut runner = ProjectionRunner::new(Arc::new(store), read_model);
/// let stopper = Stopper::new();
/// // Waits for the lock if another process runs "counts", then follows the store.
/// runner.run(stopper.signal()).await?;
/// # Ok(())
/// # }
/// ```
pub struct PostgresReadModel<P> {
    name: String,
    schema: String,
    key: i64,
    client: Client,
    connection: JoinHandle<()>,
    projection: P,
    locked: bool,
}

impl<P> std::fmt::Debug for PostgresReadModel<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReadModel")
            .field("name", &self.name)
            .field("schema", &self.schema)
            .field("locked", &self.locked)
            .finish_non_exhaustive()
    }
}

impl<P> Drop for PostgresReadModel<P> {
    fn drop(&mut self) {
        // Ends the session, which releases the advisory lock.
        self.connection.abort();
    }
}

/// The advisory-lock key of a projection: FNV-1a of a fixed prefix, the schema and the
/// name.
fn lock_key(schema: &str, name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "foldstore-projection:"
        .bytes()
        .chain(schema.bytes())
        .chain(b":".iter().copied())
        .chain(name.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

impl<P: PostgresProjection> PostgresReadModel<P> {
    /// Connects to `url` with a dedicated connection, creates `schema` and its
    /// `foldstore_checkpoints` table if needed, and runs [`PostgresProjection::setup`].
    /// The schema name follows the store's rule: lower-case ASCII letters, digits and
    /// `_`, not starting with a digit, at most 40 bytes. It does not take the lock yet:
    /// the runner does.
    pub async fn connect(
        url: &str,
        schema: &str,
        name: impl Into<String>,
        mut projection: P,
    ) -> Result<Self, ProjectionError> {
        let name = name.into();
        validate_name(&name)?;
        check_schema_name(schema).map_err(|e| ProjectionError::storage(&name, e))?;
        let storage = |e: tokio_postgres::Error| ProjectionError::storage(&name, e);
        let (mut client, connection) =
            tokio_postgres::connect(url, NoTls).await.map_err(storage)?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        client
            .batch_execute(&format!("SET search_path TO \"{schema}\""))
            .await
            .map_err(storage)?;
        let tx = client.transaction().await.map_err(storage)?;
        // One process at a time creates tables (concurrent CREATE ... IF NOT EXISTS
        // can fail on PostgreSQL's catalog constraints).
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_key(schema, "$setup")],
        )
        .await
        .map_err(storage)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE IF NOT EXISTS \"{schema}\".foldstore_checkpoints (
                 name text PRIMARY KEY,
                 position numeric(39, 0) NOT NULL,
                 updated_at timestamptz NOT NULL DEFAULT now()
             );"
        ))
        .await
        .map_err(storage)?;
        projection.setup(&tx).await.map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        Ok(Self {
            key: lock_key(schema, &name),
            name,
            schema: schema.to_owned(),
            client,
            connection,
            projection,
            locked: false,
        })
    }

    /// The read model's connection, for queries (tests, health checks). Do not run
    /// transactions on it while a runner uses the read model.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether this read model holds the projection's lock (and its connection is
    /// still open).
    pub fn is_locked(&self) -> bool {
        self.locked && !self.client.is_closed()
    }

    fn connection_error(&mut self, e: tokio_postgres::Error) -> ProjectionError {
        if self.client.is_closed() {
            self.locked = false;
            ProjectionError::LockLost {
                name: self.name.clone(),
                reason: format!("the read model's connection closed: {e}"),
            }
        } else {
            ProjectionError::storage(&self.name, e)
        }
    }

    async fn ensure_locked(&mut self) -> Result<(), ProjectionError> {
        if self.locked && self.client.is_closed() {
            self.locked = false;
            return Err(ProjectionError::LockLost {
                name: self.name.clone(),
                reason: "the read model's connection closed".to_owned(),
            });
        }
        if self.locked || self.try_acquire().await? {
            Ok(())
        } else {
            Err(ProjectionError::LockLost {
                name: self.name.clone(),
                reason: "another runner holds the projection's advisory lock".to_owned(),
            })
        }
    }
}

async fn read_checkpoint_for_update(
    tx: &Transaction<'_>,
    name: &str,
) -> Result<Option<Position>, HandlerError> {
    let sql = "SELECT position::text FROM foldstore_checkpoints WHERE name = $1 FOR UPDATE";
    let row = tx.query_opt(sql, &[&name]).await?;
    match row {
        Some(row) => Ok(Some(row.try_get::<_, String>(0)?.parse::<Position>()?)),
        None => Ok(None),
    }
}

#[async_trait]
impl<P: PostgresProjection> ProjectionTarget for PostgresReadModel<P> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn try_acquire(&mut self) -> Result<bool, ProjectionError> {
        if self.locked && !self.client.is_closed() {
            return Ok(true);
        }
        let row = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&self.key])
            .await;
        match row {
            Ok(row) => {
                self.locked = row
                    .try_get(0)
                    .map_err(|e| ProjectionError::storage(&self.name, e))?;
                Ok(self.locked)
            }
            Err(e) => Err(self.connection_error(e)),
        }
    }

    async fn release(&mut self) -> Result<(), ProjectionError> {
        if !self.locked {
            return Ok(());
        }
        self.locked = false;
        if self.client.is_closed() {
            return Ok(());
        }
        self.client
            .execute("SELECT pg_advisory_unlock($1)", &[&self.key])
            .await
            .map(|_| ())
            .map_err(|e| ProjectionError::storage(&self.name, e))
    }

    async fn checkpoint(&mut self) -> Result<Option<Position>, ProjectionError> {
        let row = self
            .client
            .query_opt(
                "SELECT position::text FROM foldstore_checkpoints WHERE name = $1",
                &[&self.name],
            )
            .await;
        let row = match row {
            Ok(row) => row,
            Err(e) => return Err(self.connection_error(e)),
        };
        let parsed: Result<Option<Position>, HandlerError> = match row {
            Some(row) => row
                .try_get::<_, String>(0)
                .map_err(HandlerError::from)
                .and_then(|t| t.parse::<Position>().map_err(HandlerError::from))
                .map(Some),
            None => Ok(None),
        };
        parsed.map_err(|e| ProjectionError::storage(&self.name, e))
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
        let Self {
            client,
            projection,
            name,
            ..
        } = self;
        let outcome: Result<(), Result<ProjectionError, tokio_postgres::Error>> = async {
            let tx = client.transaction().await.map_err(Err)?;
            let found = read_checkpoint_for_update(&tx, name)
                .await
                .map_err(|e| Ok(ProjectionError::storage(name, e)))?;
            if found != previous {
                return Err(Ok(ProjectionError::CheckpointMoved {
                    name: name.clone(),
                    expected: previous,
                    found,
                }));
            }
            for event in events {
                projection
                    .apply(&tx, event)
                    .await
                    .map_err(|e| Ok(ProjectionError::handler(name, event, e)))?;
            }
            // A compare-and-set, also when the row did not exist yet (which `FOR
            // UPDATE` cannot lock).
            let last_text = last.to_string();
            let written = match previous {
                None => {
                    tx.execute(
                        "INSERT INTO foldstore_checkpoints (name, position, updated_at)
                     VALUES ($1, $2::text::numeric, now())
                     ON CONFLICT (name) DO NOTHING",
                        &[name, &last_text],
                    )
                    .await
                }
                Some(p) => {
                    let previous_text = p.to_string();
                    tx.execute(
                        "UPDATE foldstore_checkpoints
                     SET position = $2::text::numeric, updated_at = now()
                     WHERE name = $1 AND position = $3::text::numeric",
                        &[name, &last_text, &previous_text],
                    )
                    .await
                }
            }
            .map_err(Err)?;
            if written != 1 {
                return Err(Ok(ProjectionError::CheckpointMoved {
                    name: name.clone(),
                    expected: previous,
                    found: None,
                }));
            }
            tx.commit().await.map_err(Err)
        }
        .await;
        match outcome {
            Ok(()) => Ok(()),
            Err(Ok(e)) => {
                if self.client.is_closed() {
                    self.locked = false;
                }
                Err(e)
            }
            Err(Err(e)) => Err(self.connection_error(e)),
        }
    }

    async fn reset(&mut self) -> Result<(), ProjectionError> {
        self.ensure_locked().await?;
        let Self {
            client,
            projection,
            name,
            ..
        } = self;
        let outcome: Result<(), tokio_postgres::Error> = async {
            let tx = client.transaction().await?;
            projection.reset(&tx).await?;
            tx.execute("DELETE FROM foldstore_checkpoints WHERE name = $1", &[name])
                .await?;
            tx.commit().await
        }
        .await;
        outcome.map_err(|e| self.connection_error(e))
    }
}

/// A session advisory lock on a dedicated connection: the [`RunnerLock`] for
/// PostgreSQL deployments. The server releases it when the session ends (the process
/// died, the connection broke), and [`RunnerLock::is_held`] then turns false, so a
/// saga runner holding it stops before its next event. Dropping it closes the session.
///
/// ```no_run
/// use foldstore_core::projection::RunnerLock;
/// use foldstore_postgres::projection::AdvisoryLock;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let mut lock = AdvisoryLock::connect("postgres://app@127.0.0.1:5432/app", "saga:billing").await?;
/// if lock.try_acquire().await? {
///     // this process runs the billing saga
/// }
/// # Ok(())
/// # }
/// ```
pub struct AdvisoryLock {
    name: String,
    key: i64,
    client: Client,
    connection: JoinHandle<()>,
    held: bool,
}

impl std::fmt::Debug for AdvisoryLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvisoryLock")
            .field("name", &self.name)
            .field("held", &self.is_held())
            .finish_non_exhaustive()
    }
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl AdvisoryLock {
    /// Opens a dedicated connection to `url` for the lock named `name` (any text; the
    /// key is derived from it). The lock is not taken yet.
    pub async fn connect(url: &str, name: &str) -> Result<Self, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            name: name.to_owned(),
            key: lock_key("$lock", name),
            client,
            connection,
            held: false,
        })
    }

    /// The backend process id of the lock's session (to find it in
    /// `pg_stat_activity`).
    pub async fn backend_pid(&self) -> Result<i32, tokio_postgres::Error> {
        Ok(self
            .client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0))
    }
}

#[async_trait]
impl RunnerLock for AdvisoryLock {
    async fn try_acquire(&mut self) -> Result<bool, HandlerError> {
        if self.is_held() {
            return Ok(true);
        }
        let row = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&self.key])
            .await?;
        self.held = row.try_get(0)?;
        Ok(self.held)
    }

    fn is_held(&self) -> bool {
        self.held && !self.client.is_closed()
    }

    async fn release(&mut self) -> Result<(), HandlerError> {
        if !self.is_held() {
            self.held = false;
            return Ok(());
        }
        self.held = false;
        self.client
            .execute("SELECT pg_advisory_unlock($1)", &[&self.key])
            .await?;
        Ok(())
    }
}
