//! `rehydrate`: how long the command handler takes to load a state, on a long stream
//! with snapshots against a short one. With a snapshot policy the long stream's load
//! reads one snapshot and at most the policy's interval of events, so its time should
//! not grow with the stream (target: at most 2x the short stream's).
//!
//! It also reports the policy's worst case (`large_stream_lagging_snapshot_ms`: the
//! long stream with its snapshot 99 events behind) and a full replay of the long stream
//! without snapshots (`large_stream_full_replay_ms`).
//!
//! Snapshots go through the `SnapshotStore` trait. Until the SQLite and PostgreSQL
//! stores implement it, they are kept in an in-memory store (`snapshot_store` in the
//! report says which); events always come from the backend under test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use foldstore_core::decider::Decider;
use foldstore_core::{
    CommandHandler, DomainEvent, EventStore, ExpectedRevision, InMemoryStore, SnapshotPolicy,
    SnapshotState, SnapshotStore, StreamName,
};

use super::report::{Outcome, sorted_ms};
use super::workloads::Params;
use crate::backend::Store;
use crate::error::CliError;

/// Events in the short stream.
const SMALL: u64 = 100;
/// Events between snapshots.
const SNAPSHOT_EVERY: u64 = 100;
/// Events per append while building the streams.
const BUILD_BATCH: u64 = 1000;
/// Measured loads per stream (the median is reported).
const LOADS: usize = 25;
/// Full replays of the long stream without snapshots, for comparison.
const REPLAYS: usize = 3;

#[derive(Debug, Serialize, Deserialize, DomainEvent)]
enum Tally {
    Added { n: u64, note: String },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Total {
    sum: u64,
    count: u64,
}

impl SnapshotState for Total {
    const STATE_TYPE: &'static str = "bench.Total";
    const SCHEMA_VERSION: u32 = 1;
}

/// Sums the events; never decides anything (only loads are measured).
struct Counter;

impl Decider for Counter {
    type Command = ();
    type Event = Tally;
    type State = Total;
    type Error = std::convert::Infallible;
    fn initial_state(&self) -> Total {
        Total::default()
    }
    fn decide(&self, _: &(), _: &Total) -> Result<Vec<Tally>, Self::Error> {
        Ok(Vec::new())
    }
    fn evolve(&self, mut t: Total, Tally::Added { n, .. }: &Tally) -> Total {
        t.sum += n;
        t.count += 1;
        t
    }
}

fn event_store(store: &Store) -> Arc<dyn EventStore> {
    match store {
        Store::Sqlite(s) => Arc::new(s.clone()),
        Store::Postgres(p) => Arc::new(p.clone()),
    }
}

/// Where snapshots are kept. Change to the backend's own store once it implements
/// `SnapshotStore`.
fn snapshot_store(_store: &Store) -> (Arc<dyn SnapshotStore>, &'static str) {
    (Arc::new(InMemoryStore::new()), "in-memory")
}

fn bench_err(what: &str) -> impl Fn(String) -> CliError + '_ {
    move |e| CliError::Bench(format!("rehydrate: {what}: {e}"))
}

async fn build(
    store: &Arc<dyn EventStore>,
    stream: &StreamName,
    events: u64,
) -> Result<(), CliError> {
    let mut written = 0;
    while written < events {
        let n = BUILD_BATCH.min(events - written);
        let batch = (written..written + n)
            .map(|i| {
                Tally::Added {
                    n: i % 7,
                    note: format!("event {i} of a long stream"),
                }
                .to_new_event()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bench_err("encoding")(e.to_string()))?;
        store
            .append(stream, ExpectedRevision::Any, batch)
            .await
            .map_err(|e| bench_err("building the stream")(e.to_string()))?;
        written += n;
    }
    Ok(())
}

/// Loads `stream` `times` times; the latencies, after one unmeasured priming load.
async fn loads(
    handler: &CommandHandler<Counter>,
    stream: &StreamName,
    times: usize,
    expect: u64,
) -> Result<Vec<Duration>, CliError> {
    let load = || async {
        handler
            .load(stream)
            .await
            .map_err(|e| bench_err("loading")(e.to_string()))
    };
    load().await?; // saves the snapshot if due
    let mut out = Vec::with_capacity(times);
    for _ in 0..times {
        let t0 = Instant::now();
        let loaded = load().await?;
        out.push(t0.elapsed());
        if loaded.state.count != expect {
            return Err(CliError::Bench(format!(
                "rehydrate: loaded {} events' worth of state, expected {expect}",
                loaded.state.count
            )));
        }
    }
    Ok(out)
}

fn median_ms(latencies: &[Duration]) -> f64 {
    let ms = sorted_ms(latencies);
    ms.get(ms.len() / 2).copied().unwrap_or(0.0)
}

/// `rehydrate`: builds a long stream (`--events`, default 100,000) and a 100-event
/// one, and times loading each through the command handler with snapshots.
pub(crate) async fn rehydrate(store: &Store, p: Params) -> Result<Outcome, CliError> {
    let large = p.events.unwrap_or(100_000).max(1);
    let events = event_store(store);
    let (snapshots, snapshot_store_name) = snapshot_store(store);
    let suffix = format!("{:08x}", rand::random::<u32>());
    let large_stream = StreamName::new(format!("rehydrate-large{suffix}"))
        .map_err(|e| bench_err("stream name")(e.to_string()))?;
    let small_stream = StreamName::new(format!("rehydrate-small{suffix}"))
        .map_err(|e| bench_err("stream name")(e.to_string()))?;
    eprintln!("bench: building a {large}-event stream and a {SMALL}-event stream (not measured)");
    build(&events, &large_stream, large).await?;
    build(&events, &small_stream, SMALL).await?;

    let handler = CommandHandler::new(events.clone(), Counter)
        .with_snapshots(snapshots, SnapshotPolicy::every(SNAPSHOT_EVERY));
    eprintln!("bench: loading each stream {LOADS} times through the command handler");
    let start = Instant::now();
    let large_lat = loads(&handler, &large_stream, LOADS, large).await?;
    let small_lat = loads(&handler, &small_stream, LOADS, SMALL).await?;
    let elapsed = start.elapsed();

    // The policy's worst case: the snapshot one event short of due, so a load folds
    // SNAPSHOT_EVERY - 1 events on top of it.
    let lag = SNAPSHOT_EVERY - 1;
    eprintln!("bench: appending {lag} events to the long stream, loading it {LOADS} times again");
    build(&events, &large_stream, lag).await?;
    let lagging_lat = loads(&handler, &large_stream, LOADS, large + lag).await?;

    eprintln!("bench: replaying the long stream without snapshots {REPLAYS} times, for comparison");
    let plain = CommandHandler::new(events, Counter);
    let replay_lat = loads(&plain, &large_stream, REPLAYS, large + lag).await?;

    let (large_ms, small_ms) = (median_ms(&large_lat), median_ms(&small_lat));
    let mut extra = Map::new();
    extra.insert("large_stream_events".into(), json!(large));
    extra.insert("small_stream_events".into(), json!(SMALL));
    extra.insert("snapshot_every".into(), json!(SNAPSHOT_EVERY));
    extra.insert("snapshot_store".into(), json!(snapshot_store_name));
    extra.insert("large_stream_ms".into(), json!(large_ms));
    extra.insert("small_stream_ms".into(), json!(small_ms));
    extra.insert(
        "large_to_small_ratio".into(),
        json!(large_ms / small_ms.max(1e-9)),
    );
    extra.insert(
        "large_stream_lagging_snapshot_ms".into(),
        json!(median_ms(&lagging_lat)),
    );
    extra.insert(
        "large_stream_full_replay_ms".into(),
        json!(median_ms(&replay_lat)),
    );
    let mut latencies = large_lat;
    latencies.extend(small_lat);
    Ok(Outcome {
        events: LOADS as u64 * 2,
        elapsed,
        latencies,
        latency_of: "load of a state through the command handler (both streams)",
        conflicts: 0,
        writes: false,
        peak_rss: None,
        extra,
    })
}
