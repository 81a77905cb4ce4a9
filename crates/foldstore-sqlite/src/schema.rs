//! Opening connections, their pragmas, and schema migrations.

use std::path::Path;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use crate::{Durability, OpenError, SqliteOptions};

/// The schema versions, in order: entry `i` migrates a file from version `i` to `i + 1`.
/// Version 0 is an empty file.
const MIGRATIONS: &[&str] = &[
    include_str!("sql/schema_v1.sql"),
    include_str!("sql/schema_v2.sql"),
    include_str!("sql/schema_v3.sql"),
];

/// The newest schema version this build writes and reads.
pub(crate) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Statements each connection keeps prepared: the writer's handful, and the readers'
/// query shapes (one per filter combination).
const STATEMENT_CACHE: usize = 64;

fn sqlite_err(path: &Path, action: &'static str) -> impl FnOnce(rusqlite::Error) -> OpenError {
    let path = path.to_owned();
    move |source| OpenError::Sqlite {
        action,
        path,
        source,
    }
}

/// Opens the one connection that writes, sets WAL and the durability's `synchronous`,
/// and migrates the schema.
pub(crate) fn open_writer(path: &Path, options: &SqliteOptions) -> Result<Connection, OpenError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_err(path, "opening the database"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Refuse files we must not touch before changing anything in them (WAL mode is
    // stored in the file).
    check_version(&conn, path)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(sqlite_err(path, "switching to WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NoWal {
            path: path.to_owned(),
            mode,
        });
    }
    let synchronous = match options.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous};
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA busy_timeout = 10000;
         PRAGMA cache_size = -16384;
         PRAGMA temp_store = MEMORY;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA foreign_keys = OFF;"
    ))
    .map_err(sqlite_err(path, "setting pragmas"))?;
    migrate(&conn, path)?;
    Ok(conn)
}

/// Opens a read-only connection (for the reader pool).
pub(crate) fn open_reader(path: &Path) -> Result<Connection, OpenError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_err(path, "opening a read connection"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch(
        // A small page cache and no mmap: sequential reads are served well by the OS
        // page cache, and a subscriber's memory stays small (G7).
        "PRAGMA busy_timeout = 10000;
         PRAGMA cache_size = -4096;",
    )
    .map_err(sqlite_err(path, "setting pragmas"))?;
    no_checkpoint_on_close(&conn, path)?;
    Ok(conn)
}

/// Turns off SQLite's checkpoint when the connection closes (done by whichever
/// connection to the file closes last). Only the writer checkpoints, explicitly, on
/// close, and not at all after a disk failure (see `failstop`): no other connection
/// may do it behind its back.
fn no_checkpoint_on_close(conn: &Connection, path: &Path) -> Result<(), OpenError> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map(drop)
        .map_err(sqlite_err(path, "turning off the checkpoint on close"))
}

/// Opens the connection that checkpoints the WAL in the background.
pub(crate) fn open_checkpointer(path: &Path) -> Result<Connection, OpenError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_err(path, "opening the checkpoint connection"))?;
    conn.execute_batch("PRAGMA busy_timeout = 10000; PRAGMA wal_autocheckpoint = 0;")
        .map_err(sqlite_err(path, "setting pragmas"))?;
    no_checkpoint_on_close(&conn, path)?;
    Ok(conn)
}

/// The file's schema version, if this build can open it.
fn check_version(conn: &Connection, path: &Path) -> Result<u32, OpenError> {
    let err = |action| sqlite_err(path, action);
    let found: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err("reading the schema version"))?;
    if found > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .map_err(err("inspecting the database"))?;
        if tables > 0 {
            return Err(OpenError::NotFoldstore {
                path: path.to_owned(),
            });
        }
    }
    Ok(found)
}

/// Brings the schema to [`SCHEMA_VERSION`], in one transaction; refuses newer files.
fn migrate(conn: &Connection, path: &Path) -> Result<(), OpenError> {
    let err = |action| sqlite_err(path, action);
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(err("starting the migration"))?;
    let result = (|| {
        let found = check_version(conn, path)?;
        for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            conn.execute_batch(sql)
                .map_err(err("migrating the schema"))?;
            conn.pragma_update(None, "user_version", from as u32 + 1)
                .map_err(err("migrating the schema"))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn
            .execute_batch("COMMIT")
            .map_err(err("committing the migration")),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
