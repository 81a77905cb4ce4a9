//! A saga runner's options and what it reports.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::Position;
#[cfg(doc)]
use crate::{projection::RunnerLock, saga::SagaRunner};

/// How a [`SagaRunner`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaOptions {
    /// How many times an event (or a due schedule) is tried before it goes to the
    /// dead-letter stream. Default 3.
    pub max_attempts: u32,
    /// The pause before a retry, multiplied by the attempt number. Default 100 ms.
    pub retry_delay: Duration,
    /// The position is recorded after every event that made the saga act, and after
    /// this many events in a row that did not. Default 1000.
    pub quiet_checkpoint_every: u32,
    /// The most events taken from the subscription at once. Default 256.
    pub batch_size: usize,
    /// Start from the first event instead of the recorded position (a replay: every
    /// dispatch repeats with the same ids, so nothing new is written).
    pub from_start: bool,
    /// How often a runner whose [`RunnerLock`] is held elsewhere tries again.
    /// Default 500 ms.
    pub lock_retry: Duration,
}

impl Default for SagaOptions {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            retry_delay: Duration::from_millis(100),
            quiet_checkpoint_every: 1000,
            batch_size: 256,
            from_start: false,
            lock_retry: Duration::from_millis(500),
        }
    }
}

/// What a saga runner has done, from [`SagaMonitor::status`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SagaStatus {
    /// Whether the runner is following the store.
    pub active: bool,
    /// Whether the runner waits for its [`RunnerLock`].
    pub waiting_for_lock: bool,
    /// The position of the last event handled.
    pub position: Option<Position>,
    /// Events handled by this runner.
    pub events_handled: u64,
    /// Commands dispatched successfully (compensations included).
    pub commands_dispatched: u64,
    /// Commands rejected (each then compensated).
    pub commands_rejected: u64,
    /// Events and schedules moved to the dead-letter stream.
    pub dead_letters: u64,
    /// Schedules waiting for their time.
    pub schedules_pending: usize,
    /// Schedules dispatched by this runner.
    pub schedules_fired: u64,
}

/// Watches a saga runner. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SagaMonitor(pub(crate) Arc<Mutex<SagaStatus>>);

impl SagaMonitor {
    /// The runner's status now.
    pub fn status(&self) -> SagaStatus {
        lock(&self.0).clone()
    }
}

pub(crate) fn lock(status: &Mutex<SagaStatus>) -> MutexGuard<'_, SagaStatus> {
    status.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) struct ActiveGuard(pub(crate) Arc<Mutex<SagaStatus>>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut status = lock(&self.0);
        status.active = false;
        status.waiting_for_lock = false;
    }
}
