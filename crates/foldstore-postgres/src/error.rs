//! Errors of connecting, and the mapping of PostgreSQL errors to backend error kinds.

use foldstore_core::{BackendError, BackendErrorKind};
use tokio_postgres::error::SqlState;

/// Why [`crate::PostgresStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL did not parse.
    #[error(
        "the database URL is invalid ({reason}): use postgres://user:password@host:port/database"
    )]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// An option is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The schema name is not one foldstore accepts.
    #[error(
        "schema name {0:?} is invalid: use lower-case letters, digits and `_`, starting with a letter or `_`, at most 40 bytes"
    )]
    InvalidSchemaName(String),
    /// The URL asks for TLS (`sslmode=require`), which foldstore's PostgreSQL
    /// connections do not speak.
    #[error(
        "the database URL asks for TLS (sslmode=require), but foldstore connects to PostgreSQL without TLS: drop sslmode (or use sslmode=disable) where the network is trusted, or reach the server through a TLS tunnel such as stunnel or ssh -L"
    )]
    TlsNotSupported,
    /// Nothing accepts connections at the address (connection refused).
    #[error(
        "could not connect to PostgreSQL at {server}: connection refused, nothing listens there. Start PostgreSQL, or fix the host and port in the URL (the server's listen_addresses and port settings say where it listens)"
    )]
    ConnectionRefused {
        /// `host:port` (or socket path) tried.
        server: String,
    },
    /// The host name does not resolve to an address.
    #[error(
        "could not connect to PostgreSQL: the host name {host:?} does not resolve ({reason}): fix the host in the URL, or check DNS and /etc/hosts"
    )]
    UnknownHost {
        /// The host name in the URL.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// No answer within the connect timeout: the address drops packets, or the server
    /// accepted the connection but never answered.
    #[error(
        "could not connect to PostgreSQL at {server}: no answer within {after:?}: check the host and port in the URL, that no firewall drops the connection, and that the server is not stuck or overloaded"
    )]
    Timeout {
        /// `host:port` (or socket path) tried.
        server: String,
        /// The connect timeout.
        after: std::time::Duration,
    },
    /// The address could not be reached for another network reason (no route, network
    /// down).
    #[error(
        "could not connect to PostgreSQL at {server}: {reason}: check the network path to it and the host and port in the URL"
    )]
    Unreachable {
        /// `host:port` (or socket path) tried.
        server: String,
        /// The operating system's error.
        reason: String,
    },
    /// The database named in the URL does not exist on the server (SQLSTATE 3D000).
    #[error(
        "database {database:?} does not exist on the PostgreSQL server at {server}: create it (`createdb {database}`, or `psql -c 'CREATE DATABASE \"{database}\"'`, as a user allowed to create databases), or fix the database name in the URL (postgres://user@host:port/DATABASE)"
    )]
    DatabaseMissing {
        /// The database.
        database: String,
        /// `host:port` (or socket path) of the server.
        server: String,
    },
    /// The user named in the URL is not a role of the server (SQLSTATE 28000).
    #[error(
        "role {user:?} does not exist on the PostgreSQL server at {server}: create it (`createuser {user}`, or `psql -c 'CREATE ROLE \"{user}\" LOGIN'`, as a superuser; add PASSWORD '...' if the server asks for passwords), or fix the user in the URL (postgres://USER@host:port/database)"
    )]
    RoleMissing {
        /// The role.
        user: String,
        /// `host:port` (or socket path) of the server.
        server: String,
    },
    /// The role exists but may not log in (SQLSTATE 28000).
    #[error(
        "role {user:?} may not log in to the PostgreSQL server at {server}: allow it (`psql -c 'ALTER ROLE \"{user}\" LOGIN'` as a superuser), or connect as another user"
    )]
    LoginNotAllowed {
        /// The role.
        user: String,
        /// `host:port` (or socket path) of the server.
        server: String,
    },
    /// The server rejected the password (SQLSTATE 28P01).
    #[error(
        "PostgreSQL at {server} rejected the password of user {user:?}: put the right password in the URL (postgres://user:PASSWORD@host:port/database, with special characters percent-encoded), or set one with `ALTER ROLE \"{user}\" PASSWORD '...'`"
    )]
    PasswordRejected {
        /// The role.
        user: String,
        /// `host:port` (or socket path) of the server.
        server: String,
    },
    /// The server asks for a password and the URL has none.
    #[error(
        "PostgreSQL at {server} asks user {user:?} for a password and the URL has none: put it in the URL (postgres://user:PASSWORD@host:port/database)"
    )]
    PasswordMissing {
        /// The role.
        user: String,
        /// `host:port` (or socket path) of the server.
        server: String,
    },
    /// The server wants an authentication method foldstore cannot use.
    #[error(
        "PostgreSQL at {server} wants an authentication method for user {user:?} that foldstore cannot use ({reason}): set the user's method in the server's pg_hba.conf to scram-sha-256, md5, password or trust"
    )]
    AuthMethodUnsupported {
        /// The role.
        user: String,
        /// `host:port` (or socket path) of the server.
        server: String,
        /// What the client library said.
        reason: String,
    },
    /// The server's access rules refused the connection (SQLSTATE 28000 from
    /// pg_hba.conf, or a failed peer or ident check).
    #[error(
        "PostgreSQL at {server} refused user {user:?} on database {database:?} ({message}): add a `host` line allowing this user, database and address to the server's pg_hba.conf and reload it (`SELECT pg_reload_conf()`), or connect as a user it allows. foldstore connects without TLS, so `hostssl` lines never match it"
    )]
    AccessDenied {
        /// The role.
        user: String,
        /// The database.
        database: String,
        /// `host:port` (or socket path) of the server.
        server: String,
        /// The server's message.
        message: String,
    },
    /// Every connection slot of the server is taken (SQLSTATE 53300).
    #[error(
        "PostgreSQL at {server} has no free connection ({message}): close idle connections, lower this store's pool size (it opens up to pool_size + 3 connections), or raise max_connections on the server"
    )]
    TooManyConnections {
        /// `host:port` (or socket path) of the server.
        server: String,
        /// The server's message.
        message: String,
    },
    /// The server is starting up, shutting down or recovering (SQLSTATE 57P03).
    #[error(
        "PostgreSQL at {server} does not accept connections now ({message}): wait until it has started (or point the URL at a running server) and start foldstore again"
    )]
    ServerNotReady {
        /// `host:port` (or socket path) of the server.
        server: String,
        /// The server's message.
        message: String,
    },
    /// Connecting failed for another reason.
    #[error(
        "could not connect to PostgreSQL at {server} ({reason}): check that it is running, that the URL's host, port, user and database are right, and that the user may log in"
    )]
    Connect {
        /// `host:port` (or socket path) tried.
        server: String,
        /// What failed.
        reason: String,
    },
    /// A query of the start-up checks failed after the connection was made.
    #[error("connected to PostgreSQL, but {step} failed: {error}")]
    Setup {
        /// What the store was doing.
        step: &'static str,
        /// The failure (not a `source`: the message already includes it).
        error: BackendError,
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
///
/// The kind's own text already says whether anything was written (see
/// [`BackendErrorKind`]), so messages say only what happened.
pub(crate) fn backend(e: tokio_postgres::Error, effect: Effect) -> BackendError {
    let lost = |what: &str| match effect {
        Effect::None => (BackendErrorKind::Unavailable, what.to_owned()),
        Effect::Unknown => (
            BackendErrorKind::OutcomeUnknown,
            format!("{what} during commit"),
        ),
    };
    let (kind, message) = match e.as_db_error() {
        None if e.is_closed() => lost("the connection to PostgreSQL was lost"),
        None => lost(&format!(
            "PostgreSQL could not be reached ({})",
            crate::connect::chain(&e)
        )),
        Some(db) => classify(db.code(), db.message(), &lost),
    };
    BackendError::new(kind, message).with_source(e)
}

/// The kind and message of a server error, from its SQLSTATE and the server's own
/// message; `lost` words a lost connection.
fn classify(
    code: &SqlState,
    server_message: &str,
    lost: &dyn Fn(&str) -> (BackendErrorKind, String),
) -> (BackendErrorKind, String) {
    use BackendErrorKind::*;
    let class = &code.code()[..2];
    match code {
        c if *c == SqlState::QUERY_CANCELED => (
            Unavailable,
            "the statement timed out (statement_timeout) or was cancelled".to_owned(),
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
        // A new pooled connection refused: the database or role went away, or the
        // server is starting or stopping. Connecting again may work once fixed.
        _ if class == "28" || class == "3D" => (
            Unavailable,
            format!(
                "PostgreSQL refused a new connection: {} (SQLSTATE {}); fix the URL's user or database, or create them on the server",
                server_message,
                code.code()
            ),
        ),
        c if *c == SqlState::CANNOT_CONNECT_NOW => (
            Unavailable,
            format!("PostgreSQL does not accept connections now: {}", server_message),
        ),
        _ if class == "08" || class == "57" => lost("PostgreSQL closed the connection or is shutting down"),
        _ if class == "53" || class == "58" || class == "XX" => (
            Storage,
            format!("PostgreSQL failed (SQLSTATE {}); check the server's logs", code.code()),
        ),
        _ => (
            Internal,
            format!(
                "unexpected PostgreSQL error: {} (SQLSTATE {})",
                server_message,
                code.code()
            ),
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
    use deadpool_postgres::{PoolError, TimeoutType};
    match e {
        PoolError::Backend(e) => backend(e, Effect::None),
        PoolError::Timeout(TimeoutType::Wait) => BackendError::new(
            BackendErrorKind::Unavailable,
            "every pooled PostgreSQL connection stayed busy for the connect timeout; raise the pool size if this persists",
        ),
        PoolError::Timeout(TimeoutType::Create | TimeoutType::Recycle) => BackendError::new(
            BackendErrorKind::Unavailable,
            "PostgreSQL did not answer a new connection within the connect timeout (the server is down, unreachable or stuck)",
        ),
        PoolError::Closed => {
            BackendError::new(BackendErrorKind::Unavailable, "the store is shutting down")
        }
        other => BackendError::new(
            BackendErrorKind::Internal,
            format!("the connection pool failed: {other}"),
        ),
    }
}

/// The store's background tasks are gone: it is shutting down.
pub(crate) fn closed() -> BackendError {
    BackendError::new(BackendErrorKind::Unavailable, "the store is shutting down")
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadpool_postgres::{PoolError, TimeoutType};

    /// The kind's text says that nothing was written; the message must not say it
    /// again.
    #[test]
    fn unavailable_says_nothing_was_written_once() {
        for e in [
            pool(PoolError::Closed),
            pool(PoolError::Timeout(TimeoutType::Wait)),
            pool(PoolError::Timeout(TimeoutType::Create)),
            closed(),
        ] {
            let text = e.to_string();
            assert_eq!(e.kind, BackendErrorKind::Unavailable);
            assert_eq!(text.matches("nothing was written").count(), 1, "{text}");
        }
        let busy = pool(PoolError::Timeout(TimeoutType::Wait)).to_string();
        assert!(busy.contains("busy"), "{busy}");
        let silent = pool(PoolError::Timeout(TimeoutType::Create)).to_string();
        assert!(silent.contains("did not answer"), "{silent}");
    }

    fn kind(code: &str) -> BackendErrorKind {
        let lost = |what: &str| (BackendErrorKind::Unavailable, what.to_owned());
        classify(&SqlState::from_code(code), "", &lost).0
    }

    #[test]
    fn a_full_disk_is_storage_full_and_other_resource_errors_are_storage() {
        assert_eq!(kind("53100"), BackendErrorKind::StorageFull);
        let (_, message) = classify(&SqlState::DISK_FULL, "", &|w| {
            (BackendErrorKind::Unavailable, w.to_owned())
        });
        assert!(message.contains("free space"), "{message}");
        assert_eq!(kind("53200"), BackendErrorKind::Storage);
        assert_eq!(kind("53000"), BackendErrorKind::Storage);
        assert_eq!(kind("58030"), BackendErrorKind::Storage);
    }
}
