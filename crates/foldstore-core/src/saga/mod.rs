//! Sagas (process managers): react to events by dispatching commands.
//!
//! A [`Saga`] turns an event into a [`Reaction`]: commands to dispatch now, commands
//! to dispatch later ([`Schedule`], for timeouts and reminders), and schedules to
//! cancel. A [`SagaRunner`] follows `$all`, dispatches through the application's
//! [`CommandBus`] with a [`DispatchContext`] (correlation id, causation id = the
//! triggering event's id, and a deterministic id seed), and keeps everything it must
//! remember in the event store itself, under deterministic event ids, so that a restart
//! resumes where it stopped and a replay writes nothing twice. Rejected commands are
//! compensated ([`Saga::compensate`]); events that keep failing go to a dead-letter
//! stream ([`dead_letter_stream`]) and the saga moves on. [`SagaSpec`] tests a saga's
//! reactions given/when/then.
//!
//! `docs/projections-and-sagas.md` is the guide.

mod bus;
mod clock;
mod context;
mod definition;
mod error;
mod records;
mod runner;
mod status;
mod testing;

pub use bus::{CommandBus, DispatchError, DispatchErrorKind};
pub use clock::{Clock, ManualClock, SystemClock};
pub use context::DispatchContext;
pub use definition::{EventRef, Failure, Reaction, Saga, Schedule};
pub use error::SagaError;
pub use records::{
    DEAD_LETTER_CATEGORY, DEAD_LETTERED, DeadLetter, POSITION_CATEGORY, SCHEDULE_CATEGORY,
    dead_letter_stream,
};
pub use runner::SagaRunner;
pub use status::{SagaMonitor, SagaOptions, SagaStatus};
pub use testing::{SagaSpec, recorded_event};
