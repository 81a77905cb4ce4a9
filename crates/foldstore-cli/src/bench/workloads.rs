//! The workloads: what each one fills (unmeasured) and what it measures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Map, Value, json};

use foldstore_core::{
    EventFilter, Position, ReadAllOptions, ReadStreamOptions, StreamName, SubscribeFrom,
};

use super::baseline;
use super::cross_process;
use super::interleave;
use super::load::{self, LoadSpec};
use super::machine;
use super::payload::{self, STREAMS, Stamp};
use super::report::{Outcome, percentile, ratio, round, sorted_ms};
use crate::backend::{self, Durability, Store};
use crate::database_url::DatabaseLocation;
use crate::error::CliError;

/// Events per append when filling a store before a read workload.
const FILL_BATCH: usize = 1000;
/// Tasks filling a store, so the writer can group their commits.
pub(crate) const FILL_TASKS: u32 = 4;
/// Events per page in the read-all workload.
pub(crate) const READ_PAGE: usize = 1000;
/// Whole-stream reads in the read-stream workload.
const STREAM_READS: usize = 200;
/// How long subscribe-latency measures the maximum append rate.
const MAX_RATE_PROBE: Duration = Duration::from_secs(2);
/// How long subscribe-latency runs its paced load, by default.
const PACED_RUN: Duration = Duration::from_secs(8);
/// How long a subscriber may lag after the last append before the run fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Parameters every workload gets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    /// Concurrent tasks.
    pub(crate) concurrency: u32,
    /// `--events`, if given.
    pub(crate) events: Option<u64>,
    /// `--rate`, if given.
    pub(crate) rate: Option<u64>,
    /// `--subscriber-process`.
    pub(crate) subscriber_process: bool,
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

/// Fills `store` with `events` events on `streams`, fast and unmeasured.
pub(crate) async fn fill(
    store: &Store,
    streams: &Arc<[StreamName]>,
    events: u64,
    tasks: u32,
) -> Result<(), CliError> {
    progress(format!("filling {events} events (not measured)"));
    let spec = LoadSpec {
        concurrency: tasks,
        events,
        batch: FILL_BATCH.min(usize::try_from(events).unwrap_or(FILL_BATCH)),
        deadline: None,
        rate: None,
        clock: Instant::now(),
        gate: None,
    };
    let r = load::run(store, streams, &spec).await?;
    progress(format!(
        "filled in {:.1} s ({:.0} events/s)",
        r.elapsed.as_secs_f64(),
        r.events as f64 / r.elapsed.as_secs_f64().max(1e-9)
    ));
    Ok(())
}

/// Reads the whole of `$all` forwards in pages of [`READ_PAGE`], in process: the
/// events read, the time taken and each page's latency.
pub(crate) async fn page_through_all(
    store: &Store,
) -> Result<(u64, Duration, Vec<Duration>), CliError> {
    let mut latencies = Vec::new();
    let mut read = 0u64;
    let mut from: Option<Position> = None;
    let start = Instant::now();
    loop {
        let mut opts = ReadAllOptions::forwards().max_count(READ_PAGE);
        opts.from = from;
        let t0 = Instant::now();
        let page = store.read_all(opts).await?;
        latencies.push(t0.elapsed());
        let Some(last) = page.last() else { break };
        from = Some(last.position.next());
        read += page.len() as u64;
        if page.len() < READ_PAGE {
            break;
        }
    }
    Ok((read, start.elapsed(), latencies))
}

/// `append-1` (batch 1) and `append-batch` (batch 100). With `turns`, every append
/// waits for the baselines' turns to end, and the store's rate counts its own time
/// only: the run's time less the turns.
pub(crate) async fn append(
    store: &Store,
    p: Params,
    batch: usize,
    turns: Option<&interleave::Turns>,
) -> Result<Outcome, CliError> {
    append_as(store, p, batch, turns, load::Mode::Plain).await
}

/// [`append`], each append made as `mode` says.
async fn append_as(
    store: &Store,
    p: Params,
    batch: usize,
    turns: Option<&interleave::Turns>,
    mode: load::Mode,
) -> Result<Outcome, CliError> {
    // One task gets fewer events than many, to keep its run short (it takes turns
    // with its baselines), but enough that most appends go to streams that exist:
    // over 10,000 random streams, 20,000 appends create a stream in 43% of them
    // (a `streams` row and its name index, which no raw baseline writes), 100,000
    // in 10%.
    let default_events = match (batch, p.concurrency) {
        (1, 1) => 100_000,
        _ => 200_000,
    };
    let events = p.events.unwrap_or(default_events);
    progress(format!(
        "appending {events} events, {batch} per append, {} tasks, {STREAMS} streams",
        p.concurrency
    ));
    // The conditional load gets streams of its own, so that it does not start on the
    // streams the same run's plain load left behind.
    let prefix = match mode {
        load::Mode::Plain => "bench",
        load::Mode::Conditional => "benchif",
    };
    let streams = payload::stream_names(prefix, STREAMS);
    let spec = LoadSpec {
        concurrency: p.concurrency,
        events,
        batch,
        deadline: None,
        rate: None,
        clock: Instant::now(),
        gate: turns.map(interleave::Turns::gate),
    };
    let before = group_commit(store);
    let r = load::run_with(store, &streams, &spec, mode).await?;
    let mut extra = Map::new();
    extra.insert("events_per_append".into(), json!(batch));
    if let (Some(before), Some(after)) = (before, group_commit(store)) {
        // How many appends shared a transaction: the group commit's batching, which
        // sets how far the server's per-transaction cost is spread.
        let written = after.fast_written - before.fast_written;
        let transactions = after.fast_transactions - before.fast_transactions;
        extra.insert("fast_path_transactions".into(), json!(transactions));
        extra.insert(
            "appends_per_transaction".into(),
            json!(round(written as f64 / transactions.max(1) as f64, 1)),
        );
    }
    extra.insert("events_by_second".into(), json!(r.events_by_second));
    extra.insert(
        "appends_per_sec".into(),
        json!((r.latencies.len() as f64 / r.elapsed.as_secs_f64()).round()),
    );
    Ok(Outcome {
        events: r.events,
        elapsed: r.elapsed,
        latencies: r.latencies,
        latency_of: if batch == 1 {
            "append of 1 event"
        } else {
            "append of 100 events"
        },
        conflicts: r.conflicts,
        writes: true,
        peak_rss: None,
        extra,
    })
}

/// The PostgreSQL store's group-commit counters; `None` on SQLite.
fn group_commit(store: &Store) -> Option<foldstore_postgres::GroupCommitStats> {
    match store {
        Store::Postgres(p) => Some(p.group_commit_stats()),
        Store::Sqlite(_) => None,
    }
}

/// `append-1`: [`append`] with one event per append, and on SQLite a same-run
/// baseline of the same rows inserted raw into a fresh copy of the store's own schema,
/// one per durable transaction: what SQLite itself costs a one-event append's row and
/// indexes, against which the store's own cost shows (PostgreSQL has its single-row
/// insert baseline already).
///
/// With one task, that baseline and plain rusqlite's unindexed one-row transactions
/// take turns with the store ([`interleave`]): the report's `raw_schema_tx1_per_sec`
/// and `interleaved_raw_tx1_per_sec` were measured in the same seconds as the store,
/// and `events_per_sec` counts the store's turns only. With more tasks the schema
/// baseline runs after the store ([`baseline::raw_schema_rate`]).
pub(crate) async fn append_1(
    store: &Store,
    location: &DatabaseLocation,
    p: Params,
) -> Result<Outcome, CliError> {
    let DatabaseLocation::Sqlite(path) = location else {
        return append(store, p, 1, None).await;
    };
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    if p.concurrency != 1 {
        let mut outcome = append(store, p, 1, None).await?;
        progress(
            "inserting the same rows raw into the store's schema, one per commit (same-run baseline)",
        );
        let raw = baseline::raw_schema_rate(dir, 1).await?;
        add_schema_baseline(&mut outcome, "tx1", raw);
        return Ok(outcome);
    }
    progress(format!(
        "the store takes turns of {} ms with raw one-row inserts (unindexed, then into the store's schema)",
        interleave::TURN.as_millis()
    ));
    let turns = interleave::start(dir).await?;
    let started = Instant::now();
    let appended = append(store, p, 1, Some(&turns)).await;
    let ended = Instant::now();
    let taken = turns.finish().await?;
    let mut outcome = appended?;
    let paused = taken.paused_within(started, ended);
    outcome.elapsed = outcome.elapsed.saturating_sub(paused);
    let rate = outcome.events as f64 / outcome.elapsed.as_secs_f64().max(1e-9);
    let extra = &mut outcome.extra;
    extra.insert(
        "appends_per_sec".into(),
        json!((outcome.latencies.len() as f64 / outcome.elapsed.as_secs_f64().max(1e-9)).round()),
    );
    extra.insert(
        "baseline_turn_ms".into(),
        json!(interleave::TURN.as_millis()),
    );
    extra.insert(
        "store_turns_sec".into(),
        json!(round(outcome.elapsed.as_secs_f64(), 3)),
    );
    extra.insert(
        "interleaved_raw_tx1_per_sec".into(),
        json!(taken.raw_tx1_per_sec.round()),
    );
    extra.insert(
        "ratio_vs_interleaved_raw_tx1".into(),
        json!(ratio(rate, taken.raw_tx1_per_sec)),
    );
    add_schema_baseline(&mut outcome, "tx1", taken.raw_schema_tx1_per_sec);
    Ok(outcome)
}

/// Puts a schema baseline of `raw` rows/s into `outcome`'s report as
/// `raw_schema_<tag>_per_sec`, with the store's rate over it as
/// `ratio_vs_raw_schema_<tag>`.
fn add_schema_baseline(outcome: &mut Outcome, tag: &str, raw: f64) {
    let rate = outcome.events as f64 / outcome.elapsed.as_secs_f64().max(1e-9);
    outcome
        .extra
        .insert(format!("raw_schema_{tag}_per_sec"), json!(raw.round()));
    outcome.extra.insert(
        format!("ratio_vs_raw_schema_{tag}"),
        json!(ratio(rate, raw)),
    );
}

/// `append-batch`: [`append`] with 100 events per append, next to a same-run baseline
/// of the same rows inserted raw into a fresh copy of the store's own schema, 100 per
/// transaction, which shows what the database itself costs them: plain rusqlite on
/// SQLite ([`baseline::raw_schema_rate`]), tokio-postgres with the same concurrency on
/// PostgreSQL ([`baseline::raw_pg_schema_tx100_rate`]).
pub(crate) async fn append_batch(
    store: &Store,
    location: &DatabaseLocation,
    p: Params,
) -> Result<Outcome, CliError> {
    let concurrency = p.concurrency;
    let mut outcome = append(store, p, 100, None).await?;
    progress("inserting the same rows raw into the store's schema (same-run baseline)");
    let raw = match location {
        DatabaseLocation::Sqlite(path) => {
            let dir = path.parent().unwrap_or(std::path::Path::new("."));
            baseline::raw_schema_rate(dir, 100).await?
        }
        DatabaseLocation::Postgres {
            url,
            schema,
            tuning,
        } => baseline::raw_pg_schema_tx100_rate(url, schema, *tuning, concurrency).await?,
    };
    add_schema_baseline(&mut outcome, "tx100", raw);
    Ok(outcome)
}

/// `append-if`: `append-1`'s load with a DCB condition on every append (see
/// [`load::Mode::Conditional`]): one tagged event, the condition on its tag after the
/// last position this task saw. The same run measures plain `append-1` first, so the
/// report carries the ratio of the two (`ratio_vs_append_1`).
pub(crate) async fn append_if(store: &Store, p: Params) -> Result<Outcome, CliError> {
    progress("baseline: the same load without conditions (append-1)");
    let plain = append(store, p, 1, None).await?;
    let plain_rate = plain.events as f64 / plain.elapsed.as_secs_f64().max(1e-9);
    let mut outcome = append_as(store, p, 1, None, load::Mode::Conditional).await?;
    let rate = outcome.events as f64 / outcome.elapsed.as_secs_f64().max(1e-9);
    outcome
        .extra
        .insert("append_1_per_sec".into(), json!(plain_rate.round()));
    outcome.extra.insert(
        "ratio_vs_append_1".into(),
        json!(round(rate / plain_rate.max(1e-9), 2)),
    );
    outcome.latency_of = "conditional append of 1 event";
    Ok(outcome)
}

/// `read-all`: fill, read everything forwards in pages, then through a subscription.
///
/// The subscription runs on a freshly reopened store, with the peak RSS reset just
/// before, so that `peak_rss_mb` is what a process subscribing to a full store needs,
/// not what filling it left behind. Returns the reopened store for the caller to close.
pub(crate) async fn read_all(
    store: Store,
    location: &DatabaseLocation,
    durability: Durability,
    p: Params,
) -> Result<(Outcome, Store), CliError> {
    let events = p.events.unwrap_or(1_000_000);
    let streams = payload::stream_names("fill", STREAMS);
    fill(&store, &streams, events, FILL_TASKS).await?;

    progress("reading $all forwards in pages of 1000");
    let (read, elapsed, latencies) = page_through_all(&store).await?;
    backend::close(store).await?;

    progress("reading the same rows raw, without foldstore (same-run baseline)");
    let raw_read = match location {
        DatabaseLocation::Sqlite(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || baseline::raw_sqlite_read_rate(&path))
                .await
                .map_err(|e| CliError::Bench(format!("the raw read failed: {e}")))??
        }
        DatabaseLocation::Postgres { url, schema, .. } => {
            baseline::raw_pg_read_rate(url, schema).await?
        }
    };

    progress("reopening the store and reading $all through subscribe_to_all(Start)");
    let rss_before = machine::rss_mb();
    let reset = machine::reset_peak_rss();
    let store = backend::open(location, durability).await?;
    let start = Instant::now();
    let mut sub = store
        .subscribe_to_all(SubscribeFrom::Start, EventFilter::all())
        .await?;
    let mut delivered = 0u64;
    while delivered < read {
        match sub.next().await {
            Some(Ok(_)) => delivered += 1,
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    let sub_elapsed = start.elapsed();
    let peak = machine::peak_rss_mb();
    let (anon, file) = (machine::status_mb("RssAnon"), machine::status_mb("RssFile"));
    drop(sub);

    let mut extra = Map::new();
    extra.insert("page_size".into(), json!(READ_PAGE));
    // The same rows read without foldstore, in the same pages: the store's reads
    // against what the database and its driver alone manage in this run.
    extra.insert("raw_read_per_sec".into(), json!(raw_read.round()));
    extra.insert(
        "ratio_vs_raw_read".into(),
        json!(ratio(read as f64 / elapsed.as_secs_f64(), raw_read)),
    );
    extra.insert("subscribe_events".into(), json!(delivered));
    extra.insert(
        "subscribe_events_per_sec".into(),
        json!((delivered as f64 / sub_elapsed.as_secs_f64()).round()),
    );
    let mb = |x: Option<f64>| json!(x.map(|x| (x * 10.0).round() / 10.0));
    extra.insert("rss_before_subscribe_mb".into(), mb(rss_before));
    // Which part of the resident set is heap and which is file pages (SQLite's
    // memory map of the database counts as file pages).
    extra.insert("rss_anon_after_subscribe_mb".into(), mb(anon));
    extra.insert("rss_file_after_subscribe_mb".into(), mb(file));
    extra.insert("peak_rss_reset".into(), json!(reset));
    extra.insert("target_peak_rss_mb".into(), json!(100));
    let outcome = Outcome {
        events: read,
        elapsed,
        latencies,
        latency_of: "read of a 1000-event page",
        conflicts: 0,
        writes: false,
        peak_rss: peak.map(|mb| {
            (
                mb,
                if reset {
                    "subscribe phase"
                } else {
                    "process (peak reset refused)"
                },
            )
        }),
        extra,
    };
    Ok((outcome, store))
}

/// `read-stream`: fill one stream, read it whole many times, then read it as many
/// times raw (the same-run baseline).
pub(crate) async fn read_stream(
    store: &Store,
    location: &DatabaseLocation,
    p: Params,
) -> Result<Outcome, CliError> {
    let length = p.events.unwrap_or(10_000);
    let streams = payload::stream_names("single", 1);
    fill(store, &streams, length, 1).await?;
    let stream = streams[0].clone();

    progress(format!(
        "reading the {length}-event stream whole {STREAM_READS} times, {} tasks",
        p.concurrency
    ));
    let tasks = p.concurrency.max(1) as usize;
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let reads = STREAM_READS / tasks + usize::from(t < STREAM_READS % tasks);
        let store = store.clone();
        let stream = stream.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(reads);
            let mut events = 0u64;
            for _ in 0..reads {
                let t0 = Instant::now();
                let got = store
                    .read_stream(&stream, ReadStreamOptions::forwards())
                    .await?;
                lat.push(t0.elapsed());
                events += got.len() as u64;
            }
            Ok::<_, CliError>((lat, events))
        }));
    }
    let mut latencies = Vec::new();
    let mut events = 0;
    for h in handles {
        let (lat, n) = h
            .await
            .map_err(|e| CliError::Bench(format!("a read task failed: {e}")))??;
        latencies.extend(lat);
        events += n;
    }
    let elapsed = start.elapsed();

    progress("reading the same stream raw, without foldstore (same-run baseline)");
    let raw = match location {
        DatabaseLocation::Sqlite(path) => {
            let (path, name) = (path.clone(), stream.as_str().to_owned());
            tokio::task::spawn_blocking(move || {
                baseline::raw_sqlite_stream_reads(&path, &name, STREAM_READS)
            })
            .await
            .map_err(|e| CliError::Bench(format!("the raw stream read failed: {e}")))??
        }
        DatabaseLocation::Postgres { url, schema, .. } => {
            baseline::raw_pg_stream_reads(url, schema, stream.as_str(), STREAM_READS).await?
        }
    };
    let p50 = |times: &[Duration]| percentile(&sorted_ms(times), 50.0);
    let (store_p50, raw_p50) = (p50(&latencies), p50(&raw));

    let mut extra = Map::new();
    extra.insert("stream_length".into(), json!(length));
    extra.insert("reads".into(), json!(latencies.len()));
    // The same reads without foldstore, one after another on one connection: the
    // store's p50 against what the database and its driver alone take.
    extra.insert(
        "raw_read_stream_p50_ms".into(),
        json!(raw_p50.map(|ms| round(ms, 3))),
    );
    extra.insert(
        "ratio_vs_raw_read_stream".into(),
        json!(
            raw_p50
                .zip(store_p50)
                .and_then(|(raw, ours)| ratio(raw, ours))
        ),
    );
    Ok(Outcome {
        events,
        elapsed,
        latencies,
        latency_of: "read of the whole stream",
        conflicts: 0,
        writes: false,
        peak_rss: None,
        extra,
    })
}

/// `subscribe-latency`: a live `$all` subscriber while appenders run at half the
/// maximum rate (or `--rate`).
pub(crate) async fn subscribe_latency(
    store: &Store,
    location: &DatabaseLocation,
    p: Params,
) -> Result<Outcome, CliError> {
    let streams = payload::stream_names("bench", STREAMS);
    let clock = Instant::now();
    let origin_unix_ns = cross_process::unix_now_ns();
    let max_rate = match p.rate {
        Some(_) => None,
        None => {
            progress(format!(
                "measuring the maximum one-event append rate for {} s",
                MAX_RATE_PROBE.as_secs()
            ));
            let spec = LoadSpec {
                concurrency: p.concurrency,
                events: u64::MAX,
                batch: 1,
                deadline: Some(Instant::now() + MAX_RATE_PROBE),
                rate: None,
                clock,
                gate: None,
            };
            // Other streams than the measured run's, so that it starts without conflicts.
            let probe = payload::stream_names("probe", STREAMS);
            let r = load::run(store, &probe, &spec).await?;
            Some(r.events as f64 / r.elapsed.as_secs_f64())
        }
    };
    let rate = match (p.rate, max_rate) {
        (Some(r), _) => r as f64,
        (None, Some(m)) => (m / 2.0).max(1.0),
        (None, None) => 1.0,
    };
    let events = p
        .events
        .unwrap_or_else(|| ((rate * PACED_RUN.as_secs_f64()) as u64).clamp(1000, 200_000));
    progress(format!(
        "appending {events} events at {rate:.0}/s with a live $all subscriber"
    ));

    let subscriber = if p.subscriber_process {
        progress("starting the subscriber process");
        Subscriber::Process(Box::new(
            cross_process::SubscriberProcess::start(location, events, origin_unix_ns).await?,
        ))
    } else {
        Subscriber::Task(in_process_subscriber(store, events, clock).await?)
    };
    let spec = LoadSpec {
        concurrency: p.concurrency,
        events,
        batch: 1,
        deadline: None,
        rate: Some(rate),
        clock,
        gate: None,
    };
    let appended = load::run(store, &streams, &spec).await?;
    let latencies = match subscriber {
        Subscriber::Process(child) => child.latencies(DELIVERY_TIMEOUT).await?,
        Subscriber::Task(task) => match tokio::time::timeout(DELIVERY_TIMEOUT, task).await {
            Ok(joined) => {
                joined.map_err(|e| CliError::Bench(format!("the subscriber failed: {e}")))??
            }
            Err(_) => {
                return Err(CliError::Bench(format!(
                    "the subscriber had not received every event {} s after the last append",
                    DELIVERY_TIMEOUT.as_secs()
                )));
            }
        },
    };
    let append_ms = sorted_ms(&appended.latencies);
    let mut extra = Map::new();
    extra.insert(
        "subscriber".into(),
        json!(if p.subscriber_process {
            "other process"
        } else {
            "same process"
        }),
    );
    extra.insert(
        "max_append_rate_per_sec".into(),
        max_rate.map_or(Value::Null, |m| json!(m.round())),
    );
    extra.insert("target_rate_per_sec".into(), json!(rate.round()));
    let rounded = |x: Option<f64>| json!(x.map(|x| round(x, 3)));
    extra.insert(
        "append_p50_ms".into(),
        rounded(percentile(&append_ms, 50.0)),
    );
    extra.insert(
        "append_p99_ms".into(),
        rounded(percentile(&append_ms, 99.0)),
    );
    Ok(Outcome {
        events: appended.events,
        elapsed: appended.elapsed,
        latencies,
        latency_of: "append-to-delivery",
        conflicts: appended.conflicts,
        // The rate is chosen, not achieved: ratios to the baselines would mean nothing.
        writes: false,
        peak_rss: None,
        extra,
    })
}

/// Where subscribe-latency's subscriber runs.
enum Subscriber {
    /// A task in this process.
    Task(tokio::task::JoinHandle<Result<Vec<Duration>, CliError>>),
    /// Another foldstore process.
    Process(Box<cross_process::SubscriberProcess>),
}

/// Subscribes to the end of `$all` and spawns a task that collects the delivery
/// latencies of the next `events` events.
async fn in_process_subscriber(
    store: &Store,
    events: u64,
    clock: Instant,
) -> Result<tokio::task::JoinHandle<Result<Vec<Duration>, CliError>>, CliError> {
    let mut sub = store
        .subscribe_to_all(SubscribeFrom::End, EventFilter::all())
        .await?;
    Ok(tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(usize::try_from(events.min(1 << 20)).unwrap_or(0));
        while (latencies.len() as u64) < events {
            match sub.next().await {
                Some(Ok(e)) => {
                    let now = clock.elapsed();
                    let stamp: Stamp = serde_json::from_slice(&e.data).map_err(|err| {
                        CliError::Bench(format!(
                            "event {} at {} carries no send time ({err}): was the database used by something else?",
                            e.id, e.position
                        ))
                    })?;
                    latencies.push(now.saturating_sub(Duration::from_nanos(stamp.sent_ns)));
                }
                Some(Err(e)) => return Err(CliError::from(e)),
                None => {
                    return Err(CliError::Bench(
                        "the subscription ended before every event was delivered".to_owned(),
                    ));
                }
            }
        }
        Ok(latencies)
    }))
}
