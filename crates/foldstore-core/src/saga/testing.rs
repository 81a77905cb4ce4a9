//! Given/when/then tests of a saga's reactions: events in, expected commands out.

use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use crate::saga::{DispatchError, EventRef, Failure, Reaction, Saga};
use crate::{Metadata, Position, RecordedEvent, StreamName};

/// A recorded event for tests: `data` as JSON, a fresh id, revision 0, position 1,
/// recorded now. Panics on an invalid stream name or data that does not serialize.
#[track_caller]
pub fn recorded_event(stream: &str, event_type: &str, data: &impl Serialize) -> RecordedEvent {
    RecordedEvent {
        id: Uuid::now_v7(),
        stream: StreamName::new(stream).expect("recorded_event: an invalid stream name"),
        event_type: event_type.to_owned(),
        revision: 0,
        position: Position::new(1),
        data: serde_json::to_vec(data)
            .expect("recorded_event: the data does not serialize")
            .into(),
        content_type: crate::JSON.to_owned(),
        metadata: Metadata::new(),
        recorded_at: Utc::now(),
        tags: Vec::new(),
    }
}

/// Tests a saga's reactions without a store: `when` an event happens, `then` these
/// commands are dispatched (or scheduled, cancelled, compensated).
///
/// ```
/// use foldstore_core::projection::HandlerError;
/// use foldstore_core::saga::{DispatchError, Failure, Reaction, Saga, SagaSpec, recorded_event};
/// use foldstore_core::RecordedEvent;
///
/// struct Payment;
/// impl Saga for Payment {
///     type Command = String;
///     fn name(&self) -> &str { "payment" }
///     fn react(&self, e: &RecordedEvent) -> Result<Reaction<String>, HandlerError> {
///         Ok(match e.event_type.as_str() {
///             "Ordered" => Reaction::new().command(format!("charge {}", e.stream.id())),
///             _ => Reaction::new(),
///         })
///     }
///     fn compensate(&self, f: &Failure<String>) -> Vec<String> {
///         vec![format!("cancel {}", f.trigger.stream.id())]
///     }
/// }
///
/// SagaSpec::for_saga(Payment)
///     .when(recorded_event("order-7", "Ordered", &()))
///     .then_commands(vec!["charge 7".to_owned()])
///     .then_compensates("charge 7".to_owned(), DispatchError::rejected("card declined"), vec!["cancel 7".to_owned()]);
/// ```
#[derive(Debug)]
pub struct SagaSpec<S> {
    saga: S,
    event: Option<RecordedEvent>,
}

impl<S: Saga> SagaSpec<S> {
    /// A spec of `saga`.
    pub fn for_saga(saga: S) -> Self {
        Self { saga, event: None }
    }

    /// The event the saga reacts to.
    pub fn when(mut self, event: RecordedEvent) -> Self {
        self.event = Some(event);
        self
    }

    #[track_caller]
    fn event(&self) -> &RecordedEvent {
        self.event
            .as_ref()
            .expect("SagaSpec has no event. Did you forget to call `when`?")
    }

    /// The saga's reaction to the event. Panics if it fails.
    #[track_caller]
    pub fn reaction(&self) -> Reaction<S::Command> {
        let event = self.event();
        match self.saga.react(event) {
            Ok(r) => r,
            Err(e) => panic!(
                "the saga failed to react to {} in {}: {e}",
                event.event_type, event.stream
            ),
        }
    }

    /// Checks the commands dispatched at once.
    #[track_caller]
    pub fn then_commands(self, expected: Vec<S::Command>) -> Self
    where
        S::Command: PartialEq,
    {
        let reaction = self.reaction();
        assert_eq!(
            reaction.commands, expected,
            "the saga dispatched other commands than expected"
        );
        self
    }

    /// Checks that a command is scheduled under `key`.
    #[track_caller]
    pub fn then_scheduled(self, key: &str, expected: S::Command) -> Self
    where
        S::Command: PartialEq,
    {
        let reaction = self.reaction();
        let Some(schedule) = reaction.schedules.iter().find(|s| s.key == key) else {
            panic!(
                "the saga scheduled nothing under {key:?}; it scheduled {:?}",
                reaction
                    .schedules
                    .iter()
                    .map(|s| &s.key)
                    .collect::<Vec<_>>()
            );
        };
        assert_eq!(
            schedule.command, expected,
            "the command scheduled under {key:?}"
        );
        self
    }

    /// Checks that schedules under `key` are cancelled.
    #[track_caller]
    pub fn then_cancels(self, key: &str) -> Self {
        let reaction = self.reaction();
        assert!(
            reaction.cancellations.iter().any(|k| k == key),
            "the saga did not cancel {key:?}; it cancelled {:?}",
            reaction.cancellations
        );
        self
    }

    /// Checks that the saga fails to react (the event would be retried, then
    /// dead-lettered).
    #[track_caller]
    pub fn then_fails(self) -> Self {
        let event = self.event();
        if let Ok(r) = self.saga.react(event) {
            panic!(
                "the saga reacted to {} instead of failing: {r:?}",
                event.event_type
            );
        }
        self
    }

    /// Checks the compensation for `rejected` failing with `error`.
    #[track_caller]
    pub fn then_compensates(
        self,
        rejected: S::Command,
        error: DispatchError,
        expected: Vec<S::Command>,
    ) -> Self
    where
        S::Command: PartialEq,
    {
        let failure = Failure {
            trigger: EventRef::from(self.event()),
            command: rejected,
            error,
            schedule: None,
        };
        assert_eq!(
            self.saga.compensate(&failure),
            expected,
            "the saga compensated with other commands than expected"
        );
        self
    }
}
