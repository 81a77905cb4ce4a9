//! The one place that knows which store implementation the CLI opens: SQLite.
//!
//! Everything else goes through [`foldstore_core::EventStore`] on [`Store`].

use std::path::Path;

use foldstore_sqlite::{SqliteOptions, SqliteStore};

use crate::error::CliError;

/// The store the CLI works on.
pub(crate) type Store = SqliteStore;

/// The backend's name in benchmark reports.
pub(crate) const BACKEND: &str = "sqlite";

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

/// Opens (creating if needed) the SQLite database at `path`.
pub(crate) async fn open(path: &Path, durability: Durability) -> Result<Store, CliError> {
    let options = SqliteOptions {
        durability: match durability {
            Durability::Full => foldstore_sqlite::Durability::Full,
            Durability::Normal => foldstore_sqlite::Durability::Normal,
        },
        ..SqliteOptions::default()
    };
    Ok(SqliteStore::open(path, options).await?)
}

/// Closes the store: finishes queued writes, checkpoints, releases the lock.
pub(crate) async fn close(store: Store) -> Result<(), CliError> {
    Ok(store.close().await?)
}
