//! Quick throughput checks of the SQLite store, for development. Ignored by default;
//! the benchmark of record is `foldstore bench`. Run with
//! `cargo test --release -p foldstore-sqlite --test throughput -- --ignored --nocapture`
//! (set `FOLDSTORE_THROUGHPUT_DIR` to measure on another disk than the temp dir's).

use std::sync::Arc;
use std::time::{Duration, Instant};

use foldstore_core::{
    EventStore, ExpectedRevision, JSON, NewEvent, ReadAllOptions, ReadStreamOptions, StreamName,
};
use foldstore_sqlite::{Durability, SqliteOptions, SqliteStore};

fn data() -> Vec<u8> {
    let mut s = String::from("{\"account\":\"acc-0000001234\",\"amount_cents\":4242,\"note\":\"");
    s.extend(std::iter::repeat_n('x', 250 - s.len() - 2));
    s.push_str("\"}");
    s.into_bytes()
}

fn dir() -> tempfile::TempDir {
    match std::env::var("FOLDSTORE_THROUGHPUT_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn fill(store: &SqliteStore, streams: usize, events: usize, batch: usize) {
    let data = data();
    let mut written = 0;
    let mut i = 0;
    while written < events {
        let stream = StreamName::new(format!("fill-{}", i % streams)).unwrap();
        let n = batch.min(events - written);
        let evs = (0..n)
            .map(|_| NewEvent::raw("Deposited", data.clone(), JSON))
            .collect();
        store
            .append(&stream, ExpectedRevision::Any, evs)
            .await
            .unwrap();
        written += n;
        i += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn reads() {
    let dir = dir();
    let options = SqliteOptions {
        durability: Durability::Normal,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(dir.path().join("r.db"), options)
        .await
        .unwrap();
    let total = std::env::var("FOLDSTORE_THROUGHPUT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    fill(&store, 1000, total, 1000).await;
    let single = StreamName::new("single-1").unwrap();
    fill_stream(&store, &single, 10_000).await;

    let start = Instant::now();
    let mut from = None;
    let mut read = 0;
    let mut pages = Vec::new();
    loop {
        let mut opts = ReadAllOptions::forwards().max_count(1000);
        opts.from = from;
        let t = Instant::now();
        let page = store.read_all(opts).await.unwrap();
        pages.push(t.elapsed());
        let Some(last) = page.last() else { break };
        from = Some(last.position.next());
        read += page.len();
    }
    let elapsed = start.elapsed();
    pages.sort();
    eprintln!(
        "read-all: {read} events in {elapsed:?}: {:.0} events/s; page min {:?} p50 {:?} p99 {:?}",
        read as f64 / elapsed.as_secs_f64(),
        pages[0],
        percentile(&pages, 0.5),
        percentile(&pages, 0.99)
    );

    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let events = store
            .read_stream(&single, ReadStreamOptions::forwards())
            .await
            .unwrap();
        times.push(t.elapsed());
        assert_eq!(events.len(), 10_000);
    }
    times.sort();
    eprintln!(
        "read-stream of 10,000: min {:?} p50 {:?} p99 {:?}",
        times[0],
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
    store.close().await.unwrap();
}

async fn fill_stream(store: &SqliteStore, stream: &StreamName, events: usize) {
    let data = data();
    for _ in 0..events / 1000 {
        let evs = (0..1000)
            .map(|_| NewEvent::raw("Deposited", data.clone(), JSON))
            .collect();
        store
            .append(stream, ExpectedRevision::Any, evs)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn appends() {
    let dir = dir();
    let options = SqliteOptions {
        durability: if std::env::var("FOLDSTORE_THROUGHPUT_NORMAL").is_ok() {
            Durability::Normal
        } else {
            Durability::Full
        },
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(dir.path().join("a.db"), options)
        .await
        .unwrap();
    let data = Arc::new(data());
    let only: Option<usize> = std::env::var("FOLDSTORE_THROUGHPUT_BATCH")
        .ok()
        .and_then(|v| v.parse().ok());
    for (concurrency, batch, appends) in [(1, 1, 2000), (1, 100, 300), (8, 100, 300), (64, 1, 1000)]
    {
        if only.is_some_and(|b| b != batch) {
            continue;
        }
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let store = store.clone();
            let data = Arc::clone(&data);
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in 0..appends {
                    let stream =
                        StreamName::new(format!("s{batch}-{}", (t * 7919 + i * 13) % 10_000))
                            .unwrap();
                    let evs = (0..batch)
                        .map(|_| NewEvent::raw("Deposited", data.to_vec(), JSON))
                        .collect();
                    let t0 = Instant::now();
                    store
                        .append(&stream, ExpectedRevision::Any, evs)
                        .await
                        .unwrap();
                    latencies.push(t0.elapsed());
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await.unwrap());
        }
        let elapsed = start.elapsed();
        latencies.sort();
        let events = concurrency * batch * appends;
        eprintln!(
            "append concurrency {concurrency} batch {batch}: {:.0} events/s, p50 {:?} p99 {:?}",
            events as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
    }
    store.close().await.unwrap();
}

/// Where the time of a one-event durable append goes: plain rusqlite, one row per
/// transaction, into the bench baseline's table and into foldstore's schema, beside
/// the store doing the same.
#[test]
#[ignore]
fn one_row_transactions_raw() {
    let dir = dir();
    let data = data();
    let run =
        |name: &str,
         schema: &str,
         insert: &str,
         binder: &dyn Fn(&mut rusqlite::Statement<'_>, i64) -> rusqlite::Result<usize>| {
            let path = dir.path().join(format!("{name}.db"));
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            conn.pragma_update(None, "synchronous", "FULL").unwrap();
            // This build of SQLite enforces foreign keys by default; foldstore turns
            // them off (the writer keeps the references right itself).
            conn.execute_batch("PRAGMA foreign_keys = OFF;").unwrap();
            conn.execute_batch(schema).unwrap();
            let mut latencies = Vec::new();
            for i in 0..2000 {
                let t = Instant::now();
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                let mut stmt = conn.prepare_cached(insert).unwrap();
                binder(&mut stmt, i).unwrap();
                drop(stmt);
                conn.execute_batch("COMMIT").unwrap();
                latencies.push(t.elapsed());
            }
            latencies.sort();
            eprintln!(
                "raw {name}: p50 {:?} p99 {:?}",
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99)
            );
        };
    run(
        "baseline",
        "CREATE TABLE events (position INTEGER PRIMARY KEY, stream TEXT NOT NULL, event_type TEXT NOT NULL, data BLOB NOT NULL);",
        "INSERT INTO events (stream, event_type, data) VALUES (?1, ?2, ?3)",
        &|s, i| {
            s.execute(rusqlite::params![
                format!("bench-{}", i % 10_000),
                "Deposited",
                &data
            ])
        },
    );
    let schema = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sql/schema_v1.sql"),
    )
    .unwrap();
    run(
        "foldstore-schema",
        &schema,
        "INSERT INTO events (stream_id, revision, category_id, id_hi, id_lo, event_type, content_type, data, metadata, recorded_at) VALUES (?1, ?2, 1, ?3, ?4, 'Deposited', NULL, ?5, '{}', 0)",
        &|s, i| {
            let (hi, lo) = uuid::Uuid::now_v7().as_u64_pair();
            s.execute(rusqlite::params![
                i % 10_000,
                i / 10_000,
                hi as i64,
                lo as i64,
                &data
            ])
        },
    );
}
