//! The append load every write workload runs: tasks that each own a share of the
//! streams, so that they always know the revision to expect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use foldstore_core::dcb::{AppendCondition, Query, QueryItem};
use foldstore_core::{AppendError, CurrentRevision, ExpectedRevision, Position, StreamName};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::MissedTickBehavior;

use super::interleave::Gate;
use super::payload;
use crate::backend::Store;
use crate::error::CliError;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct LoadSpec {
    /// Concurrent appending tasks (at most one per stream).
    pub(crate) concurrency: u32,
    /// Events to append in all; each task stops after its share.
    pub(crate) events: u64,
    /// Events per append.
    pub(crate) batch: usize,
    /// Stop early at this time.
    pub(crate) deadline: Option<Instant>,
    /// Appends per second over all tasks; `None` for as fast as possible.
    pub(crate) rate: Option<f64>,
    /// The clock that `sent_ns` in the event data counts from.
    pub(crate) clock: Instant,
    /// Each append holds a read guard of this, when given: baselines taking turns with
    /// the store hold the write guard during theirs ([`super::interleave`]).
    pub(crate) gate: Option<Gate>,
}

/// What the load did.
#[derive(Debug, Default)]
pub(crate) struct LoadResult {
    /// Events appended.
    pub(crate) events: u64,
    /// Wall time from start to the last task's end.
    pub(crate) elapsed: Duration,
    /// One latency per successful append.
    pub(crate) latencies: Vec<Duration>,
    /// Events appended in each whole second since the start (the last, partial second
    /// is left out): shows whether the rate holds as the database grows.
    pub(crate) events_by_second: Vec<u64>,
    /// Appends refused for a wrong expected revision and retried.
    pub(crate) conflicts: u64,
}

#[derive(Debug, Default)]
struct TaskResult {
    events: u64,
    latencies: Vec<Duration>,
    /// When each append completed, since the load started.
    completed_at: Vec<Duration>,
    conflicts: u64,
}

/// How each append is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `append` with the expected revision.
    Plain,
    /// `append_if`: each event is tagged `bench:<its stream>`, and the condition fails
    /// if an event with that tag was stored after the last one this task appended to
    /// the stream (it never fails: each task owns its streams). A decision's append
    /// with the DCB condition it carries.
    Conditional,
}

/// Runs the load on `streams` and waits for every task.
pub(crate) async fn run(
    store: &Store,
    streams: &Arc<[StreamName]>,
    spec: &LoadSpec,
) -> Result<LoadResult, CliError> {
    run_with(store, streams, spec, Mode::Plain).await
}

/// [`run`], making each append as `mode` says.
pub(crate) async fn run_with(
    store: &Store,
    streams: &Arc<[StreamName]>,
    spec: &LoadSpec,
    mode: Mode,
) -> Result<LoadResult, CliError> {
    let tasks = (spec.concurrency as usize).clamp(1, streams.len().max(1));
    let batch = spec.batch.max(1) as u64;
    let appends = spec.events.div_ceil(batch);
    let start = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let quota = appends / tasks as u64 + u64::from((t as u64) < appends % tasks as u64);
        let owned: Vec<usize> = (t..streams.len()).step_by(tasks).collect();
        let period = spec
            .rate
            .map(|r| Duration::from_secs_f64(tasks as f64 / r.max(1e-3)));
        let task = Task {
            store: store.clone(),
            streams: Arc::clone(streams),
            owned,
            quota,
            batch: spec.batch.max(1),
            deadline: spec.deadline,
            clock: spec.clock,
            seq_base: (t as u64) << 40,
            // Stagger paced tasks over one period so they do not fire together.
            start,
            pacing: period.map(|p| (p, start + p.mul_f64(t as f64 / tasks as f64))),
            gate: spec.gate.clone(),
            mode,
        };
        handles.push(tokio::spawn(task.run()));
    }
    let mut total = LoadResult::default();
    let mut completed_at = Vec::new();
    for handle in handles {
        let r = handle
            .await
            .map_err(|e| CliError::Bench(format!("an append task failed: {e}")))??;
        total.events += r.events;
        total.conflicts += r.conflicts;
        total.latencies.extend(r.latencies);
        completed_at.extend(r.completed_at);
    }
    total.elapsed = start.elapsed();
    total.events_by_second = per_second(&completed_at, spec.batch.max(1) as u64, total.elapsed);
    Ok(total)
}

struct Task {
    store: Store,
    streams: Arc<[StreamName]>,
    owned: Vec<usize>,
    quota: u64,
    batch: usize,
    deadline: Option<Instant>,
    clock: Instant,
    seq_base: u64,
    start: Instant,
    pacing: Option<(Duration, Instant)>,
    gate: Option<Gate>,
    mode: Mode,
}

impl Task {
    async fn run(self) -> Result<TaskResult, CliError> {
        let mut out = TaskResult {
            // A deadline-bound run has an unbounded quota: cap what is reserved up front.
            latencies: Vec::with_capacity(usize::try_from(self.quota.min(1 << 20)).unwrap_or(0)),
            ..TaskResult::default()
        };
        if self.owned.is_empty() {
            return Ok(out);
        }
        let mut rng = StdRng::from_rng(&mut rand::rng());
        // The revision each owned stream is at, as far as this task knows.
        let mut revisions: Vec<Option<u64>> = vec![None; self.owned.len()];
        // The position of the last event this task appended to each owned stream.
        let mut positions: Vec<Option<Position>> = vec![None; self.owned.len()];
        let mut interval = self.pacing.map(|(period, first)| {
            let mut i = tokio::time::interval_at(first.into(), period);
            i.set_missed_tick_behavior(MissedTickBehavior::Burst);
            i
        });
        let mut seq = self.seq_base;
        let mut done = 0;
        while done < self.quota {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if let Some(i) = interval.as_mut() {
                i.tick().await;
            }
            let k = rng.random_range(0..self.owned.len());
            let stream = &self.streams[self.owned[k]];
            loop {
                let sent_ns = u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let tag = format!("bench:{stream}");
                let events = (0..self.batch)
                    .map(|_| {
                        seq += 1;
                        let event = payload::event(seq, sent_ns);
                        match self.mode {
                            Mode::Plain => event,
                            Mode::Conditional => event.with_tags([tag.as_str()]),
                        }
                    })
                    .collect();
                let expected =
                    revisions[k].map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
                let _turn = match &self.gate {
                    Some(gate) => Some(gate.read().await),
                    None => None,
                };
                let t0 = Instant::now();
                let result = match self.mode {
                    Mode::Plain => self.store.append(stream, expected, events).await,
                    Mode::Conditional => {
                        let query = Query::from_items([QueryItem::new().tags([tag.as_str()])]);
                        let condition = AppendCondition::new(query, positions[k]);
                        self.store
                            .append_if(stream, expected, events, condition)
                            .await
                    }
                };
                match result {
                    Ok(r) => {
                        positions[k] = Some(r.position);
                        out.latencies.push(t0.elapsed());
                        out.completed_at.push(self.start.elapsed());
                        revisions[k] = Some(r.next_expected_revision);
                        out.events += self.batch as u64;
                        break;
                    }
                    Err(AppendError::WrongExpectedRevision { actual, .. }) => {
                        // Another writer (or an earlier run on the same database) got
                        // there first: learn where the stream is and retry.
                        out.conflicts += 1;
                        revisions[k] = match actual {
                            CurrentRevision::Current(r) => Some(r),
                            CurrentRevision::NoStream => None,
                        };
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            done += 1;
        }
        Ok(out)
    }
}

/// Events completed in each whole second of `elapsed`, given when each append of
/// `batch` events completed.
fn per_second(completed_at: &[Duration], batch: u64, elapsed: Duration) -> Vec<u64> {
    let seconds = elapsed.as_secs() as usize;
    let mut buckets = vec![0u64; seconds];
    for at in completed_at {
        if let Some(b) = buckets.get_mut(at.as_secs() as usize) {
            *b += batch;
        }
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_buckets_whole_seconds_only() {
        let at = [0.1, 0.9, 1.0, 1.5, 2.2].map(Duration::from_secs_f64);
        assert_eq!(
            per_second(&at, 10, Duration::from_secs_f64(2.5)),
            vec![20, 20]
        );
        assert!(per_second(&at, 1, Duration::from_millis(900)).is_empty());
    }
}
