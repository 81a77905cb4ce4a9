//! `persistent`: `--concurrency` consumers of one persistent subscription group on
//! `$all`, in process (the library's `Consumer`s), ack every event of a filled store;
//! next to the same run's in-process read of `$all` (`read-all`'s paging) over the
//! same events.
//!
//! The run fails unless every event is acked, and no event is ever delivered to a
//! consumer while another holds it or after it was acked: the message timeout is far
//! longer than the run, so the group has no reason to deliver anything twice. Each
//! event's state (waiting, held, acked) is one atomic, so the check costs the
//! consumers no lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use foldstore_core::persistent::{PersistentSettings, PersistentSubscriptions, Target};
use foldstore_core::{Position, ReadAllOptions};
use serde_json::{Map, json};

use super::http::{bench_err, dyn_store, progress};
use super::payload;
use super::report::{Outcome, ratio};
use super::workloads::{self, FILL_TASKS, Params, READ_PAGE};
use crate::backend::Store;
use crate::error::CliError;

/// Events when `--events` is not given.
const DEFAULT_EVENTS: u64 = 50_000;
/// Streams the events are spread over.
const STREAMS: usize = 100;
/// The group's message timeout: far beyond the run, so nothing times out.
const MESSAGE_TIMEOUT_MS: u64 = 600_000;
/// How long the consumers may take before the run fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// The group's name.
const GROUP: &str = "bench";

const WAITING: u8 = 0;
const HELD: u8 = 1;
const ACKED: u8 = 2;

/// What the consumers found wrong, counted.
#[derive(Default)]
struct Faults {
    /// Deliveries of an event another consumer held.
    doubled: AtomicU64,
    /// Deliveries of an event already acked.
    again: AtomicU64,
    /// Deliveries of an event the store does not hold.
    unknown: AtomicU64,
}

/// Every position of `$all`, in order, read unmeasured.
async fn positions(store: &Store) -> Result<Vec<Position>, CliError> {
    let mut out = Vec::new();
    let mut from = None;
    loop {
        let mut options = ReadAllOptions::forwards().max_count(READ_PAGE);
        options.from = from;
        let page = store.read_all(options).await?;
        let Some(last) = page.last() else { break };
        from = Some(last.position.next());
        out.extend(page.iter().map(|e| e.position));
    }
    Ok(out)
}

/// Runs the workload.
pub(crate) async fn persistent(store: &Store, p: Params) -> Result<Outcome, CliError> {
    let events = p.events.unwrap_or(DEFAULT_EVENTS);
    let consumers = p.concurrency.max(1) as usize;
    let streams = payload::stream_names("job", STREAMS);
    workloads::fill(store, &streams, events, FILL_TASKS).await?;

    progress("baseline: in-process read-all, pages of 1000");
    let (base_read, base_elapsed, _) = workloads::page_through_all(store).await?;
    let read_rate = base_read as f64 / base_elapsed.as_secs_f64();
    progress(format!("baseline: {read_rate:.0} events/s"));

    let order = positions(store).await?;
    let index: Arc<HashMap<u128, usize>> = Arc::new(
        order
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_u128(), i))
            .collect(),
    );
    let total = order.len();
    let states: Arc<Vec<AtomicU8>> = Arc::new((0..total).map(|_| AtomicU8::new(WAITING)).collect());

    let subs = PersistentSubscriptions::open(dyn_store(store))
        .await
        .map_err(|e| bench_err("could not open the persistent subscriptions", e))?;
    let settings = PersistentSettings {
        message_timeout_ms: MESSAGE_TIMEOUT_MS,
        ..PersistentSettings::default()
    };
    progress(format!(
        "{consumers} consumers of one group on $all ack {total} events"
    ));
    let acked = Arc::new(AtomicU64::new(0));
    let faults = Arc::new(Faults::default());
    let done = Arc::new(tokio::sync::Notify::new());
    let start = Instant::now();
    subs.create(&Target::All, GROUP, settings)
        .await
        .map_err(|e| bench_err("could not create the group", e))?;
    let mut tasks = Vec::with_capacity(consumers);
    for _ in 0..consumers {
        let mut consumer = subs
            .connect(&Target::All, GROUP, 0)
            .await
            .map_err(|e| bench_err("could not connect a consumer", e))?;
        let (index, states, acked, faults, done) = (
            index.clone(),
            states.clone(),
            acked.clone(),
            faults.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut gaps = Vec::new();
            let mut since_ack: Option<Instant> = None;
            while let Some(delivered) = consumer.next().await {
                if let Some(t) = since_ack.take() {
                    gaps.push(t.elapsed());
                }
                let Some(&i) = index.get(&delivered.event.position.as_u128()) else {
                    faults.unknown.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match states[i].compare_exchange(WAITING, HELD, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {}
                    Err(HELD) => {
                        faults.doubled.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Err(_) => {
                        faults.again.fetch_add(1, Ordering::Relaxed);
                        consumer.ack(&[delivered.key]);
                        continue;
                    }
                }
                states[i].store(ACKED, Ordering::Release);
                consumer.ack(&[delivered.key]);
                since_ack = Some(Instant::now());
                if acked.fetch_add(1, Ordering::AcqRel) + 1 == total as u64 {
                    done.notify_one();
                }
            }
            gaps
        }));
    }
    // The last ack notifies; a notify before the wait leaves a permit.
    let finished = tokio::time::timeout(RUN_TIMEOUT, async {
        while acked.load(Ordering::Acquire) < total as u64 {
            done.notified().await;
        }
    })
    .await;
    let elapsed = start.elapsed();
    let info = subs.info(&Target::All, GROUP).await;
    subs.shutdown().await;
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(
            task.await
                .map_err(|e| bench_err("a consumer task failed", e))?,
        );
    }
    let acked = acked.load(Ordering::Acquire);
    if finished.is_err() {
        return Err(CliError::Bench(format!(
            "the consumers acked {acked} of {total} events within {} s",
            RUN_TIMEOUT.as_secs()
        )));
    }
    let doubled = faults.doubled.load(Ordering::Relaxed);
    let again = faults.again.load(Ordering::Relaxed);
    let unknown = faults.unknown.load(Ordering::Relaxed);
    if doubled + again + unknown > 0 {
        return Err(CliError::Bench(format!(
            "the group delivered {doubled} events to a consumer while another held them, {again} after they were acked and {unknown} that the store does not hold"
        )));
    }
    let info = info.map_err(|e| bench_err("could not read the group's figures", e))?;
    if info.stats.finished != total as u64 {
        return Err(CliError::Bench(format!(
            "the consumers acked {total} events but the group counts {} finished",
            info.stats.finished
        )));
    }
    let rate = acked as f64 / elapsed.as_secs_f64();
    let mut extra = Map::new();
    extra.insert("consumers".into(), json!(consumers));
    extra.insert("group_finished".into(), json!(info.stats.finished));
    extra.insert("delivered_twice".into(), json!(0));
    extra.insert("message_timeout_ms".into(), json!(MESSAGE_TIMEOUT_MS));
    extra.insert(
        "live_buffer_size".into(),
        json!(PersistentSettings::default().live_buffer_size),
    );
    extra.insert(
        "consumer_buffer_size".into(),
        json!(PersistentSettings::default().consumer_buffer_size),
    );
    extra.insert(
        "inprocess_read_all_events_per_sec".into(),
        json!(read_rate.round()),
    );
    extra.insert(
        "ratio_vs_inprocess_read_all".into(),
        json!(ratio(rate, read_rate)),
    );
    Ok(Outcome {
        events: acked,
        elapsed,
        latencies,
        latency_of: "consumer's ack to its next delivery",
        conflicts: 0,
        writes: false,
        peak_rss: None,
        extra,
    })
}
