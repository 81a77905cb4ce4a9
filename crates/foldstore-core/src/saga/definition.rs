//! The saga trait and what a reaction holds.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::projection::HandlerError;
use crate::saga::DispatchError;
use crate::{EventFilter, Position, RecordedEvent, StreamName};

/// A saga (process manager): reacts to events by producing commands.
///
/// The reaction is a pure function of the event, so replaying an event (after a
/// restart or a retry) produces the same commands, which the runner dispatches with
/// the same deterministic ids. Long-running processes keep their own state where the
/// application keeps state: in streams the commands write, read by the command
/// handlers.
///
/// ```
/// use chrono::Duration;
/// use foldstore_core::projection::HandlerError;
/// use foldstore_core::saga::{Reaction, Saga};
/// use foldstore_core::{EventFilter, RecordedEvent};
///
/// /// When an order is placed, reserve stock; cancel the order if unpaid after a day.
/// struct Fulfilment;
///
/// #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// enum Command {
///     Reserve { order: String },
///     CancelIfUnpaid { order: String },
/// }
///
/// impl Saga for Fulfilment {
///     type Command = Command;
///     fn name(&self) -> &str {
///         "fulfilment"
///     }
///     fn filter(&self) -> EventFilter {
///         EventFilter::category("order").unwrap()
///     }
///     fn react(&self, event: &RecordedEvent) -> Result<Reaction<Command>, HandlerError> {
///         let order = event.stream.id().to_owned();
///         Ok(match event.event_type.as_str() {
///             "Placed" => Reaction::new()
///                 .command(Command::Reserve { order: order.clone() })
///                 .schedule(format!("unpaid-{order}"), event.recorded_at + Duration::days(1), Command::CancelIfUnpaid { order }),
///             "Paid" => Reaction::new().cancel(format!("unpaid-{order}")),
///             _ => Reaction::new(),
///         })
///     }
/// }
/// ```
pub trait Saga: Send + Sync + 'static {
    /// The commands it produces. Serializable, because scheduled commands are stored.
    type Command: Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static;

    /// The saga's name: 1 to 100 ASCII letters, digits, `_`, `-` or `.`. Its position,
    /// schedules and dead letters are stored under it.
    fn name(&self) -> &str;

    /// Which events of `$all` it sees (every event by default; the saga's own
    /// bookkeeping streams are always skipped).
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }

    /// The reaction to `event`. An error makes the runner retry the event and, after
    /// [`crate::saga::SagaOptions::max_attempts`], move it to the dead-letter stream.
    fn react(&self, event: &RecordedEvent) -> Result<Reaction<Self::Command>, HandlerError>;

    /// Compensating commands for a command that was rejected
    /// ([`crate::saga::DispatchErrorKind::Rejected`]). The rest of that reaction's
    /// commands are not dispatched. None by default.
    fn compensate(&self, failure: &Failure<Self::Command>) -> Vec<Self::Command> {
        let _ = failure;
        Vec::new()
    }
}

/// What a saga does in response to one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Reaction<C> {
    /// Commands to dispatch now, in order.
    pub commands: Vec<C>,
    /// Commands to dispatch later (timeouts, reminders). Stored in the event store, so
    /// they survive restarts.
    pub schedules: Vec<Schedule<C>>,
    /// Keys of earlier schedules to cancel (a timeout that is no longer needed).
    pub cancellations: Vec<String>,
}

impl<C> Default for Reaction<C> {
    fn default() -> Self {
        Self {
            commands: Vec::new(),
            schedules: Vec::new(),
            cancellations: Vec::new(),
        }
    }
}

impl<C> Reaction<C> {
    /// Nothing to do.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a command to dispatch now.
    pub fn command(mut self, command: C) -> Self {
        self.commands.push(command);
        self
    }

    /// Schedules `command` for `due` under `key` (unique within this reaction; used to
    /// cancel it).
    pub fn schedule(mut self, key: impl Into<String>, due: DateTime<Utc>, command: C) -> Self {
        self.schedules.push(Schedule {
            key: key.into(),
            due,
            command,
        });
        self
    }

    /// Cancels every pending schedule with `key`.
    pub fn cancel(mut self, key: impl Into<String>) -> Self {
        self.cancellations.push(key.into());
        self
    }

    /// Whether the reaction does nothing.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.schedules.is_empty() && self.cancellations.is_empty()
    }
}

/// A command to dispatch at a given time.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule<C> {
    /// Names the schedule, to cancel it.
    pub key: String,
    /// When to dispatch.
    pub due: DateTime<Utc>,
    /// What to dispatch.
    pub command: C,
}

/// A reference to a stored event, as dead letters and failures carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    /// The event's id.
    pub id: Uuid,
    /// Its stream.
    pub stream: StreamName,
    /// Its revision in the stream.
    pub revision: u64,
    /// Its position in `$all`.
    pub position: Position,
    /// Its type.
    pub event_type: String,
}

impl From<&RecordedEvent> for EventRef {
    fn from(e: &RecordedEvent) -> Self {
        Self {
            id: e.id,
            stream: e.stream.clone(),
            revision: e.revision,
            position: e.position,
            event_type: e.event_type.clone(),
        }
    }
}

/// A rejected command, handed to [`Saga::compensate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Failure<C> {
    /// The event whose reaction (or schedule) produced the command.
    pub trigger: EventRef,
    /// The command that was rejected.
    pub command: C,
    /// Why.
    pub error: DispatchError,
    /// The key of the schedule, when the command was a scheduled one.
    pub schedule: Option<String>,
}
