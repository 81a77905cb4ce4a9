//! The one place that knows which store implementations the CLI opens: SQLite and
//! PostgreSQL.
//!
//! [`Store`] has the few store operations the CLI uses as inherent methods, each a
//! `match` that awaits the backend's own future. Implementing
//! [`foldstore_core::EventStore`] on it through `async_trait` would box one more
//! future per call, on the benchmark's hot path.

use std::time::Duration;

use foldstore_core::dcb::AppendCondition;
use foldstore_core::{
    AppendError, AppendResult, EventFilter, EventStore, EventSubscription, ExpectedRevision,
    NewEvent, Position, ReadAllOptions, ReadError, ReadStreamOptions, RecordedEvent, StreamName,
    SubscribeFrom, SubscribeStreamFrom,
};
use foldstore_postgres::{PostgresOptions, PostgresStore};
use foldstore_sqlite::{SqliteOptions, SqliteStore};

use crate::database_url::{DatabaseLocation, PgTuning};
use crate::error::CliError;

/// The store the CLI works on.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    /// A SQLite database file.
    Sqlite(SqliteStore),
    /// A schema in a PostgreSQL database.
    Postgres(PostgresStore),
}

/// How durable acknowledged appends are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Durability {
    /// fsync before acknowledging (the default).
    #[default]
    Full,
    /// Acknowledge once written to the OS; a power loss may lose the last commits.
    Normal,
}

impl Durability {
    /// The name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Durability::Full => "full",
            Durability::Normal => "normal",
        }
    }
}

/// Opens the store at `location`: creates a SQLite file if needed, or connects to
/// PostgreSQL and creates or migrates the schema.
pub(crate) async fn open(
    location: &DatabaseLocation,
    durability: Durability,
) -> Result<Store, CliError> {
    match location {
        DatabaseLocation::Sqlite(path) => {
            let options = SqliteOptions {
                durability: match durability {
                    Durability::Full => foldstore_sqlite::Durability::Full,
                    Durability::Normal => foldstore_sqlite::Durability::Normal,
                },
                ..SqliteOptions::default()
            };
            Ok(Store::Sqlite(SqliteStore::open(path, options).await?))
        }
        DatabaseLocation::Postgres {
            url,
            schema,
            tuning,
        } => {
            check_durability(location, durability)?;
            let options = postgres_options(url, schema, *tuning);
            Ok(Store::Postgres(PostgresStore::connect(options).await?))
        }
    }
}

/// The store's options for a PostgreSQL location.
fn postgres_options(url: &str, schema: &str, tuning: PgTuning) -> PostgresOptions {
    let mut options = PostgresOptions::new(url).schema(schema);
    if let Some(size) = tuning.pool_size {
        options = options.pool_size(size);
    }
    if let Some(ms) = tuning.statement_timeout_ms {
        options = options.statement_timeout((ms > 0).then(|| Duration::from_millis(ms)));
    }
    options
}

/// Refuses a durability setting the backend at `location` cannot honour.
pub(crate) fn check_durability(
    location: &DatabaseLocation,
    durability: Durability,
) -> Result<(), CliError> {
    match (location, durability) {
        (DatabaseLocation::Postgres { .. }, Durability::Normal) => Err(CliError::Usage(
            "--durability normal is for SQLite: on PostgreSQL the server's synchronous_commit decides (ALTER ROLE ... SET synchronous_commit = off), so use --durability full".to_owned(),
        )),
        _ => Ok(()),
    }
}

/// Closes the store. SQLite finishes queued writes, checkpoints and releases its lock;
/// PostgreSQL's background tasks stop and its connections close when the last handle
/// is dropped.
pub(crate) async fn close(store: Store) -> Result<(), CliError> {
    match store {
        Store::Sqlite(s) => Ok(s.close().await?),
        Store::Postgres(p) => {
            drop(p);
            Ok(())
        }
    }
}

impl Store {
    /// The backend's name in benchmark reports.
    pub(crate) fn backend_name(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// [`EventStore::append`].
    pub(crate) async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, AppendError> {
        match self {
            Store::Sqlite(s) => s.append(stream, expected, events).await,
            Store::Postgres(p) => p.append(stream, expected, events).await,
        }
    }

    /// [`EventStore::append_if`].
    pub(crate) async fn append_if(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> Result<AppendResult, AppendError> {
        match self {
            Store::Sqlite(s) => s.append_if(stream, expected, events, condition).await,
            Store::Postgres(p) => p.append_if(stream, expected, events, condition).await,
        }
    }

    /// [`EventStore::read_stream`].
    pub(crate) async fn read_stream(
        &self,
        stream: &StreamName,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        match self {
            Store::Sqlite(s) => s.read_stream(stream, options).await,
            Store::Postgres(p) => p.read_stream(stream, options).await,
        }
    }

    /// [`EventStore::read_all`].
    pub(crate) async fn read_all(
        &self,
        options: ReadAllOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        match self {
            Store::Sqlite(s) => s.read_all(options).await,
            Store::Postgres(p) => p.read_all(options).await,
        }
    }

    /// [`EventStore::subscribe_to_all`].
    pub(crate) async fn subscribe_to_all(
        &self,
        from: SubscribeFrom,
        filter: EventFilter,
    ) -> Result<EventSubscription, ReadError> {
        match self {
            Store::Sqlite(s) => s.subscribe_to_all(from, filter).await,
            Store::Postgres(p) => p.subscribe_to_all(from, filter).await,
        }
    }

    /// [`EventStore::subscribe_to_stream`].
    pub(crate) async fn subscribe_to_stream(
        &self,
        stream: &StreamName,
        from: SubscribeStreamFrom,
    ) -> Result<EventSubscription, ReadError> {
        match self {
            Store::Sqlite(s) => s.subscribe_to_stream(stream, from).await,
            Store::Postgres(p) => p.subscribe_to_stream(stream, from).await,
        }
    }

    /// [`EventStore::delete_stream`], or [`EventStore::tombstone_stream`].
    pub(crate) async fn delete(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        tombstone: bool,
    ) -> Result<(), CliError> {
        let result = match (self, tombstone) {
            (Store::Sqlite(s), false) => s.delete_stream(stream, expected).await,
            (Store::Sqlite(s), true) => s.tombstone_stream(stream, expected).await,
            (Store::Postgres(p), false) => p.delete_stream(stream, expected).await,
            (Store::Postgres(p), true) => p.tombstone_stream(stream, expected).await,
        };
        result.map(|_| ()).map_err(CliError::from)
    }

    /// [`EventStore::head_position`].
    pub(crate) async fn head_position(&self) -> Result<Option<Position>, ReadError> {
        match self {
            Store::Sqlite(s) => s.head_position().await,
            Store::Postgres(p) => p.head_position().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_reaches_the_postgres_options() {
        let defaults = postgres_options("postgres://h/db", "s", PgTuning::default());
        let tuned = postgres_options(
            "postgres://h/db",
            "s",
            PgTuning {
                pool_size: Some(40),
                statement_timeout_ms: Some(1500),
            },
        );
        assert_eq!(tuned.schema, "s");
        assert_eq!(tuned.pool_size, 40);
        assert_eq!(tuned.statement_timeout, Some(Duration::from_millis(1500)));
        assert_ne!(defaults.pool_size, 40);
        let server_setting = postgres_options(
            "postgres://h/db",
            "s",
            PgTuning {
                pool_size: None,
                statement_timeout_ms: Some(0),
            },
        );
        assert_eq!(server_setting.statement_timeout, None);
        assert_eq!(server_setting.pool_size, defaults.pool_size);
    }
}
