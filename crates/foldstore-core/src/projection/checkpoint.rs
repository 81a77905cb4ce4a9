//! Checkpoints: the position of the last event a projection applied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::Position;
use crate::projection::HandlerError;

/// Why a checkpoint could not be saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The stored checkpoint is not the expected one: another runner moved it.
    #[error(
        "the checkpoint is at {found:?}, not at the expected {expected:?}: another runner of this projection is active"
    )]
    Moved {
        /// What the caller expected.
        expected: Option<Position>,
        /// What is stored.
        found: Option<Position>,
    },
    /// The checkpoint storage failed.
    #[error("the checkpoint storage failed: {0}")]
    Storage(HandlerError),
}

/// Where a projection keeps its checkpoint when its read model cannot store it in the
/// same transaction as its data (at-least-once delivery: after a crash between applying
/// a batch and saving its checkpoint, the batch is applied again, so the read model must
/// tolerate that). The SQL read models of `foldstore-sqlite` and `foldstore-postgres`
/// store the checkpoint with the data instead, which makes each event count once.
///
/// Saving is a compare-and-set on the previous checkpoint, so two runners of one
/// projection cannot silently overwrite each other.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// The stored checkpoint of `name`, `None` when the projection never applied an
    /// event (or was reset).
    async fn load(&self, name: &str) -> Result<Option<Position>, CheckpointError>;

    /// Stores `position` for `name` if the stored checkpoint is still `expected`.
    async fn save(
        &self,
        name: &str,
        expected: Option<Position>,
        position: Position,
    ) -> Result<(), CheckpointError>;

    /// Removes the checkpoint of `name` (for a rebuild from zero).
    async fn reset(&self, name: &str) -> Result<(), CheckpointError>;
}

/// Checkpoints in memory, for tests. Clones share the same map.
///
/// ```
/// use foldstore_core::Position;
/// use foldstore_core::projection::{CheckpointStore, InMemoryCheckpointStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let checkpoints = InMemoryCheckpointStore::new();
/// checkpoints.save("balances", None, Position::new(7)).await?;
/// assert_eq!(checkpoints.load("balances").await?, Some(Position::new(7)));
/// // A second runner that still believes the checkpoint is empty is refused:
/// assert!(checkpoints.save("balances", None, Position::new(9)).await.is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryCheckpointStore(Arc<Mutex<HashMap<String, Position>>>);

impl InMemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Position>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl CheckpointStore for InMemoryCheckpointStore {
    async fn load(&self, name: &str) -> Result<Option<Position>, CheckpointError> {
        Ok(self.map().get(name).copied())
    }

    async fn save(
        &self,
        name: &str,
        expected: Option<Position>,
        position: Position,
    ) -> Result<(), CheckpointError> {
        let mut map = self.map();
        let found = map.get(name).copied();
        if found != expected {
            return Err(CheckpointError::Moved { expected, found });
        }
        map.insert(name.to_owned(), position);
        Ok(())
    }

    async fn reset(&self, name: &str) -> Result<(), CheckpointError> {
        self.map().remove(name);
        Ok(())
    }
}
