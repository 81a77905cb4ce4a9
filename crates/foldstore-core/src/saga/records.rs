//! The saga's own records in the event store: position, schedules, dead letters.
//!
//! Every record has a deterministic id derived from what it records, so writing it
//! again (a replay) is an idempotent retry that writes nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::saga::EventRef;
use crate::{Position, StreamName};

/// The category of saga position streams: `saga_position-<saga>`.
pub const POSITION_CATEGORY: &str = "saga_position";
/// The category of saga schedule streams: `saga_schedule-<saga>`.
pub const SCHEDULE_CATEGORY: &str = "saga_schedule";
/// The category of saga dead-letter streams: `saga_deadletter-<saga>`.
pub const DEAD_LETTER_CATEGORY: &str = "saga_deadletter";

/// Event type of a position record.
pub(crate) const PROCESSED: &str = "SagaProcessed";
/// Event type of a scheduled command.
pub(crate) const SCHEDULED: &str = "SagaScheduled";
/// Event type of a fired schedule.
pub(crate) const FIRED: &str = "SagaFired";
/// Event type of cancelled schedules.
pub(crate) const CANCELLED: &str = "SagaCancelled";
/// Event type of a dead letter.
pub const DEAD_LETTERED: &str = "SagaDeadLettered";

/// The stream of `saga`'s records of `category`.
pub(crate) fn stream(category: &str, saga: &str) -> StreamName {
    // The saga name was validated (ASCII letters, digits, `_`, `-`, `.`), so the name
    // is valid.
    StreamName::new(format!("{category}-{saga}")).unwrap_or_else(|_| unreachable!())
}

/// The dead-letter stream of a saga: `saga_deadletter-<saga>`.
///
/// ```
/// assert_eq!(foldstore_core::saga::dead_letter_stream("shipping").as_str(), "saga_deadletter-shipping");
/// ```
pub fn dead_letter_stream(saga: &str) -> StreamName {
    StreamName::new(format!("{DEAD_LETTER_CATEGORY}-{saga}")).unwrap_or_else(|_| {
        StreamName::new(DEAD_LETTER_CATEGORY).unwrap_or_else(|_| unreachable!())
    })
}

/// Whether `category` is one of the saga bookkeeping categories.
pub(crate) fn is_bookkeeping(category: &str) -> bool {
    matches!(
        category,
        POSITION_CATEGORY | SCHEDULE_CATEGORY | DEAD_LETTER_CATEGORY
    )
}

/// The saga handled every event up to `position`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Processed {
    pub(crate) position: Position,
    pub(crate) event_id: Uuid,
}

/// A command scheduled for later.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Scheduled {
    pub(crate) schedule_id: Uuid,
    pub(crate) key: String,
    pub(crate) due: DateTime<Utc>,
    pub(crate) command: serde_json::Value,
    pub(crate) trigger: EventRef,
    pub(crate) correlation_id: Uuid,
}

/// A schedule that was dispatched (or given up on).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Fired {
    pub(crate) schedule_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// Schedules cancelled by a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Cancelled {
    pub(crate) key: String,
    pub(crate) schedule_ids: Vec<Uuid>,
}

/// An event (or a scheduled command) that kept failing, in the dead-letter stream.
/// Read them with [`crate::EventStore::read_stream`] on [`dead_letter_stream`] and
/// [`crate::RecordedEvent::json`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The saga.
    pub saga: String,
    /// The event that kept failing (for a scheduled command: the event that scheduled
    /// it).
    pub event: EventRef,
    /// The key of the scheduled command that kept failing, if it was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The last error.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u32,
}
