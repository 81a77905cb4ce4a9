//! Errors of opening and closing a store, and the mapping of SQLite errors into
//! foldstore's shared [`BackendError`] kinds.

use std::path::PathBuf;

use foldstore_core::{BackendError, BackendErrorKind};
use rusqlite::ErrorCode;

/// Why a store could not be opened (or closed cleanly).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file was written by a newer foldstore, with a schema this build cannot read.
    #[error(
        "{path} was written by a newer foldstore (schema v{found}, this build reads up to v{supported}): upgrade foldstore"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The schema version stored in the file.
        found: u32,
        /// The newest schema version this build knows.
        supported: u32,
    },
    /// Another process (or another store in this process) has the database open.
    #[error(
        "{path} is already open in another process (it holds the lock on {lock_file}): stop the other process (for example a running `foldstore serve`) or use another data file"
    )]
    Locked {
        /// The database file.
        path: PathBuf,
        /// The lock file that is held.
        lock_file: PathBuf,
    },
    /// The file is an SQLite database, but not one foldstore wrote.
    #[error(
        "{path} is an SQLite database with tables that foldstore did not create: point foldstore at a new file or one it created"
    )]
    NotFoldstore {
        /// The database file.
        path: PathBuf,
    },
    /// SQLite would not switch the file to WAL mode.
    #[error(
        "cannot switch {path} to WAL mode (it stays in {mode} mode): keep the database on a local file system"
    )]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode it stayed in.
        mode: String,
    },
    /// A file or directory operation failed.
    #[error("cannot {action} {path}: {source} (check the path and its permissions)")]
    Io {
        /// What foldstore was doing.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error(
        "SQLite failed on {path} while {action}: {source} (is there free disk space, and is it a foldstore database on a healthy disk?)"
    )]
    Sqlite {
        /// What foldstore was doing.
        action: &'static str,
        /// The database file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: rusqlite::Error,
    },
    /// The store was already closed by another handle, or its writer thread stopped.
    #[error("the store at {path} is already closed")]
    Closed {
        /// The database file.
        path: PathBuf,
    },
}

/// The [`BackendErrorKind`] of an SQLite error.
pub(crate) fn kind_of(e: &rusqlite::Error) -> BackendErrorKind {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DiskFull => BackendErrorKind::StorageFull,
            ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::NoLargeFileSupport
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::OutOfMemory => BackendErrorKind::Storage,
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => BackendErrorKind::Unavailable,
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => BackendErrorKind::Incompatible,
            _ => BackendErrorKind::Internal,
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(..) => BackendErrorKind::Incompatible,
        _ => BackendErrorKind::Internal,
    }
}

/// Whether an SQLite error says the disk or the file failed in a way that leaves what
/// is on the disk in doubt: `SQLITE_IOERR` (with any of its extended codes, such as
/// `SQLITE_IOERR_FSYNC`), `SQLITE_CORRUPT`, `SQLITE_NOTADB` or `SQLITE_CANTOPEN`.
/// After such an error during a write the writer stops writing (see `failstop`); a
/// full disk ([`is_disk_full`]) and other errors (constraints, busy, bugs) fail only
/// their batch.
pub(crate) fn is_disk_failure(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if matches!(
            f.code,
            ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::CannotOpen
        )
    )
}

/// Whether an SQLite error is `SQLITE_FULL`: a write of a file got `ENOSPC` (or was
/// cut short), so the bytes were never accepted and nothing is in doubt (see
/// `failstop`).
pub(crate) fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DiskFull)
}

/// The SQLite error behind a [`BackendError`] made by [`backend`].
fn sqlite_source(e: &BackendError) -> Option<&rusqlite::Error> {
    e.source
        .as_deref()
        .and_then(|s| s.downcast_ref::<rusqlite::Error>())
}

/// The SQLite error behind a [`BackendError`] made by [`backend`], if it is a disk
/// failure ([`is_disk_failure`]).
pub(crate) fn disk_failure(e: &BackendError) -> Option<&rusqlite::Error> {
    sqlite_source(e).filter(|e| is_disk_failure(e))
}

/// The SQLite error behind a [`BackendError`] made by [`backend`], if it says the disk
/// is full ([`is_disk_full`]).
pub(crate) fn disk_full(e: &BackendError) -> Option<&rusqlite::Error> {
    sqlite_source(e).filter(|e| is_disk_full(e))
}

/// Wraps an SQLite error, saying what the store was doing.
pub(crate) fn backend(what: &str, e: rusqlite::Error) -> BackendError {
    let kind = kind_of(&e);
    let hint = match kind {
        BackendErrorKind::StorageFull => {
            "; free disk space: writes succeed again once there is room, without a restart"
        }
        BackendErrorKind::Storage => "; check the disk's health and free space",
        BackendErrorKind::Unavailable => "; the database is busy, retry later",
        BackendErrorKind::Incompatible => "; the database file is damaged or not a foldstore file",
        _ => "",
    };
    BackendError::new(kind, format!("SQLite failed while {what}: {e}{hint}")).with_source(e)
}

/// The error every request gets once the store is closed.
pub(crate) fn closed() -> BackendError {
    BackendError::new(
        BackendErrorKind::Unavailable,
        "the SQLite store is closed (or its writer stopped): open it again",
    )
}

/// Data in the file that this build cannot interpret.
pub(crate) fn incompatible(message: impl Into<String>) -> BackendError {
    BackendError::new(BackendErrorKind::Incompatible, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_unavailable_and_full_is_storage_full() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert_eq!(kind_of(&busy), BackendErrorKind::Unavailable);
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        assert_eq!(kind_of(&full), BackendErrorKind::StorageFull);
        let ioerr = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
            None,
        );
        assert_eq!(kind_of(&ioerr), BackendErrorKind::Storage);
        let full = backend("committing", full);
        assert!(full.message.contains("free disk space"), "{full}");
        assert!(disk_full(&full).is_some() && disk_failure(&full).is_none());
    }

    fn failure(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn io_errors_corrupt_notadb_and_cantopen_are_disk_failures_and_full_is_not() {
        use rusqlite::ffi;
        for code in [
            ffi::SQLITE_IOERR,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_IOERR_SHORT_READ,
            ffi::SQLITE_IOERR_SHMMAP,
            ffi::SQLITE_IOERR_SHMSIZE,
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_CORRUPT_INDEX,
            ffi::SQLITE_NOTADB,
            ffi::SQLITE_CANTOPEN,
        ] {
            assert!(is_disk_failure(&failure(code)), "code {code}");
            assert!(!is_disk_full(&failure(code)), "code {code}");
            let wrapped = backend("committing", failure(code));
            assert!(disk_failure(&wrapped).is_some(), "code {code}");
            assert!(disk_full(&wrapped).is_none(), "code {code}");
        }
        for code in [
            ffi::SQLITE_FULL,
            ffi::SQLITE_CONSTRAINT,
            ffi::SQLITE_CONSTRAINT_UNIQUE,
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_ERROR,
            ffi::SQLITE_NOMEM,
            ffi::SQLITE_READONLY,
        ] {
            assert!(!is_disk_failure(&failure(code)), "code {code}");
        }
        assert!(!is_disk_failure(&rusqlite::Error::QueryReturnedNoRows));
        // An error without an SQLite source (a refused request, a bug) is never one.
        assert!(disk_failure(&closed()).is_none());
    }
}
