//! Group-commit statistics in the logs, for backends: each committed batch at `trace`,
//! and at `debug` a summary of every [`SUMMARY_EVERY`] in which something committed.
//!
//! A backend keeps one [`CommitLog`] per committing thread or task and calls
//! [`CommitLog::committed`] after each commit; with the default log level (`info`)
//! that costs a few additions and two level checks per batch.
//!
//! ```
//! use std::time::Duration;
//! use foldstore_core::commit_log::CommitLog;
//!
//! let mut log = CommitLog::new("sqlite");
//! log.committed(3, 12, Duration::from_micros(450));
//! ```

use std::time::{Duration, Instant};

/// How often the `debug` summary is written, when something committed meanwhile.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// The group commits of one committer since its last summary.
#[derive(Debug)]
pub struct CommitLog {
    backend: &'static str,
    since: Instant,
    batches: u64,
    requests: u64,
    events: u64,
    largest: usize,
    busy: Duration,
}

impl CommitLog {
    /// A log of `backend`'s commits (`sqlite`, `postgres`), starting now.
    pub fn new(backend: &'static str) -> Self {
        Self {
            backend,
            since: Instant::now(),
            batches: 0,
            requests: 0,
            events: 0,
            largest: 0,
            busy: Duration::ZERO,
        }
    }

    /// Records one committed batch of `requests` requests carrying `events` events,
    /// whose transaction took `took`; logs it at `trace`, and the summary at `debug`
    /// once [`SUMMARY_EVERY`] has passed since the last one.
    pub fn committed(&mut self, requests: usize, events: usize, took: Duration) {
        tracing::trace!(
            backend = self.backend,
            requests,
            events,
            took_us = took.as_micros(),
            "group commit"
        );
        self.batches += 1;
        self.requests += requests as u64;
        self.events += events as u64;
        self.largest = self.largest.max(requests);
        self.busy += took;
        let window = self.since.elapsed();
        if window < SUMMARY_EVERY {
            return;
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let requests_per_batch = self.requests as f64 / self.batches as f64;
            let busy_percent = 100.0 * self.busy.as_secs_f64() / window.as_secs_f64();
            tracing::debug!(
                backend = self.backend,
                window_s = window.as_secs(),
                batches = self.batches,
                requests = self.requests,
                events = self.events,
                requests_per_batch,
                largest_batch = self.largest,
                mean_commit_us = self.busy.as_micros() / u128::from(self.batches),
                busy_percent,
                "group commit statistics"
            );
        }
        *self = Self::new(self.backend);
    }
}
