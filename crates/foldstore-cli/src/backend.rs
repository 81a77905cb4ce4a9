//! The one place that knows which store implementation the CLI opens.
//!
//! Everything else goes through [`foldstore_core::EventStore`] on [`Store`].
//!
//! TEMPORARY: until `foldstore_sqlite::SqliteStore` exists, this opens an
//! [`InMemoryStore`] (nothing persists between invocations) and says so on stderr.

use std::path::Path;

use foldstore_core::InMemoryStore;

use crate::error::CliError;

/// The store the CLI works on.
pub(crate) type Store = InMemoryStore;

/// The backend's name in benchmark reports.
pub(crate) const BACKEND: &str = "memory";

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
    let _ = (path, durability);
    eprintln!(
        "warning: the SQLite backend is not built into this foldstore yet; using an in-memory store, so nothing is saved"
    );
    Ok(InMemoryStore::new())
}

/// Closes the store, waiting for the writer to finish.
pub(crate) async fn close(store: Store) -> Result<(), CliError> {
    drop(store);
    Ok(())
}
