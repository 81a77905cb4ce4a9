//! Same-run baselines: what the disk and plain SQLite manage on this machine, now, in
//! the benchmark's own directory, and on PostgreSQL runs what plain PostgreSQL manages
//! in the run's schema. A store's figures mean little without them.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use serde::Serialize;
use tokio_postgres::types::Type;

use super::payload::{STREAMS, event_data};
use super::raw_sqlite::{RawTable, make_store_schema};
use crate::backend::{self, Durability};
use crate::database_url::{DatabaseLocation, PgTuning};
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

pub(crate) fn stopped() -> bool {
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
    /// The indexed table again, one row per transaction: rows/s. Each commit writes a
    /// page of every index besides the table's, so this shows what SQLite itself
    /// costs a one-event append.
    pub(crate) raw_insert_indexed_tx1_per_sec: f64,
    /// PostgreSQL runs only: plain single-row `INSERT` transactions (~250-byte rows)
    /// into a table with only a `bigserial` key, from `raw_pg_connections` connections
    /// at once, in the run's schema: rows/s. Null on SQLite.
    pub(crate) raw_pg_insert_per_sec: Option<f64>,
    /// Connections of that baseline: the run's concurrency, at most
    /// [`PG_MAX_CONNECTIONS`].
    pub(crate) raw_pg_connections: Option<u32>,
}

/// Measures every baseline in `dir`, removing the files it made.
pub(crate) fn measure(dir: &Path) -> Result<Baselines, CliError> {
    let fsync_per_sec = fsync_rate(dir)?;
    // One row per transaction, then 1,000, into each table.
    let both = |table: Result<RawTable, CliError>| {
        table.and_then(|mut t| Ok((t.rate(1, TX1_TIME)?, t.rate(1000, TX1000_TIME)?)))
    };
    let db = dir.join("baseline-raw.db");
    let result = both(RawTable::plain(&db));
    remove_database(&db);
    let (raw_insert_tx1_per_sec, raw_insert_tx1000_per_sec) = result?;
    let db = dir.join("baseline-indexed.db");
    let result = both(RawTable::indexed(&db));
    remove_database(&db);
    let (raw_insert_indexed_tx1_per_sec, raw_insert_indexed_tx1000_per_sec) = result?;
    Ok(Baselines {
        fsync_per_sec,
        raw_insert_tx1_per_sec,
        raw_insert_tx1000_per_sec,
        raw_insert_indexed_tx1000_per_sec,
        raw_insert_indexed_tx1_per_sec,
        raw_pg_insert_per_sec: None,
        raw_pg_connections: None,
    })
}

/// How long the raw PostgreSQL insert loop runs.
const PG_TIME: Duration = Duration::from_secs(2);
/// The most connections the raw PostgreSQL baseline opens (PostgreSQL's default
/// `max_connections` is 100, and the store needs some too).
pub(crate) const PG_MAX_CONNECTIONS: u32 = 64;

/// What the raw PostgreSQL baseline measured.
#[derive(Debug)]
pub(crate) struct PgBaseline {
    /// Single-row insert transactions per second over all connections.
    pub(crate) inserts_per_sec: f64,
    /// Connections used.
    pub(crate) connections: u32,
    /// The server's `synchronous_commit` for this session (`on` means each commit
    /// waits for its WAL flush).
    pub(crate) synchronous_commit: String,
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    // The connection task ends when the client is dropped.
    tokio::spawn(connection);
    Ok(client)
}

/// Measures single-row `INSERT` transactions into a plain table in `schema` (created
/// if missing; the table is dropped afterwards) with `concurrency` connections, at
/// most [`PG_MAX_CONNECTIONS`], for [`PG_TIME`].
pub(crate) async fn measure_pg(
    url: &str,
    schema: &str,
    concurrency: u32,
) -> Result<PgBaseline, CliError> {
    let fail = |what| move |source| CliError::PgBaseline { what, source };
    let setup = pg_connect(url).await.map_err(fail("connecting"))?;
    let table = format!("\"{schema}\".raw_baseline");
    setup
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE {table} (id bigserial PRIMARY KEY, stream text NOT NULL, data bytea NOT NULL)"
        ))
        .await
        .map_err(fail("creating the table"))?;
    let synchronous_commit: String = setup
        .query_one("SHOW synchronous_commit", &[])
        .await
        .map_err(fail("reading synchronous_commit"))?
        .get(0);
    let connections = concurrency.clamp(1, PG_MAX_CONNECTIONS);
    let sql = format!("INSERT INTO {table} (stream, data) VALUES ($1, $2)");
    let inserts_per_sec = pg_rate(
        url,
        &sql,
        connections,
        |t, client, insert, deadline| async move {
            let mut seq = (t as u64) << 40;
            let mut rows = 0u64;
            while Instant::now() < deadline && !stopped() {
                seq += 1;
                let stream = format!("bench-{}", seq % STREAMS as u64);
                client
                    .execute(&insert, &[&stream, &event_data(seq, 0)])
                    .await?;
                rows += 1;
            }
            Ok(rows)
        },
    )
    .await?;
    setup
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .map_err(fail("dropping the table"))?;
    Ok(PgBaseline {
        inserts_per_sec,
        connections,
        synchronous_commit,
    })
}

/// Drops `schema` and everything in it, if it exists.
///
/// After Ctrl-C the append tasks may still be committing: `DROP SCHEMA` then takes
/// its locks in another order than they do and can be chosen as the deadlock victim,
/// so a deadlock is retried.
pub(crate) async fn drop_pg_schema(url: &str, schema: &str) -> Result<(), tokio_postgres::Error> {
    let client = pg_connect(url).await?;
    let sql = format!("SET lock_timeout = '30s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    let mut attempts = 0;
    loop {
        match client.batch_execute(&sql).await {
            Err(e)
                if attempts < 10
                    && e.code()
                        == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
            {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result => return result,
        }
    }
}

/// Removes a baseline database and its side files (the `.lock` file is the store's,
/// for the one made by opening a `SqliteStore`).
pub(crate) fn remove_database(db: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal", ".lock"] {
        let mut name = db.to_path_buf().into_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
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

/// Events per transaction of `append-batch`'s schema baselines: its append size.
const SCHEMA_BASELINE_BATCH: u64 = 100;

/// The schema baselines on SQLite: plain rusqlite inserting the benchmark's rows into a
/// fresh database with the store's own schema (made by opening and closing a
/// `SqliteStore` there: the same tables and the same indexes), `per_tx` rows of one
/// stream per durable transaction: 100 for `append-batch` (for [`TX1000_TIME`]), 1 for
/// `append-1` (for [`TX1_TIME`]). No foldstore code runs while it is measured, and no
/// stream row is updated, so this is what SQLite itself costs the events. Rows/s.
pub(crate) async fn raw_schema_rate(dir: &Path, per_tx: u64) -> Result<f64, CliError> {
    let db = make_store_schema(dir, "baseline-schema.db").await?;
    let path = db.clone();
    let time = if per_tx == 1 { TX1_TIME } else { TX1000_TIME };
    let result = tokio::task::spawn_blocking(move || {
        RawTable::store_schema(&path).and_then(|mut t| t.rate(per_tx, time))
    })
    .await
    .map_err(|e| CliError::Bench(format!("the raw schema baseline failed: {e}")));
    remove_database(&db);
    result?
}

/// `append-batch`'s baseline on PostgreSQL: tokio-postgres inserting the same rows
/// into a fresh copy of the store's own schema (`<bench_schema>_raw`, made by opening a
/// `PostgresStore` there, so the same table, indexes and sequence, and dropped
/// afterwards whatever happens), 100 rows of one stream per transaction, one
/// `INSERT ... SELECT FROM unnest(...)` each, from `concurrency` connections (at most
/// [`PG_MAX_CONNECTIONS`]) for [`PG_TIME`]. No foldstore code runs while it is
/// measured, and no stream row is updated: this is what PostgreSQL itself costs
/// `append-batch`'s event rows. Rows/s over all connections.
pub(crate) async fn raw_pg_schema_tx100_rate(
    url: &str,
    bench_schema: &str,
    tuning: PgTuning,
    concurrency: u32,
) -> Result<f64, CliError> {
    let schema = format!("{bench_schema}_raw");
    let fresh = DatabaseLocation::Postgres {
        url: url.to_owned(),
        schema: schema.clone(),
        tuning,
    };
    let measured = async {
        backend::close(backend::open(&fresh, Durability::Full).await?).await?;
        raw_pg_schema_inserts(url, &schema, concurrency).await
    }
    .await;
    if let Err(e) = drop_pg_schema(url, &schema).await {
        eprintln!(
            "warning: could not drop the baseline schema {schema} (run DROP SCHEMA \"{schema}\" CASCADE): {e}"
        );
    }
    measured
}

async fn raw_pg_schema_inserts(url: &str, schema: &str, concurrency: u32) -> Result<f64, CliError> {
    let fail = |what| move |source| CliError::PgBaseline { what, source };
    let setup = pg_connect(url).await.map_err(fail("connecting"))?;
    // The streams the rows belong to (not measured), with ids 1..=STREAMS.
    setup
        .execute(
            &format!(
                "INSERT INTO \"{schema}\".streams (name, category, group_hash) \
                 SELECT 'bench-' || g, 'bench', 0 FROM generate_series(0, $1::bigint - 1) g ORDER BY g"
            ),
            &[&(STREAMS as i64)],
        )
        .await
        .map_err(fail("inserting the streams"))?;
    let first: i64 = setup
        .query_one(&format!("SELECT min(id) FROM \"{schema}\".streams"), &[])
        .await
        .map_err(fail("reading the stream ids"))?
        .get(0);
    let sql = format!(
        "INSERT INTO \"{schema}\".events (stream_id, category_hash, revision, id, event_type, \
         content_type, data, metadata, recorded_at) \
         SELECT $1, 0, $2 + u.ord - 1, u.id, 'Deposited', 'application/json', u.data, '{{}}', now() \
         FROM unnest($3::uuid[], $4::bytea[]) WITH ORDINALITY AS u(id, data, ord)"
    );
    let connections = concurrency.clamp(1, PG_MAX_CONNECTIONS);
    pg_rate(
        url,
        &sql,
        connections,
        |t, client, insert, deadline| async move {
            // Each connection writes its own streams, so revisions never collide.
            let mine: Vec<usize> = (t..STREAMS).step_by(connections as usize).collect();
            let mut revisions = vec![0i64; mine.len()];
            let mut rows = 0u64;
            while Instant::now() < deadline && !stopped() {
                let i = (rows / SCHEMA_BASELINE_BATCH) as usize % mine.len();
                let ids: Vec<uuid::Uuid> = (0..SCHEMA_BASELINE_BATCH)
                    .map(|_| uuid::Uuid::now_v7())
                    .collect();
                let datas: Vec<Vec<u8>> = (0..SCHEMA_BASELINE_BATCH)
                    .map(|k| event_data(rows + k, 0))
                    .collect();
                let stream = first + mine[i] as i64;
                client
                    .execute(&insert, &[&stream, &revisions[i], &ids, &datas])
                    .await?;
                revisions[i] += SCHEMA_BASELINE_BATCH as i64;
                rows += SCHEMA_BASELINE_BATCH;
            }
            Ok(rows)
        },
    )
    .await
}

/// Opens `connections` connections with `sql` prepared on each, then runs
/// `task(t, client, statement, deadline)` for every connection `t` at once, the
/// deadline being [`PG_TIME`] after the start; each task returns the rows it inserted.
/// Rows/s over all connections.
async fn pg_rate<F, Fut>(url: &str, sql: &str, connections: u32, task: F) -> Result<f64, CliError>
where
    F: Fn(usize, tokio_postgres::Client, tokio_postgres::Statement, Instant) -> Fut,
    Fut: std::future::Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'static,
{
    let fail = |what| move |source| CliError::PgBaseline { what, source };
    let mut writers = Vec::with_capacity(connections as usize);
    for _ in 0..connections {
        let client = pg_connect(url).await.map_err(fail("connecting"))?;
        let insert = client
            .prepare(sql)
            .await
            .map_err(fail("preparing the insert"))?;
        writers.push((client, insert));
    }
    let start = Instant::now();
    let deadline = start + PG_TIME;
    let mut tasks = tokio::task::JoinSet::new();
    for (t, (client, insert)) in writers.into_iter().enumerate() {
        tasks.spawn(task(t, client, insert, deadline));
    }
    let mut rows = 0u64;
    while let Some(joined) = tasks.join_next().await {
        let inserted = joined
            .map_err(|e| CliError::Bench(format!("a PostgreSQL baseline task failed: {e}")))?;
        rows += inserted.map_err(fail("inserting"))?;
    }
    let elapsed = start.elapsed();
    if stopped() {
        return Err(CliError::Interrupted);
    }
    Ok(rows as f64 / elapsed.as_secs_f64())
}

/// Rows per page of the raw read baselines (the `read-all` workload's page size).
const RAW_READ_PAGE: i64 = 1000;

/// `read-all`'s baseline on SQLite: the store's own `events` rows read straight with
/// rusqlite, in position order, in pages of 1,000 by keyset, every column looked at
/// but nothing decoded or allocated: what SQLite itself costs the read. Rows/s.
pub(crate) fn raw_sqlite_read_rate(db: &Path) -> Result<f64, CliError> {
    let fail = |what| move |source| CliError::Baseline { what, source };
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(fail("opening the store read-only"))?;
    let mut stmt = conn
        .prepare(
            "SELECT position, stream_id, revision, id_hi, id_lo, event_type, content_type, \
             data, metadata, recorded_at, tags FROM events WHERE position > ?1 \
             ORDER BY position LIMIT ?2",
        )
        .map_err(fail("preparing the raw read"))?;
    let (mut after, mut rows, mut bytes) = (0i64, 0u64, 0usize);
    let start = Instant::now();
    loop {
        let mut page = stmt
            .query(params![after, RAW_READ_PAGE])
            .map_err(fail("reading events"))?;
        let mut n = 0;
        while let Some(row) = page.next().map_err(fail("reading events"))? {
            after = row.get(0).map_err(fail("reading a position"))?;
            bytes += column_bytes(row, 1..11).map_err(fail("reading a column"))?;
            n += 1;
        }
        rows += n;
        if n < RAW_READ_PAGE as u64 || stopped() {
            break;
        }
    }
    std::hint::black_box(bytes);
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

/// Touches the columns `columns` of a raw read's row, as decoding would, without
/// decoding them: the bytes of text and blobs, 8 for the rest.
fn column_bytes(
    row: &rusqlite::Row<'_>,
    columns: std::ops::Range<usize>,
) -> rusqlite::Result<usize> {
    let mut bytes = 0;
    for i in columns {
        bytes += match row.get_ref(i)? {
            rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => b.len(),
            _ => 8,
        };
    }
    Ok(bytes)
}

/// `read-stream`'s baseline on SQLite: the stream's rows read `reads` times straight
/// with rusqlite, by the store's `(stream_id, revision)` index, every column touched
/// but not decoded. The time of each read.
pub(crate) fn raw_sqlite_stream_reads(
    db: &Path,
    stream: &str,
    reads: usize,
) -> Result<Vec<Duration>, CliError> {
    let fail = |what| move |source| CliError::Baseline { what, source };
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(fail("opening the store read-only"))?;
    let stream_id: i64 = conn
        .query_row(
            "SELECT stream_id FROM streams WHERE name = ?1",
            [stream],
            |r| r.get(0),
        )
        .map_err(fail("finding the stream"))?;
    let mut stmt = conn
        .prepare(
            "SELECT position, stream_id, revision, id_hi, id_lo, event_type, content_type, \
             data, metadata, recorded_at, tags FROM events WHERE stream_id = ?1 \
             ORDER BY revision",
        )
        .map_err(fail("preparing the raw stream read"))?;
    let mut times = Vec::with_capacity(reads);
    for _ in 0..reads {
        if stopped() {
            return Err(CliError::Interrupted);
        }
        let t0 = Instant::now();
        let mut rows = stmt
            .query([stream_id])
            .map_err(fail("reading the stream"))?;
        let mut bytes = 0usize;
        while let Some(row) = rows.next().map_err(fail("reading the stream"))? {
            bytes += column_bytes(row, 0..11).map_err(fail("reading a column"))?;
        }
        std::hint::black_box(bytes);
        times.push(t0.elapsed());
    }
    Ok(times)
}

/// `read-stream`'s baseline on PostgreSQL: the stream's rows read `reads` times straight
/// with tokio-postgres, by the store's `(stream_id, revision)` key, collected but not
/// decoded. The time of each read.
pub(crate) async fn raw_pg_stream_reads(
    url: &str,
    schema: &str,
    stream: &str,
    reads: usize,
) -> Result<Vec<Duration>, CliError> {
    let fail = |what| move |source| CliError::PgBaseline { what, source };
    let client = pg_connect(url).await.map_err(fail("connecting"))?;
    let stream_id: i64 = client
        .query_one(
            &format!("SELECT id FROM \"{schema}\".streams WHERE name = $1"),
            &[&stream],
        )
        .await
        .map_err(fail("finding the stream"))?
        .try_get(0)
        .map_err(fail("finding the stream"))?;
    // The store's query shape (a revision range and a limit), as an unnamed statement
    // planned with its values, as the store sends its reads. A bare `stream_id = $1
    // ORDER BY revision` measured slower than the store itself.
    let sql = format!(
        "SELECT e.tx, e.seq, e.id, e.stream_id, e.event_type, e.revision, e.data, \
         e.content_type, e.metadata, e.recorded_at, e.tags FROM \"{schema}\".events e \
         WHERE e.stream_id = $1 AND e.revision BETWEEN 0 AND $2 \
         ORDER BY e.revision LIMIT $2"
    );
    let mut times = Vec::with_capacity(reads);
    for _ in 0..reads {
        if stopped() {
            return Err(CliError::Interrupted);
        }
        let t0 = Instant::now();
        let rows = client
            .query_typed(&sql, &[(&stream_id, Type::INT8), (&i64::MAX, Type::INT8)])
            .await
            .map_err(fail("reading the stream"))?;
        std::hint::black_box(rows.len());
        times.push(t0.elapsed());
    }
    Ok(times)
}

/// `read-all`'s baseline on PostgreSQL: the store's own `events` rows read straight
/// with tokio-postgres, in `(tx, seq)` order, in pages of 1,000 by keyset, each page
/// collected but not decoded: what the server and the driver cost the read. Rows/s.
pub(crate) async fn raw_pg_read_rate(url: &str, schema: &str) -> Result<f64, CliError> {
    let fail = |what| move |source| CliError::PgBaseline { what, source };
    let client = pg_connect(url).await.map_err(fail("connecting"))?;
    let sql = format!(
        "SELECT e.tx::text AS tx_text, e.seq, e.id, e.stream_id, e.event_type, e.revision, \
         e.data, e.content_type, e.metadata, e.recorded_at, e.tags FROM \"{schema}\".events e \
         WHERE (e.tx, e.seq) > ($1::text::xid8, $2) ORDER BY e.tx, e.seq LIMIT $3"
    );
    let (mut tx, mut seq, mut rows) = ("0".to_owned(), 0i64, 0u64);
    let start = Instant::now();
    loop {
        // Unnamed statements, planned with each page's values, as the store sends them:
        // a generic plan of this keyset query sorts the whole table for every page.
        let page = client
            .query_typed(
                &sql,
                &[
                    (&tx, Type::TEXT),
                    (&seq, Type::INT8),
                    (&RAW_READ_PAGE, Type::INT8),
                ],
            )
            .await
            .map_err(fail("reading events"))?;
        rows += page.len() as u64;
        let Some(last) = page.last() else { break };
        tx = last.try_get(0).map_err(fail("reading a position"))?;
        seq = last.try_get(1).map_err(fail("reading a position"))?;
        if (page.len() as i64) < RAW_READ_PAGE || stopped() {
            break;
        }
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}
