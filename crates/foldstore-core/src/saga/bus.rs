//! The command bus a saga dispatches through, implemented by the application.

use async_trait::async_trait;

use crate::saga::DispatchContext;

/// Whether a failed dispatch is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DispatchErrorKind {
    /// The command was refused for good (a business rule, a conflict that a retry
    /// cannot fix): the saga is asked for compensating commands
    /// ([`crate::saga::Saga::compensate`]).
    Rejected,
    /// The command may succeed later (the store or a service was unavailable): the
    /// saga retries the event, and dead-letters it after
    /// [`crate::saga::SagaOptions::max_attempts`].
    Transient,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", match .kind {
    DispatchErrorKind::Rejected => "command rejected",
    _ => "command failed, may succeed if retried",
})]
pub struct DispatchError {
    /// Rejected or transient.
    pub kind: DispatchErrorKind,
    /// What happened, for people (stored in dead letters).
    pub message: String,
}

impl DispatchError {
    /// A command refused for good.
    pub fn rejected(message: impl Into<String>) -> Self {
        Self {
            kind: DispatchErrorKind::Rejected,
            message: message.into(),
        }
    }

    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: DispatchErrorKind::Transient,
            message: message.into(),
        }
    }
}

/// Executes a saga's commands. The application implements it (typically by handing the
/// command to its command handler).
///
/// **Idempotence by seed.** The saga runner dispatches a command again after a restart
/// or a retry, with the same [`DispatchContext::id_seed`]. A dispatch must then have no
/// further effect: append the command's events with the ids
/// [`DispatchContext::event_id`] gives, and treat a replayed append as done (foldstore
/// answers a repeated append of the same ids with the first result and writes
/// nothing).
#[async_trait]
pub trait CommandBus<C>: Send + Sync {
    /// Executes `command`.
    async fn dispatch(&self, command: C, context: DispatchContext) -> Result<(), DispatchError>;
}
