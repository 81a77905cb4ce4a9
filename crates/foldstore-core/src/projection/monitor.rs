//! A projection runner's options, status and lag.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};

#[cfg(doc)]
use crate::projection::ProjectionRunner;
use crate::{EventFilter, EventStore, Position, ReadAllOptions, ReadError};

/// How a [`ProjectionRunner`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionOptions {
    /// Which events of `$all` the projection sees (every event by default).
    pub filter: EventFilter,
    /// The most events applied in one batch (one transaction of a SQL read model).
    /// Default 256.
    pub batch_size: usize,
    /// How often a runner that does not hold the projection's lock tries again.
    /// Default 500 ms.
    pub lock_retry: Duration,
}

impl Default for ProjectionOptions {
    fn default() -> Self {
        Self {
            filter: EventFilter::all(),
            batch_size: 256,
            lock_retry: Duration::from_millis(500),
        }
    }
}

/// What a runner has done so far, from [`ProjectionMonitor::status`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// Whether the runner holds the projection and follows the store.
    pub active: bool,
    /// Whether the runner is waiting for another runner's lock.
    pub waiting_for_lock: bool,
    /// The checkpoint: the position of the last applied event.
    pub checkpoint: Option<Position>,
    /// The store's head, read after the last batch.
    pub head: Option<Position>,
    /// Events applied by this runner.
    pub events_applied: u64,
    /// Batches applied by this runner.
    pub batches: u64,
    /// When the last applied event was recorded in the store.
    pub last_event_recorded_at: Option<DateTime<Utc>>,
    /// When the runner last applied a batch (wall clock).
    pub last_applied_at: Option<DateTime<Utc>>,
}

/// How far a projection is behind the store, from [`ProjectionMonitor::lag`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lag {
    /// The projection's checkpoint.
    pub checkpoint: Option<Position>,
    /// The store's head when measured.
    pub head: Option<Position>,
    /// Events after the checkpoint that the projection will apply (those its filter
    /// passes), counted up to the cap given to [`ProjectionMonitor::lag`].
    pub events_behind: usize,
    /// Whether `events_behind` reached the cap (there may be more).
    pub capped: bool,
    /// When the oldest event not yet applied was recorded: `now - this` is how long
    /// the read model has been stale. `None` when caught up.
    pub oldest_unapplied_at: Option<DateTime<Utc>>,
}

impl Lag {
    /// How long the read model has been stale at `now` (zero when caught up).
    pub fn time_behind(&self, now: DateTime<Utc>) -> chrono::Duration {
        self.oldest_unapplied_at
            .map_or(chrono::Duration::zero(), |t| {
                (now - t).max(chrono::Duration::zero())
            })
    }
}

/// Watches a runner from elsewhere (a health endpoint, a test). Cheap to clone.
#[derive(Clone)]
pub struct ProjectionMonitor {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) filter: EventFilter,
    pub(crate) status: Arc<Mutex<ProjectionStatus>>,
}

impl std::fmt::Debug for ProjectionMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionMonitor")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl ProjectionMonitor {
    /// The runner's status now.
    pub fn status(&self) -> ProjectionStatus {
        lock(&self.status).clone()
    }

    /// Measures how far the projection is behind: counts the events after its
    /// checkpoint that its filter passes, up to `cap` (a monitoring call reads at most
    /// `cap` events), and finds when the oldest of them was recorded.
    pub async fn lag(&self, cap: usize) -> Result<Lag, ReadError> {
        let checkpoint = self.status().checkpoint;
        let head = self.store.head_position().await?;
        let mut options = ReadAllOptions::forwards()
            .max_count(cap.max(1))
            .filter(self.filter.clone());
        options.from = checkpoint.map(Position::next);
        let behind = if head.is_some() && head > checkpoint {
            self.store.read_all(options).await?
        } else {
            Vec::new()
        };
        Ok(Lag {
            checkpoint,
            head,
            events_behind: behind.len().min(cap),
            capped: behind.len() >= cap.max(1),
            oldest_unapplied_at: behind.first().map(|e| e.recorded_at),
        })
    }
}

pub(crate) fn lock(status: &Mutex<ProjectionStatus>) -> MutexGuard<'_, ProjectionStatus> {
    status.lock().unwrap_or_else(|p| p.into_inner())
}

/// Clears `active` when a run ends, however it ends.
pub(crate) struct ActiveGuard(pub(crate) Arc<Mutex<ProjectionStatus>>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut status = lock(&self.0);
        status.active = false;
        status.waiting_for_lock = false;
    }
}
