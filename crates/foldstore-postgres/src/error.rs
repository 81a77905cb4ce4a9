//! Errors of connecting, and the mapping of PostgreSQL errors to backend error kinds.

use foldstore_core::{BackendError, BackendErrorKind};
use tokio_postgres::error::SqlState;

/// Why [`crate::PostgresStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL did not parse.
    #[error(
        "the database URL is invalid ({source}): use postgres://user:password@host:port/database"
    )]
    InvalidUrl {
        /// The parse error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// An option is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The schema name is not one foldstore accepts.
    #[error(
        "schema name {0:?} is invalid: use lower-case letters, digits and `_`, starting with a letter or `_`, at most 40 bytes"
    )]
    InvalidSchemaName(String),
    /// PostgreSQL could not be reached or refused the connection.
    #[error(
        "could not connect to PostgreSQL ({source}): check that it is running, that the URL's host, port, user and database are right, and that the user may log in"
    )]
    Connect {
        /// The underlying error.
        #[source]
        source: BackendError,
    },
    /// The server is older than PostgreSQL 13.
    #[error(
        "PostgreSQL {}.{} is too old: foldstore needs PostgreSQL 13 or newer (its global order is made of xid8 transaction ids); upgrade the server or point --database at a newer one",
        .found / 10_000,
        .found % 10_000
    )]
    ServerTooOld {
        /// `server_version_num` of the server.
        found: i32,
    },
    /// The schema was written by a newer foldstore.
    #[error(
        "schema {schema:?} is at version {found}, newer than the {supported} this build of foldstore knows: upgrade foldstore (never downgrade a schema)"
    )]
    SchemaTooNew {
        /// The schema.
        schema: String,
        /// Its version.
        found: i32,
        /// The newest version this build knows.
        supported: i32,
    },
    /// The log holds transaction ids this cluster has not reached yet: it was restored
    /// from a dump into another cluster. New events would get lower positions than
    /// stored ones and readers past those would never see them, so the store refuses
    /// to open.
    #[error(
        "schema {schema:?} holds events of transaction {stored}, but this cluster's next transaction id is {next}: the log was restored into another cluster (positions are transaction ids). Advance the cluster's transaction counter past {stored} (pg_resetwal --next-transaction-id, with the epoch) before opening it; use pg_upgrade or physical replication, which keep transaction ids, to move a foldstore database"
    )]
    TransactionIdsAhead {
        /// The schema.
        schema: String,
        /// The highest stored transaction id.
        stored: u64,
        /// The cluster's next transaction id.
        next: u64,
    },
    /// Creating or migrating the schema failed; nothing of that migration step was
    /// applied.
    #[error(
        "migrating schema {schema:?} to version {version} failed ({source}): check that the user may create schemas and tables in this database"
    )]
    Migration {
        /// The schema.
        schema: String,
        /// The version being applied.
        version: i32,
        /// The underlying error.
        #[source]
        source: BackendError,
    },
}

/// Whether an operation may have taken effect when its error arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Nothing was written: reads, and writes that failed before `COMMIT` was sent.
    None,
    /// `COMMIT` was sent: the write may or may not have happened.
    Unknown,
}

/// Maps a PostgreSQL error to a backend error kind, with a message for people.
pub(crate) fn backend(e: tokio_postgres::Error, effect: Effect) -> BackendError {
    let lost = |what: &str| match effect {
        Effect::None => (
            BackendErrorKind::Unavailable,
            format!("{what}; nothing was written"),
        ),
        Effect::Unknown => (
            BackendErrorKind::OutcomeUnknown,
            format!("{what} during commit; the write may or may not have happened"),
        ),
    };
    let (kind, message) = match e.code() {
        None if e.is_closed() => lost("the connection to PostgreSQL was lost"),
        None => lost("PostgreSQL could not be reached"),
        Some(code) => classify(code, &lost),
    };
    BackendError::new(kind, message).with_source(e)
}

fn classify(
    code: &SqlState,
    lost: &dyn Fn(&str) -> (BackendErrorKind, String),
) -> (BackendErrorKind, String) {
    use BackendErrorKind::*;
    let class = &code.code()[..2];
    match code {
        c if *c == SqlState::QUERY_CANCELED => (
            Unavailable,
            "the statement timed out (statement_timeout) or was cancelled; nothing was written"
                .to_owned(),
        ),
        c if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => (
            Unavailable,
            "the write conflicted with concurrent transactions and was rolled back; retry".to_owned(),
        ),
        c if *c == SqlState::READ_ONLY_SQL_TRANSACTION => (
            Unavailable,
            "the server is read-only (a standby?); point the URL at the primary".to_owned(),
        ),
        c if *c == SqlState::TOO_MANY_CONNECTIONS => (
            Unavailable,
            "PostgreSQL has no free connection (max_connections); lower pool_size or raise the limit"
                .to_owned(),
        ),
        // PostgreSQL answers 53100 when a data file cannot grow; the statement's
        // transaction is aborted, so nothing was written, even when `COMMIT` got it.
        // (A full WAL disk makes the server PANIC instead: a lost connection.)
        c if *c == SqlState::DISK_FULL => (
            StorageFull,
            "PostgreSQL's disk is full; nothing was written: free space on the database server's disk, then retry"
                .to_owned(),
        ),
        c if *c == SqlState::OUT_OF_MEMORY => (Storage, "PostgreSQL ran out of memory".to_owned()),
        c if *c == SqlState::UNDEFINED_TABLE
            || *c == SqlState::UNDEFINED_FUNCTION
            || *c == SqlState::INVALID_SCHEMA_NAME
            || *c == SqlState::UNDEFINED_COLUMN =>
        {
            (
                Incompatible,
                "foldstore's tables are missing or changed; restart foldstore to create or migrate its schema"
                    .to_owned(),
            )
        }
        c if *c == SqlState::INSUFFICIENT_PRIVILEGE => (
            Storage,
            "the database user lacks a privilege on foldstore's schema; grant it".to_owned(),
        ),
        _ if class == "08" || class == "57" => lost("PostgreSQL closed the connection or is shutting down"),
        _ if class == "53" || class == "58" || class == "XX" => (
            Storage,
            format!("PostgreSQL failed (SQLSTATE {}); check the server's logs", code.code()),
        ),
        _ => (
            Internal,
            format!("unexpected PostgreSQL error (SQLSTATE {})", code.code()),
        ),
    }
}

/// Whether the whole transaction should simply be run again.
pub(crate) fn is_transient_conflict(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// Whether `e` is a unique violation of the event-id index: a concurrent append with
/// the same ids committed first.
pub(crate) fn is_duplicate_id(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some("events_id_unique")
    })
}

/// Whether `e` only says that an earlier statement of the transaction failed.
pub(crate) fn is_in_failed_transaction(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION)
}

/// The error of the connection pool, as a backend error: no statement was sent.
pub(crate) fn pool(e: deadpool_postgres::PoolError) -> BackendError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => backend(e, Effect::None),
        PoolError::Timeout(_) => BackendError::new(
            BackendErrorKind::Unavailable,
            "no PostgreSQL connection within the connect timeout (server down or pool exhausted); nothing was written",
        ),
        PoolError::Closed => BackendError::new(
            BackendErrorKind::Unavailable,
            "the store is shutting down; nothing was written",
        ),
        other => BackendError::new(
            BackendErrorKind::Internal,
            format!("the connection pool failed: {other}"),
        ),
    }
}

/// The store's background tasks are gone: it is shutting down.
pub(crate) fn closed() -> BackendError {
    BackendError::new(
        BackendErrorKind::Unavailable,
        "the store is shutting down; nothing was written",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: &str) -> BackendErrorKind {
        let lost = |what: &str| (BackendErrorKind::Unavailable, what.to_owned());
        classify(&SqlState::from_code(code), &lost).0
    }

    #[test]
    fn a_full_disk_is_storage_full_and_other_resource_errors_are_storage() {
        assert_eq!(kind("53100"), BackendErrorKind::StorageFull);
        let (_, message) = classify(&SqlState::DISK_FULL, &|w| {
            (BackendErrorKind::Unavailable, w.to_owned())
        });
        assert!(message.contains("free space"), "{message}");
        assert_eq!(kind("53200"), BackendErrorKind::Storage);
        assert_eq!(kind("53000"), BackendErrorKind::Storage);
        assert_eq!(kind("58030"), BackendErrorKind::Storage);
    }
}
