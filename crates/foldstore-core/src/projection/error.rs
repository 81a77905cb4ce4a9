//! Errors of projections and of the code they run.

use crate::{Position, ReadError, RecordedEvent, StreamName, SubscriptionError};

/// An error raised by user code: a projection's handler, a checkpoint store, a saga.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Why a projection stopped. The runner never records a checkpoint past an event that
/// was not applied, so after any of these, restarting the runner resumes correctly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// The projection's name is not usable as a checkpoint key.
    #[error(
        "invalid projection name {name:?}: use 1 to 100 ASCII letters, digits, `_`, `-` or `.`"
    )]
    InvalidName {
        /// The refused name.
        name: String,
    },
    /// Reading the event store failed.
    #[error(
        "projection {name}: reading the event store failed: {source}; restart the runner once the store is back"
    )]
    Read {
        /// The projection.
        name: String,
        /// The failure.
        #[source]
        source: ReadError,
    },
    /// The subscription the runner follows failed.
    #[error(
        "projection {name}: its subscription failed: {source}; restart the runner once the store is back"
    )]
    Subscription {
        /// The projection.
        name: String,
        /// The failure.
        #[source]
        source: SubscriptionError,
    },
    /// The projection's handler refused an event. The batch holding it was not
    /// recorded (exactly-once targets roll it back), so the event is retried when the
    /// runner restarts.
    #[error(
        "projection {name} could not apply the {event_type} event at position {position} of {stream}: {source}; nothing from its batch was recorded: fix the handler (or rebuild) and restart the runner"
    )]
    Handler {
        /// The projection.
        name: String,
        /// The event's stream.
        stream: StreamName,
        /// The event's type.
        event_type: String,
        /// The event's position.
        position: Position,
        /// The handler's error.
        #[source]
        source: HandlerError,
    },
    /// The read model or checkpoint storage failed (a database error, a full disk).
    #[error(
        "projection {name}: storing the read model or its checkpoint failed: {source}; check the read-model database, then restart the runner"
    )]
    Storage {
        /// The projection.
        name: String,
        /// The failure.
        #[source]
        source: HandlerError,
    },
    /// The stored checkpoint is not the one this runner last wrote: another runner of
    /// the same projection is active. Nothing of the batch was recorded.
    #[error(
        "projection {name}: the checkpoint moved under this runner (expected {expected:?}, found {found:?}): another runner of this projection is active; run one runner per projection (the SQL read models take a lock for this)"
    )]
    CheckpointMoved {
        /// The projection.
        name: String,
        /// The checkpoint this runner expected.
        expected: Option<Position>,
        /// The checkpoint stored.
        found: Option<Position>,
    },
    /// The lock that made this runner the only active one was lost (its database
    /// connection broke). Another runner may take over; restart this one to wait for
    /// the lock again.
    #[error(
        "projection {name}: lost its lock ({reason}); restart the runner to wait for the lock again"
    )]
    LockLost {
        /// The projection.
        name: String,
        /// What happened.
        reason: String,
    },
}

impl ProjectionError {
    /// A [`ProjectionError::Handler`] for `event`.
    pub fn handler(name: &str, event: &RecordedEvent, source: HandlerError) -> Self {
        Self::Handler {
            name: name.to_owned(),
            stream: event.stream.clone(),
            event_type: event.event_type.clone(),
            position: event.position,
            source,
        }
    }

    /// A [`ProjectionError::Storage`].
    pub fn storage(name: &str, source: impl Into<HandlerError>) -> Self {
        Self::Storage {
            name: name.to_owned(),
            source: source.into(),
        }
    }
}

/// Checks a projection (or saga) name: 1 to 100 ASCII letters, digits, `_`, `-`, `.`.
///
/// ```
/// use foldstore_core::projection::validate_name;
///
/// assert!(validate_name("balances.v2").is_ok());
/// assert!(validate_name("no spaces").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), ProjectionError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ProjectionError::InvalidName {
            name: name.to_owned(),
        })
    }
}
