//! The projection runner: follows `$all` from a checkpoint and applies batches.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use futures::StreamExt;
use futures::future::{Either, select};

use crate::projection::monitor::{ActiveGuard, lock};
use crate::projection::{
    ProjectionError, ProjectionMonitor, ProjectionOptions, ProjectionStatus, ProjectionTarget,
    StopSignal,
};
use crate::{EventFilter, EventStore, Position, ReadAllOptions, SubscribeFrom};

/// Runs a projection: reads its target's checkpoint, follows `$all` (through the
/// filter) after it, and applies the events in batches, each batch recording the last
/// event's position as the new checkpoint.
///
/// - [`ProjectionRunner::run`] follows the store live until stopped; it first waits for
///   the target's lock, so of several runners of one projection (in any processes)
///   only one applies events, and another takes over when it stops or dies.
/// - [`ProjectionRunner::catch_up`] applies what is in the store now and returns.
/// - [`ProjectionRunner::rebuild`] empties the read model and its checkpoint, then
///   catches up from the first event.
/// - [`ProjectionRunner::monitor`] reports progress and lag.
///
/// Positions are opaque: the runner only compares them and passes them back to the
/// store, so sparse positions (PostgreSQL) are fine.
///
/// ```
/// use std::sync::Arc;
/// use async_trait::async_trait;
/// use foldstore_core::projection::{Checkpointed, HandlerError, InMemoryCheckpointStore, Projection, ProjectionRunner, Stopper};
/// use foldstore_core::{EventFilter, EventStore, ExpectedRevision, InMemoryStore, NewEvent, RecordedEvent, StreamName};
///
/// #[derive(Default)]
/// struct Total(i64);
///
/// #[async_trait]
/// impl Projection for Total {
///     async fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
///         self.0 += event.json::<serde_json::Value>()?["amount"].as_i64().unwrap_or(0);
///         Ok(())
///     }
///     async fn reset(&mut self) -> Result<(), HandlerError> {
///         self.0 = 0;
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = Arc::new(InMemoryStore::new());
/// let account = StreamName::new("account-1")?;
/// let deposit = NewEvent::json("Deposited", &serde_json::json!({"amount": 5}))?;
/// store.append(&account, ExpectedRevision::Any, vec![deposit]).await?;
///
/// let target = Checkpointed::new("totals", Total::default(), InMemoryCheckpointStore::new())?;
/// let mut runner = ProjectionRunner::new(store.clone(), target).filter(EventFilter::category("account")?);
/// let monitor = runner.monitor();
/// let stopper = Stopper::new();
/// let signal = stopper.signal();
/// let task = tokio::spawn(async move { runner.run(signal).await.map(|_| runner) });
///
/// // Wait until the runner has applied the event, then stop it gracefully.
/// while monitor.status().events_applied < 1 {
///     tokio::task::yield_now().await;
/// }
/// stopper.stop();
/// let runner = task.await??;
/// assert_eq!(runner.target().projection().0, 5);
/// assert_eq!(monitor.lag(100).await?.events_behind, 0);
/// # Ok(())
/// # }
/// ```
pub struct ProjectionRunner<T> {
    store: Arc<dyn EventStore>,
    target: T,
    options: ProjectionOptions,
    status: Arc<Mutex<ProjectionStatus>>,
}

impl<T> std::fmt::Debug for ProjectionRunner<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("options", &self.options)
            .field("status", &*lock(&self.status))
            .finish_non_exhaustive()
    }
}

impl<T: ProjectionTarget> ProjectionRunner<T> {
    /// A runner of `target` over `store`, with default options.
    pub fn new(store: Arc<dyn EventStore>, target: T) -> Self {
        let status = ProjectionStatus {
            name: target.name().to_owned(),
            ..ProjectionStatus::default()
        };
        Self {
            store,
            target,
            options: ProjectionOptions::default(),
            status: Arc::new(Mutex::new(status)),
        }
    }

    /// Sets every option.
    pub fn options(mut self, options: ProjectionOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the filter: which events of `$all` the projection sees.
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.options.filter = filter;
        self
    }

    /// Sets the largest batch.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.options.batch_size = batch_size.max(1);
        self
    }

    /// The target.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// The target, mutably.
    pub fn target_mut(&mut self) -> &mut T {
        &mut self.target
    }

    /// The target, giving up the runner.
    pub fn into_target(self) -> T {
        self.target
    }

    /// A monitor of this runner's progress.
    pub fn monitor(&self) -> ProjectionMonitor {
        ProjectionMonitor {
            store: self.store.clone(),
            filter: self.options.filter.clone(),
            status: self.status.clone(),
        }
    }

    fn name(&self) -> String {
        self.target.name().to_owned()
    }

    async fn acquire_once(&mut self) -> Result<(), ProjectionError> {
        if self.target.try_acquire().await? {
            Ok(())
        } else {
            Err(ProjectionError::LockLost {
                name: self.name(),
                reason: "another runner holds the projection".to_owned(),
            })
        }
    }

    /// Empties the read model and removes its checkpoint. Fails with
    /// [`ProjectionError::LockLost`] if another runner holds the projection; the lock
    /// is released again when it returns.
    pub async fn reset(&mut self) -> Result<(), ProjectionError> {
        self.acquire_once().await?;
        let result = self.reset_holding().await;
        self.released(result).await
    }

    /// Rebuilds the read model from the first event: [`ProjectionRunner::reset`], then
    /// [`ProjectionRunner::catch_up`], holding the lock throughout.
    pub async fn rebuild(&mut self) -> Result<(), ProjectionError> {
        self.acquire_once().await?;
        let result = match self.reset_holding().await {
            Ok(()) => self.catch_up_holding().await,
            Err(e) => Err(e),
        };
        self.released(result).await
    }

    /// Applies every event after the checkpoint up to the store's head as it is now,
    /// then returns. Fails with [`ProjectionError::LockLost`] if another runner holds
    /// the projection; the lock is released again when it returns.
    pub async fn catch_up(&mut self) -> Result<(), ProjectionError> {
        self.acquire_once().await?;
        let result = self.catch_up_holding().await;
        self.released(result).await
    }

    /// Releases the lock, keeping the first error.
    async fn released(
        &mut self,
        result: Result<(), ProjectionError>,
    ) -> Result<(), ProjectionError> {
        let released = self.target.release().await;
        result.and(released)
    }

    async fn reset_holding(&mut self) -> Result<(), ProjectionError> {
        self.target.reset().await?;
        lock(&self.status).checkpoint = None;
        Ok(())
    }

    async fn catch_up_holding(&mut self) -> Result<(), ProjectionError> {
        let name = self.name();
        let read = |source| ProjectionError::Read {
            name: name.clone(),
            source,
        };
        let head = self.store.head_position().await.map_err(read)?;
        let mut checkpoint = self.target.checkpoint().await?;
        lock(&self.status).checkpoint = checkpoint;
        while head.is_some() && checkpoint < head {
            let mut options = ReadAllOptions::forwards()
                .max_count(self.options.batch_size)
                .filter(self.options.filter.clone());
            options.from = checkpoint.map(Position::next);
            let page = self.store.read_all(options).await.map_err(read)?;
            let Some(last) = page.last().map(|e| e.position) else {
                break;
            };
            self.apply(checkpoint, &page).await?;
            checkpoint = Some(last);
        }
        Ok(())
    }

    async fn apply(
        &mut self,
        previous: Option<Position>,
        events: &[crate::RecordedEvent],
    ) -> Result<(), ProjectionError> {
        self.target.apply_batch(previous, events).await?;
        let head = self.store.head_position().await.ok().flatten();
        let mut status = lock(&self.status);
        if let Some(last) = events.last() {
            status.checkpoint = Some(last.position);
            status.last_event_recorded_at = Some(last.recorded_at);
        }
        status.head = head.max(status.checkpoint);
        status.events_applied += events.len() as u64;
        status.batches += 1;
        status.last_applied_at = Some(Utc::now());
        Ok(())
    }

    /// Follows the store until `stop` fires: waits for the projection's lock (trying
    /// again every [`ProjectionOptions::lock_retry`]), then applies every event after
    /// the checkpoint, batch by batch, and new ones as they are committed. A stop
    /// lets the batch being applied finish first.
    ///
    /// Returns `Ok` when stopped (or when the store shut down), and the error that
    /// stopped it otherwise; nothing past an unapplied event is ever recorded, so a
    /// restart resumes where it should.
    pub async fn run(&mut self, stop: StopSignal) -> Result<(), ProjectionError> {
        let _active = ActiveGuard(self.status.clone());
        let result = self.run_holding(stop).await;
        let released = self.target.release().await;
        result.and(released)
    }

    async fn run_holding(&mut self, mut stop: StopSignal) -> Result<(), ProjectionError> {
        loop {
            if stop.is_stopped() {
                return Ok(());
            }
            if self.target.try_acquire().await? {
                break;
            }
            lock(&self.status).waiting_for_lock = true;
            let wait = Box::pin(tokio::time::sleep(self.options.lock_retry));
            if let Either::Left(_) = select(Box::pin(stop.stopped()), wait).await {
                return Ok(());
            }
        }
        {
            let mut status = lock(&self.status);
            status.waiting_for_lock = false;
            status.active = true;
        }
        let mut checkpoint = self.target.checkpoint().await?;
        lock(&self.status).checkpoint = checkpoint;
        let from = checkpoint.map_or(SubscribeFrom::Start, SubscribeFrom::After);
        let subscription = self
            .store
            .subscribe_to_all(from, self.options.filter.clone())
            .await
            .map_err(|source| ProjectionError::Read {
                name: self.name(),
                source,
            })?;
        let mut batches = subscription.ready_chunks(self.options.batch_size.max(1));
        loop {
            if stop.is_stopped() {
                return Ok(());
            }
            let chunk = match select(Box::pin(stop.stopped()), batches.next()).await {
                Either::Left(_) => return Ok(()),
                Either::Right((None, _)) => return Ok(()),
                Either::Right((Some(chunk), _)) => chunk,
            };
            let mut events = Vec::with_capacity(chunk.len());
            let mut failure = None;
            for item in chunk {
                match item {
                    Ok(event) => events.push(event),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if let Some(last) = events.last().map(|e| e.position) {
                self.apply(checkpoint, &events).await?;
                checkpoint = Some(last);
            }
            if let Some(source) = failure {
                return Err(ProjectionError::Subscription {
                    name: self.name(),
                    source,
                });
            }
        }
    }
}
