//! The store commands (`append`, `read`, `tail`, `delete`, `export`, `import`,
//! `serve`, `token`), the server's persistent subscriptions (`subscriptions`), and
//! opening the store they work on.

pub(crate) mod append;
pub(crate) mod delete;
pub(crate) mod export;
pub(crate) mod import;
pub(crate) mod read;
pub(crate) mod serve;
pub(crate) mod subscriptions;
pub(crate) mod tail;
pub(crate) mod token;

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

/// Opens the store `args` point at. A PostgreSQL schema is created if missing, even
/// for [`Access::Existing`] (it is then empty).
pub(crate) async fn open_store(args: &StoreArgs, access: Access) -> Result<Store, CliError> {
    let location = DatabaseLocation::resolve(
        args.database.as_deref(),
        &args.data_dir,
        args.pg_schema.as_deref(),
        args.pg_tuning(),
    )?;
    let DatabaseLocation::Sqlite(mut path) = location else {
        return backend::open(&location, Durability::Full).await;
    };
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
    backend::open(&DatabaseLocation::Sqlite(path), Durability::Full).await
}
