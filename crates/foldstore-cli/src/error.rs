//! The CLI's errors, each with the exit status it maps to.

use std::path::PathBuf;
use std::process::ExitCode;

use foldstore_core::{
    AppendError, DeleteError, InvalidMetadata, InvalidStreamName, ReadError, SubscriptionError,
};

use crate::database_url::DatabaseUrlError;

/// Exit status of a failed operation.
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage error (and of commands this build does not have).
pub(crate) const EXIT_USAGE: u8 = 2;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CliError {
    /// An error already written to the log (by `serve`, whose operators read the
    /// log): `main` does not print it again.
    #[error(transparent)]
    Logged(Box<CliError>),
    /// The arguments do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// `--database` could not be understood.
    #[error(transparent)]
    DatabaseUrl(#[from] DatabaseUrlError),
    /// A stream name given on the command line is invalid.
    #[error(transparent)]
    StreamName(#[from] InvalidStreamName),
    /// `--metadata` is not a JSON object.
    #[error(transparent)]
    Metadata(#[from] InvalidMetadata),
    /// A read found no database file.
    #[error("there is no database at {}: append an event first, or point --data-dir or --database at an existing store", path.display())]
    NoDatabase {
        /// The file looked for.
        path: PathBuf,
    },
    /// The SQLite store could not be opened or closed.
    #[error(transparent)]
    Open(#[from] foldstore_sqlite::OpenError),
    /// The PostgreSQL store could not connect or set up its schema.
    #[error(transparent)]
    Connect(#[from] foldstore_postgres::ConnectError),
    /// An append was refused or failed.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// A read was refused or failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A subscription ended with an error.
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    /// A file or standard stream failed.
    #[error("{what}: {source}")]
    Io {
        /// What the CLI was doing.
        what: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The benchmark cannot run here.
    #[error("{0}")]
    Bench(String),
    /// A baseline measurement with plain SQLite failed.
    #[error("baseline measurement failed while {what}: {source}")]
    Baseline {
        /// What the baseline was doing.
        what: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The raw PostgreSQL baseline failed.
    #[error("PostgreSQL baseline measurement failed while {what}: {source}")]
    PgBaseline {
        /// What the baseline was doing.
        what: &'static str,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
    /// The persistent subscriptions could not be opened (their settings are read from
    /// the store).
    #[error("could not open the persistent subscriptions: {0}")]
    Persistent(#[from] foldstore_core::persistent::PersistentError),
    /// A delete was refused or failed.
    #[error(transparent)]
    Delete(#[from] DeleteError),
    /// The server answered with a problem.
    #[error("the server refused ({status} {code}): {detail}")]
    Remote {
        /// The HTTP status.
        status: u16,
        /// The problem's stable code.
        code: String,
        /// What to fix, as the server says.
        detail: String,
        /// The whole problem body (for members such as `actual`).
        body: serde_json::Value,
    },
    /// The server could not be reached or the connection broke.
    #[error(
        "could not talk to the server at {server}: {source}; is `foldstore serve` running there (check --server)?"
    )]
    Unreachable {
        /// The `--server` URL.
        server: String,
        /// The failure.
        #[source]
        source: reqwest::Error,
    },
    /// The server's answer, or a file being imported, is not what foldstore writes.
    #[error("{0}")]
    Protocol(String),
    /// The tokens file given to `serve` cannot be used.
    #[error(transparent)]
    TokensFile(#[from] foldstore_server::auth::TokensFileError),
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] foldstore_server::TlsError),
}

impl CliError {
    /// An I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// The process exit status for this error.
    pub(crate) fn exit_code(&self) -> ExitCode {
        if let CliError::Logged(inner) = self {
            return inner.exit_code();
        }
        ExitCode::from(match self {
            CliError::Usage(_)
            | CliError::DatabaseUrl(_)
            | CliError::StreamName(_)
            | CliError::Metadata(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        })
    }
}
