//! Same-run baselines: what the disk and plain SQLite manage on this machine, now, in
//! the benchmark's own directory. A store's figures mean little without them.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use serde::Serialize;

use super::payload::{STREAMS, event_data};
use crate::error::CliError;

/// How long the fsync loop runs.
const FSYNC_TIME: Duration = Duration::from_secs(1);
/// How long the one-row-per-transaction insert loop runs.
const TX1_TIME: Duration = Duration::from_millis(1500);
/// How long the 1,000-rows-per-transaction insert loop runs.
const TX1000_TIME: Duration = Duration::from_secs(2);

/// Set on Ctrl-C: the measuring loops stop at their next iteration, so that the
/// benchmark directory can be removed.
pub(crate) static STOP: AtomicBool = AtomicBool::new(false);

fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// The baselines of one run.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Baselines {
    /// 256-byte appends each followed by `fdatasync`, per second.
    pub(crate) fsync_per_sec: f64,
    /// Plain rusqlite (WAL, synchronous=FULL), one ~250-byte row per transaction: rows/s.
    pub(crate) raw_insert_tx1_per_sec: f64,
    /// The same with 1,000 rows per transaction: rows/s.
    pub(crate) raw_insert_tx1000_per_sec: f64,
    /// 1,000 rows per transaction into a table that also enforces what every event
    /// store must: a unique event id and a unique (stream, revision). Rows/s. This is
    /// SQLite's own ceiling for event rows; `raw_insert_tx1000_per_sec` (no secondary
    /// index) is the ceiling for rows of any kind.
    pub(crate) raw_insert_indexed_tx1000_per_sec: f64,
}

/// Measures every baseline in `dir`, removing the files it made.
pub(crate) fn measure(dir: &Path) -> Result<Baselines, CliError> {
    let fsync_per_sec = fsync_rate(dir)?;
    let db = dir.join("baseline-raw.db");
    let result = raw_insert_rates(&db);
    remove_database(&db);
    let (raw_insert_tx1_per_sec, raw_insert_tx1000_per_sec) = result?;
    let db = dir.join("baseline-indexed.db");
    let result = raw_indexed_insert_rate(&db);
    remove_database(&db);
    Ok(Baselines {
        fsync_per_sec,
        raw_insert_tx1_per_sec,
        raw_insert_tx1000_per_sec,
        raw_insert_indexed_tx1000_per_sec: result?,
    })
}

fn remove_database(db: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = db.to_path_buf().into_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
}

fn open_durable(db: &Path) -> Result<Connection, CliError> {
    let fail = |what| move |source| CliError::Baseline { what, source };
    let conn = Connection::open(db).map_err(fail("opening the database"))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(fail("setting journal_mode=WAL"))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(fail("setting synchronous=FULL"))?;
    Ok(conn)
}

/// Rows per second, 1,000 per transaction, into a table with a unique event id
/// (16-byte time-ordered UUIDs, as foldstore generates) and a unique (stream, revision).
fn raw_indexed_insert_rate(db: &Path) -> Result<f64, CliError> {
    let fail = |what| move |source| CliError::Baseline { what, source };
    let mut conn = open_durable(db)?;
    conn.execute_batch(
        "CREATE TABLE events (
            position INTEGER PRIMARY KEY,
            stream TEXT NOT NULL,
            revision INTEGER NOT NULL,
            id BLOB NOT NULL UNIQUE,
            event_type TEXT NOT NULL,
            data BLOB NOT NULL,
            UNIQUE (stream, revision)
        );",
    )
    .map_err(fail("creating the indexed table"))?;
    let mut revisions = vec![0u64; STREAMS];
    let mut seq = 0u64;
    let start = Instant::now();
    let mut rows = 0u64;
    while start.elapsed() < TX1000_TIME {
        if stopped() {
            return Err(CliError::Interrupted);
        }
        let tx = conn
            .transaction()
            .map_err(fail("beginning a transaction"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO events (stream, revision, id, event_type, data)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(fail("preparing the insert"))?;
            for _ in 0..1000 {
                seq += 1;
                let s = (seq % STREAMS as u64) as usize;
                let id = uuid::Uuid::now_v7();
                stmt.execute(params![
                    format!("bench-{s}"),
                    revisions[s],
                    id.as_bytes().as_slice(),
                    "Deposited",
                    event_data(seq, 0)
                ])
                .map_err(fail("inserting"))?;
                revisions[s] += 1;
            }
        }
        tx.commit().map_err(fail("committing"))?;
        rows += 1000;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

/// Appends 256 bytes and calls `sync_data`, in a loop, for [`FSYNC_TIME`].
fn fsync_rate(dir: &Path) -> Result<f64, CliError> {
    let path = dir.join("baseline-fsync.bin");
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |e| CliError::io(what, e)
    };
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io("could not create"))?;
    let block = [b'x'; 256];
    let start = Instant::now();
    let mut count = 0u64;
    let result = loop {
        if let Err(e) = file.write_all(&block).and_then(|()| file.sync_data()) {
            break Err(io("could not write and sync")(e));
        }
        count += 1;
        if stopped() {
            break Err(CliError::Interrupted);
        }
        if start.elapsed() >= FSYNC_TIME {
            break Ok(count as f64 / start.elapsed().as_secs_f64());
        }
    };
    drop(file);
    let _ = std::fs::remove_file(&path);
    result
}

/// Rows per second inserted by plain rusqlite, one row per transaction, then 1,000.
fn raw_insert_rates(db: &Path) -> Result<(f64, f64), CliError> {
    let fail = |what| move |source| CliError::Baseline { what, source };
    let mut conn = open_durable(db)?;
    conn.execute_batch(
        "CREATE TABLE events (
            position INTEGER PRIMARY KEY,
            stream TEXT NOT NULL,
            event_type TEXT NOT NULL,
            data BLOB NOT NULL
        );",
    )
    .map_err(fail("creating the table"))?;
    let mut seq = 0u64;
    let mut insert_for = |rows_per_tx: u64, time: Duration| -> Result<f64, CliError> {
        let start = Instant::now();
        let mut rows = 0u64;
        while start.elapsed() < time {
            if stopped() {
                return Err(CliError::Interrupted);
            }
            let tx = conn
                .transaction()
                .map_err(fail("beginning a transaction"))?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO events (stream, event_type, data) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(fail("preparing the insert"))?;
                for _ in 0..rows_per_tx {
                    seq += 1;
                    let stream = format!("bench-{}", seq % STREAMS as u64);
                    stmt.execute(params![stream, "Deposited", event_data(seq, 0)])
                        .map_err(fail("inserting"))?;
                }
            }
            tx.commit().map_err(fail("committing"))?;
            rows += rows_per_tx;
        }
        Ok(rows as f64 / start.elapsed().as_secs_f64())
    };
    let tx1 = insert_for(1, TX1_TIME)?;
    let tx1000 = insert_for(1000, TX1000_TIME)?;
    Ok((tx1, tx1000))
}
