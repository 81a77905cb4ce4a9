//! What a runner applies events to: a read model together with its checkpoint.

use async_trait::async_trait;

use crate::projection::{CheckpointError, CheckpointStore, HandlerError, ProjectionError};
use crate::{Position, RecordedEvent};

/// A read model and its checkpoint, as the [`crate::projection::ProjectionRunner`] sees
/// them.
///
/// The runner reads the checkpoint, follows `$all` after it, and hands the events over
/// in batches. A target that stores the batch's effects and the new checkpoint in one
/// transaction (the SQL read models of `foldstore-sqlite` and `foldstore-postgres`)
/// makes each event take effect exactly once, whatever crashes. [`Checkpointed`] adapts
/// a [`Projection`] plus a [`CheckpointStore`] (at least once).
#[async_trait]
pub trait ProjectionTarget: Send {
    /// The projection's name: the key of its checkpoint.
    fn name(&self) -> &str;

    /// Makes this the only active runner of the projection, if it can. Returns `false`
    /// when another runner holds the projection; the runner then tries again later.
    /// Targets without a lock return `true`.
    async fn try_acquire(&mut self) -> Result<bool, ProjectionError> {
        Ok(true)
    }

    /// Gives the lock up (the runner calls it when [`crate::projection::ProjectionRunner::run`]
    /// ends), so that another runner can take over at once. Targets without a lock do
    /// nothing.
    async fn release(&mut self) -> Result<(), ProjectionError> {
        Ok(())
    }

    /// The stored checkpoint: the position of the last applied event.
    async fn checkpoint(&mut self) -> Result<Option<Position>, ProjectionError>;

    /// Applies `events` (in order, never empty) and records the last one's position
    /// as the checkpoint, provided the stored checkpoint is still `previous`
    /// (otherwise [`ProjectionError::CheckpointMoved`], recording nothing).
    async fn apply_batch(
        &mut self,
        previous: Option<Position>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError>;

    /// Empties the read model and removes the checkpoint, so that the next run rebuilds
    /// it from the first event.
    async fn reset(&mut self) -> Result<(), ProjectionError>;
}

/// A read model updated one event at a time, whose checkpoint lives elsewhere
/// (see [`Checkpointed`]).
#[async_trait]
pub trait Projection: Send {
    /// Applies one event.
    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError>;

    /// Empties the read model (before a rebuild).
    async fn reset(&mut self) -> Result<(), HandlerError>;
}

/// A [`Projection`] with its checkpoint in a [`CheckpointStore`]: the batch is applied,
/// then the checkpoint saved. A crash in between applies the batch again on restart
/// (at least once), so use it for read models that tolerate that (in memory, or
/// idempotent upserts).
///
/// ```
/// use async_trait::async_trait;
/// use foldstore_core::projection::{Checkpointed, HandlerError, InMemoryCheckpointStore, Projection, ProjectionRunner};
/// use foldstore_core::{EventStore, ExpectedRevision, InMemoryStore, NewEvent, RecordedEvent, StreamName};
/// use std::sync::Arc;
///
/// #[derive(Default)]
/// struct Count(usize);
///
/// #[async_trait]
/// impl Projection for Count {
///     async fn apply(&mut self, _: &RecordedEvent) -> Result<(), HandlerError> {
///         self.0 += 1;
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
/// let s = StreamName::new("order-1")?;
/// store.append(&s, ExpectedRevision::Any, vec![NewEvent::json("Placed", &())?]).await?;
///
/// let target = Checkpointed::new("order-count", Count::default(), InMemoryCheckpointStore::new())?;
/// let mut runner = ProjectionRunner::new(store, target);
/// runner.catch_up().await?;
/// assert_eq!(runner.target().projection().0, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Checkpointed<P, C> {
    name: String,
    projection: P,
    checkpoints: C,
}

impl<P: Projection, C: CheckpointStore> Checkpointed<P, C> {
    /// `projection` named `name`, its checkpoint kept in `checkpoints`.
    pub fn new(
        name: impl Into<String>,
        projection: P,
        checkpoints: C,
    ) -> Result<Self, ProjectionError> {
        let name = name.into();
        crate::projection::validate_name(&name)?;
        Ok(Self {
            name,
            projection,
            checkpoints,
        })
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The projection, mutably.
    pub fn projection_mut(&mut self) -> &mut P {
        &mut self.projection
    }

    fn checkpoint_error(&self, e: CheckpointError) -> ProjectionError {
        match e {
            CheckpointError::Moved { expected, found } => ProjectionError::CheckpointMoved {
                name: self.name.clone(),
                expected,
                found,
            },
            CheckpointError::Storage(source) => ProjectionError::Storage {
                name: self.name.clone(),
                source,
            },
        }
    }
}

#[async_trait]
impl<P: Projection, C: CheckpointStore> ProjectionTarget for Checkpointed<P, C> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn checkpoint(&mut self) -> Result<Option<Position>, ProjectionError> {
        self.checkpoints
            .load(&self.name)
            .await
            .map_err(|e| self.checkpoint_error(e))
    }

    async fn apply_batch(
        &mut self,
        previous: Option<Position>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        for event in events {
            if let Err(e) = self.projection.apply(event).await {
                return Err(ProjectionError::handler(&self.name, event, e));
            }
        }
        self.checkpoints
            .save(&self.name, previous, last.position)
            .await
            .map_err(|e| self.checkpoint_error(e))
    }

    async fn reset(&mut self) -> Result<(), ProjectionError> {
        self.projection
            .reset()
            .await
            .map_err(|e| ProjectionError::storage(&self.name, e))?;
        self.checkpoints
            .reset(&self.name)
            .await
            .map_err(|e| self.checkpoint_error(e))
    }
}
