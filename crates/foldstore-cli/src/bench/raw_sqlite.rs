//! Plain rusqlite inserting the benchmark's rows, with no foldstore code running: the
//! SQLite baselines. A [`RawTable`] keeps its connection and its rows' state between
//! calls, so a baseline can run in one go or take turns with the store
//! ([`super::interleave`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use super::baseline::{remove_database, stopped};
use super::payload::{STREAMS, event_data};
use crate::error::CliError;

/// What a raw table looks like.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// A row id, the stream name, the type and the data: no secondary index.
    Plain,
    /// `Plain` plus a unique 16-byte event id and a unique (stream, revision): what
    /// every event store must enforce.
    Indexed,
    /// The store's own schema, in a database made by opening a `SqliteStore`
    /// ([`make_store_schema`]): the same table and the same indexes.
    StoreSchema,
}

/// A raw baseline's database, open for more transactions.
pub(crate) struct RawTable {
    conn: Connection,
    shape: Shape,
    /// Rows inserted so far: numbers the rows and picks their streams.
    rows: u64,
    /// The next revision of each stream, for the shapes that store one.
    revisions: Vec<i64>,
}

fn fail(what: &'static str) -> impl Fn(rusqlite::Error) -> CliError {
    move |source| CliError::Baseline { what, source }
}

/// Opens `db` as the store does by default: WAL, every commit fsynced.
fn open_durable(db: &Path) -> Result<Connection, CliError> {
    let conn = Connection::open(db).map_err(fail("opening the database"))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(fail("setting journal_mode=WAL"))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(fail("setting synchronous=FULL"))?;
    Ok(conn)
}

/// Makes `dir/<name>` a fresh database with the store's own schema, by opening and
/// closing a `SqliteStore` there. Removes it again if that fails.
pub(crate) async fn make_store_schema(dir: &Path, name: &str) -> Result<PathBuf, CliError> {
    let db = dir.join(name);
    let made = async {
        let store = foldstore_sqlite::SqliteStore::open(&db, Default::default()).await?;
        store.close().await
    };
    if let Err(e) = made.await {
        remove_database(&db);
        return Err(CliError::Bench(format!(
            "making the store's schema for the raw baseline failed: {e}"
        )));
    }
    Ok(db)
}

impl RawTable {
    /// A new table without secondary indexes in the new database `db`.
    pub(crate) fn plain(db: &Path) -> Result<Self, CliError> {
        let conn = open_durable(db)?;
        conn.execute_batch(
            "CREATE TABLE events (
                position INTEGER PRIMARY KEY,
                stream TEXT NOT NULL,
                event_type TEXT NOT NULL,
                data BLOB NOT NULL
            );",
        )
        .map_err(fail("creating the table"))?;
        Ok(Self::new(conn, Shape::Plain))
    }

    /// A new table with a unique event id (time-ordered UUIDs, as foldstore makes) and
    /// a unique (stream, revision), in the new database `db`.
    pub(crate) fn indexed(db: &Path) -> Result<Self, CliError> {
        let conn = open_durable(db)?;
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
        Ok(Self::new(conn, Shape::Indexed))
    }

    /// The store's events table in `db` (see [`make_store_schema`]), with the
    /// benchmark's streams inserted first (not measured: the schema checks its foreign
    /// keys), so that no row measured touches the streams table.
    pub(crate) fn store_schema(db: &Path) -> Result<Self, CliError> {
        let mut conn = open_durable(db)?;
        let tx = conn
            .transaction()
            .map_err(fail("beginning a transaction"))?;
        tx.execute(
            "INSERT INTO categories (category_id, name) VALUES (1, 'bench')",
            [],
        )
        .map_err(fail("inserting the category"))?;
        for s in 0..STREAMS {
            tx.execute(
                "INSERT INTO streams (stream_id, name, category_id, group_hash) VALUES (?1, ?2, 1, 0)",
                params![s as i64 + 1, format!("bench-{s}")],
            )
            .map_err(fail("inserting the streams"))?;
        }
        tx.commit().map_err(fail("committing the streams"))?;
        Ok(Self::new(conn, Shape::StoreSchema))
    }

    fn new(conn: Connection, shape: Shape) -> Self {
        Self {
            conn,
            shape,
            rows: 0,
            revisions: vec![0; STREAMS],
        }
    }

    /// Rows per second over transactions of `rows_per_tx` rows run for `time`.
    pub(crate) fn rate(&mut self, rows_per_tx: u64, time: Duration) -> Result<f64, CliError> {
        let (rows, took) = self.insert_for(rows_per_tx, time)?;
        Ok(rows as f64 / took.as_secs_f64().max(1e-9))
    }

    /// Runs durable transactions of `rows_per_tx` rows until `time` has passed (at
    /// least one): the rows inserted and the time they took. In the store's schema,
    /// each transaction is one append: `rows_per_tx` events of one stream.
    pub(crate) fn insert_for(
        &mut self,
        rows_per_tx: u64,
        time: Duration,
    ) -> Result<(u64, Duration), CliError> {
        let sql = match self.shape {
            Shape::Plain => "INSERT INTO events (stream, event_type, data) VALUES (?1, ?2, ?3)",
            Shape::Indexed => {
                "INSERT INTO events (stream, revision, id, event_type, data)
                 VALUES (?1, ?2, ?3, ?4, ?5)"
            }
            Shape::StoreSchema => {
                "INSERT INTO events (stream_id, revision, category_id, id_hi, id_lo, \
                 event_type, content_type, data, metadata, recorded_at, tags) \
                 VALUES (?1, ?2, 1, ?3, ?4, 'Deposited', NULL, ?5, '{}', ?6, NULL)"
            }
        };
        let Self {
            conn,
            shape,
            rows,
            revisions,
        } = self;
        let start = Instant::now();
        let mut inserted = 0u64;
        loop {
            if stopped() {
                return Err(CliError::Interrupted);
            }
            let tx = conn
                .transaction()
                .map_err(fail("beginning a transaction"))?;
            {
                let mut stmt = tx
                    .prepare_cached(sql)
                    .map_err(fail("preparing the insert"))?;
                // One stream per transaction; rows of the indexed shape go to every
                // stream in turn (as that baseline always did).
                let tx_stream = ((*rows / rows_per_tx) % STREAMS as u64) as usize;
                for _ in 0..rows_per_tx {
                    *rows += 1;
                    let s = match shape {
                        Shape::Indexed => (*rows % STREAMS as u64) as usize,
                        _ => tx_stream,
                    };
                    let data = event_data(*rows, 0);
                    match shape {
                        Shape::Plain => stmt.execute(params![
                            format!("bench-{}", *rows % STREAMS as u64),
                            "Deposited",
                            data
                        ]),
                        Shape::Indexed => stmt.execute(params![
                            format!("bench-{s}"),
                            revisions[s],
                            uuid::Uuid::now_v7().as_bytes().as_slice(),
                            "Deposited",
                            data
                        ]),
                        Shape::StoreSchema => {
                            let (hi, lo) = uuid::Uuid::now_v7().as_u64_pair();
                            stmt.execute(params![
                                s as i64 + 1,
                                revisions[s],
                                hi as i64,
                                lo as i64,
                                data,
                                chrono::Utc::now().timestamp_micros()
                            ])
                        }
                    }
                    .map_err(fail("inserting"))?;
                    revisions[s] += 1;
                }
            }
            tx.commit().map_err(fail("committing"))?;
            inserted += rows_per_tx;
            if start.elapsed() >= time {
                return Ok((inserted, start.elapsed()));
            }
        }
    }
}
