//! Projections: read models kept up to date from `$all`.
//!
//! A projection follows the global log (optionally through an [`crate::EventFilter`],
//! such as one category) from a stored checkpoint, applies events in batches to a read
//! model and records the position of the last applied event as its new checkpoint.
//!
//! - [`ProjectionRunner`] does the following, catching up, rebuilding from zero,
//!   stopping gracefully ([`Stopper`]) and reporting lag ([`ProjectionMonitor`]).
//! - [`ProjectionTarget`] is what it applies to: a read model together with its
//!   checkpoint. The SQL read models of `foldstore-sqlite` and `foldstore-postgres`
//!   write a batch's effects and its checkpoint in one transaction, so each event takes
//!   effect exactly once, and take a lock so that one runner per projection is active
//!   across processes.
//! - [`Checkpointed`] joins any [`Projection`] with a [`CheckpointStore`] (such as
//!   [`InMemoryCheckpointStore`]): at least once.
//!
//! `docs/projections-and-sagas.md` is the guide.

mod checkpoint;
mod error;
mod lock;
mod monitor;
mod runner;
mod stop;
mod target;

pub use checkpoint::{CheckpointError, CheckpointStore, InMemoryCheckpointStore};
pub use error::{HandlerError, ProjectionError, validate_name};
pub use lock::{InMemoryLock, InMemoryLocks, RunnerLock};
pub use monitor::{Lag, ProjectionMonitor, ProjectionOptions, ProjectionStatus};
pub use runner::ProjectionRunner;
pub use stop::{StopSignal, Stopper};
pub use target::{Checkpointed, Projection, ProjectionTarget};
