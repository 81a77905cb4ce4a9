//! What a dispatched command carries: correlation, causation and a deterministic id
//! seed.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Metadata, RecordedEvent};

/// The namespace of every id a saga derives (UUIDv5), fixed forever: changing it would
/// make replays after an upgrade write new events.
const NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_0f7e_3b2a_4d7c_9e51_2a8b_0d4f_66a1);

/// A deterministic id: the UUIDv5 of the parts, joined with NUL bytes. The same parts
/// give the same id in every process and version.
pub(crate) fn derive_id(parts: &[&str]) -> Uuid {
    Uuid::new_v5(&NAMESPACE, parts.join("\0").as_bytes())
}

/// Where a saga's command comes from, handed to [`crate::saga::CommandBus::dispatch`].
///
/// A dispatch context always has its ids (they come from the triggering event) and
/// names the saga; [`crate::CommandContext`], the command handler's, has optional ids
/// and extra metadata. `CommandContext::from(&dispatch)` turns one into the other with
/// the same ids, so a saga can hand its commands to a [`crate::CommandHandler`].
///
/// `id_seed` is derived from the saga's name, the triggering event's id and the step,
/// so a replay of the same event (after a restart, or a retry) dispatches the same
/// command with the same seed. Give the events the command appends the ids
/// [`DispatchContext::event_id`] returns: the store recognises the replayed append as a
/// retry and writes nothing (see the idempotency rule in `docs/semantics.md`).
///
/// ```
/// use foldstore_core::saga::DispatchContext;
/// use uuid::Uuid;
///
/// let trigger = Uuid::now_v7();
/// let a = DispatchContext::derived("shipping", trigger, trigger, "command", 0);
/// let b = DispatchContext::derived("shipping", trigger, trigger, "command", 0);
/// assert_eq!(a.event_id(0), b.event_id(0));
/// assert_ne!(a.event_id(0), a.event_id(1));
/// assert_eq!(a.metadata().causation_id(), Some(trigger));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchContext {
    /// The saga that dispatched the command.
    pub saga: String,
    /// The correlation id: the triggering event's correlation id, or its id when it
    /// has none.
    pub correlation_id: Uuid,
    /// The causation id: the id of the event that triggered the command.
    pub causation_id: Uuid,
    /// A deterministic seed for the ids of whatever the command writes.
    pub id_seed: Uuid,
}

impl DispatchContext {
    /// A context whose seed is derived from the saga, the trigger and the step
    /// (`kind` names the kind of step, `step` numbers it).
    pub fn derived(saga: &str, correlation_id: Uuid, trigger: Uuid, kind: &str, step: u32) -> Self {
        Self {
            saga: saga.to_owned(),
            correlation_id,
            causation_id: trigger,
            id_seed: derive_id(&[saga, &trigger.to_string(), kind, &step.to_string()]),
        }
    }

    /// The context of step `step` of the reaction to `event`.
    pub(crate) fn for_event(saga: &str, event: &RecordedEvent, kind: &str, step: u32) -> Self {
        let correlation = event.metadata.correlation_id().unwrap_or(event.id);
        Self::derived(saga, correlation, event.id, kind, step)
    }

    /// The id of the `index`-th event the command writes: the same on every replay, and
    /// the same id [`crate::CommandHandler`] gives that event when handed this context
    /// (see [`crate::deterministic_event_id`]).
    pub fn event_id(&self, index: u32) -> Uuid {
        crate::deterministic_event_id(self.id_seed, u64::from(index))
    }

    /// Metadata carrying the correlation and causation ids, for the events the
    /// command writes.
    pub fn metadata(&self) -> Metadata {
        Metadata::new()
            .with_correlation_id(self.correlation_id)
            .with_causation_id(self.causation_id)
    }
}

/// The command handler's context for a command a saga sends: the same correlation id,
/// causation id and id seed, so the handler writes the ids [`DispatchContext::event_id`]
/// names and a replayed reaction appends nothing.
impl From<&DispatchContext> for crate::CommandContext {
    fn from(saga: &DispatchContext) -> Self {
        crate::CommandContext::new()
            .correlation_id(saga.correlation_id)
            .causation_id(saga.causation_id)
            .id_seed(saga.id_seed)
    }
}

#[cfg(test)]
mod handler_ids {
    use super::DispatchContext;

    #[test]
    fn a_saga_context_names_the_ids_the_command_handler_writes() {
        let saga = DispatchContext::derived(
            "orders",
            uuid::Uuid::from_u128(1),
            uuid::Uuid::from_u128(2),
            "send",
            0,
        );
        let handler = crate::CommandContext::from(&saga);
        let seed = handler.id_seed.expect("the seed travels");
        for i in 0..3 {
            assert_eq!(
                saga.event_id(i),
                crate::deterministic_event_id(seed, u64::from(i))
            );
        }
        assert_eq!(handler.correlation_id, Some(saga.correlation_id));
        assert_eq!(handler.causation_id, Some(saga.causation_id));
    }
}
