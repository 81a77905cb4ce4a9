//! The store commands (`append`, `read`, `serve`) and opening the store they work on.

pub(crate) mod append;
pub(crate) mod read;

use std::path::PathBuf;

use crate::backend::{self, Durability, Store};
use crate::cli::StoreArgs;
use crate::database_url::DatabaseLocation;
use crate::error::CliError;

/// Whether a command may create the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Create the database (and its directory) if missing.
    Create,
    /// Fail with [`CliError::NoDatabase`] if the database is missing.
    Existing,
}

/// The SQLite file `args` point at. PostgreSQL is refused for now.
pub(crate) fn sqlite_path(args: &StoreArgs) -> Result<PathBuf, CliError> {
    match DatabaseLocation::resolve(args.database.as_deref(), &args.data_dir)? {
        DatabaseLocation::Sqlite(path) => Ok(path),
        DatabaseLocation::Postgres(_) => Err(CliError::PostgresNotBuilt),
    }
}

/// Opens the store `args` point at.
pub(crate) async fn open_store(args: &StoreArgs, access: Access) -> Result<Store, CliError> {
    let mut path = sqlite_path(args)?;
    if path.is_dir() {
        path.push(crate::database_url::DATABASE_FILE);
    }
    match access {
        Access::Existing if !path.exists() => return Err(CliError::NoDatabase { path }),
        Access::Existing => {}
        Access::Create => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    CliError::io(format!("could not create directory {}", dir.display()), e)
                })?;
            }
        }
    }
    backend::open(&path, Durability::Full).await
}

/// `foldstore serve`: not built yet, and it says so rather than pretend.
pub(crate) fn serve() -> Result<(), CliError> {
    Err(CliError::ServeNotAvailable)
}
