//! Why a saga runner stops.

use crate::projection::HandlerError;
#[cfg(doc)]
use crate::projection::RunnerLock;
use crate::{AppendError, ReadError, SubscriptionError};

/// Why a saga runner stopped. Restarting it resumes from its recorded position; what
/// it had dispatched is dispatched again with the same ids, which writes nothing new.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// The saga's name is not valid.
    #[error("invalid saga name {name:?}: use 1 to 100 ASCII letters, digits, `_`, `-` or `.`")]
    InvalidName {
        /// The refused name.
        name: String,
    },
    /// Reading the store failed.
    #[error(
        "saga {saga}: reading the event store failed: {source}; restart the runner once the store is back"
    )]
    Read {
        /// The saga.
        saga: String,
        /// The failure.
        #[source]
        source: ReadError,
    },
    /// The subscription failed.
    #[error(
        "saga {saga}: its subscription failed: {source}; restart the runner once the store is back"
    )]
    Subscription {
        /// The saga.
        saga: String,
        /// The failure.
        #[source]
        source: SubscriptionError,
    },
    /// Writing one of the saga's records (position, schedule, dead letter) failed.
    #[error(
        "saga {saga}: storing its {what} failed: {source}; restart the runner once the store is back"
    )]
    Append {
        /// The saga.
        saga: String,
        /// Which record.
        what: &'static str,
        /// The failure.
        #[source]
        source: AppendError,
    },
    /// The saga's [`RunnerLock`] is held by another runner, or was lost while running.
    #[error(
        "saga {saga}: {reason}; run one runner per saga (restart this one to wait for the lock)"
    )]
    LockLost {
        /// The saga.
        saga: String,
        /// What happened.
        reason: String,
    },
    /// The saga's [`RunnerLock`] failed.
    #[error("saga {saga}: its lock failed: {source}")]
    Lock {
        /// The saga.
        saga: String,
        /// The failure.
        #[source]
        source: HandlerError,
    },
    /// One of the saga's stored records does not decode (for a schedule: its command
    /// type changed incompatibly).
    #[error(
        "saga {saga}: a stored record does not decode: {message}; keep the command type backward compatible, or move the saga to a new name"
    )]
    Corrupt {
        /// The saga.
        saga: String,
        /// What failed.
        message: String,
    },
}
