//! Transfers: the events of a transfer stream `transfer-<id>`, shared by both designs,
//! and the transfer decider of the aggregate design.
//!
//! In the aggregate design the stream records the saga's progress
//! (`TransferRequested`, then `TransferDebited`, then one outcome), written through
//! [`TransferDecider`], which refuses steps out of order. In the DCB design it holds the
//! transfer's account events and `TransferCompleted`, or `TransferFailed`.

use foldstore_core::decider::Decider;
use foldstore_core::{DomainEvent, RecordedEvent, StreamName};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::account::AccountId;

/// The stream of transfer `id`: `transfer-<id in hex>`.
pub fn stream(id: Uuid) -> StreamName {
    StreamName::new(format!("transfer-{}", id.simple())).expect("a valid stream name")
}

/// A request to move `amount` cents from one account to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    /// The transfer's id.
    pub id: Uuid,
    /// Where the money comes from.
    pub from: AccountId,
    /// Where it goes.
    pub to: AccountId,
    /// How much, in cents.
    pub amount: u64,
}

/// What happened to a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum TransferEvent {
    /// Someone asked for the transfer (aggregate design: the saga starts here).
    TransferRequested(TransferRequest),
    /// The source was debited (aggregate design: the saga's first step is done). It
    /// repeats the request, so the saga's next step needs nothing else.
    TransferDebited(TransferRequest),
    /// The target was credited: the money moved.
    TransferCompleted {
        /// The transfer.
        id: Uuid,
    },
    /// The source was not debited: nothing moved.
    TransferFailed {
        /// The transfer.
        id: Uuid,
        /// Why.
        reason: String,
    },
    /// The target refused the credit, and the source got its money back.
    TransferCompensated {
        /// The transfer.
        id: Uuid,
        /// Why the credit was refused.
        reason: String,
    },
}

/// The types of the events that end a transfer.
pub const OUTCOME_TYPES: [&str; 3] = ["TransferCompleted", "TransferFailed", "TransferCompensated"];

impl TransferEvent {
    /// The transfer's id.
    pub fn id(&self) -> Uuid {
        match self {
            TransferEvent::TransferRequested(r) | TransferEvent::TransferDebited(r) => r.id,
            TransferEvent::TransferCompleted { id }
            | TransferEvent::TransferFailed { id, .. }
            | TransferEvent::TransferCompensated { id, .. } => *id,
        }
    }

    /// How the transfer ended, when this event ends it.
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            TransferEvent::TransferCompleted { .. } => Some(Outcome::Completed),
            TransferEvent::TransferFailed { .. } => Some(Outcome::Failed),
            TransferEvent::TransferCompensated { .. } => Some(Outcome::Compensated),
            _ => None,
        }
    }

    /// Reads a transfer event back, or `None` when `event` is not one.
    pub fn decode(event: &RecordedEvent) -> Option<TransferEvent> {
        TransferEvent::from_recorded(event).ok()
    }
}

/// How a transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The money moved.
    Completed,
    /// Nothing moved.
    Failed,
    /// The source was debited, the target refused, the source was refunded.
    Compensated,
}

/// What the saga asks of a transfer stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferCommand {
    /// Start the transfer.
    Request(TransferRequest),
    /// Record that the source was debited.
    RecordDebited(TransferRequest),
    /// Record that the target was credited.
    Complete {
        /// The transfer.
        id: Uuid,
    },
    /// Record that the debit was refused.
    Fail {
        /// The transfer.
        id: Uuid,
        /// Why.
        reason: String,
    },
    /// Record that the credit was refused and the source refunded.
    Compensate {
        /// The transfer.
        id: Uuid,
        /// Why the credit was refused.
        reason: String,
    },
}

impl TransferCommand {
    /// The transfer the command is for.
    pub fn id(&self) -> Uuid {
        match self {
            TransferCommand::Request(r) | TransferCommand::RecordDebited(r) => r.id,
            TransferCommand::Complete { id }
            | TransferCommand::Fail { id, .. }
            | TransferCommand::Compensate { id, .. } => *id,
        }
    }
}

/// Why a transfer step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The transfer was never requested.
    #[error("transfer {0} was never requested: request it first")]
    NotRequested(Uuid),
    /// The transfer has already ended.
    #[error("transfer {id} already ended ({outcome:?}): it cannot change any more")]
    AlreadyEnded {
        /// The transfer.
        id: Uuid,
        /// How it ended.
        outcome: Outcome,
    },
    /// The step needs the debit, which is not recorded.
    #[error("transfer {0} has no recorded debit: record the debit before the credit")]
    NotDebited(Uuid),
    /// The step needs no debit, but one is recorded.
    #[error("transfer {0} was debited: compensate it instead of failing it")]
    AlreadyDebited(Uuid),
}

/// A transfer's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transfer {
    /// The request, once made.
    pub request: Option<TransferRequest>,
    /// Whether the source was debited.
    pub debited: bool,
    /// How it ended, once it did.
    pub outcome: Option<Outcome>,
}

/// The transfer decider: the order of the saga's steps.
///
/// ```
/// use bank::transfer::{TransferCommand, TransferDecider, TransferError, TransferEvent};
/// use foldstore_core::testing::DeciderSpec;
/// use uuid::Uuid;
///
/// let id = Uuid::from_u128(1);
/// DeciderSpec::new(TransferDecider)
///     .given([])
///     .when(TransferCommand::Complete { id })
///     .then_error(TransferError::NotRequested(id));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TransferDecider;

impl Decider for TransferDecider {
    type Command = TransferCommand;
    type Event = TransferEvent;
    type State = Transfer;
    type Error = TransferError;

    fn initial_state(&self) -> Transfer {
        Transfer::default()
    }

    fn decide(
        &self,
        command: &TransferCommand,
        state: &Transfer,
    ) -> Result<Vec<TransferEvent>, TransferError> {
        let id = command.id();
        if let TransferCommand::Request(r) = command {
            // Asking again is not an error: the request stands.
            return Ok(match state.request {
                Some(_) => vec![],
                None => vec![TransferEvent::TransferRequested(*r)],
            });
        }
        if state.request.is_none() {
            return Err(TransferError::NotRequested(id));
        }
        if let Some(outcome) = state.outcome {
            return Err(TransferError::AlreadyEnded { id, outcome });
        }
        match command {
            TransferCommand::Request(_) => unreachable!("handled above"),
            TransferCommand::RecordDebited(_) if state.debited => Ok(vec![]),
            TransferCommand::RecordDebited(r) => Ok(vec![TransferEvent::TransferDebited(*r)]),
            TransferCommand::Fail { .. } if state.debited => Err(TransferError::AlreadyDebited(id)),
            TransferCommand::Fail { reason, .. } => Ok(vec![TransferEvent::TransferFailed {
                id,
                reason: reason.clone(),
            }]),
            _ if !state.debited => Err(TransferError::NotDebited(id)),
            TransferCommand::Complete { .. } => Ok(vec![TransferEvent::TransferCompleted { id }]),
            TransferCommand::Compensate { reason, .. } => {
                Ok(vec![TransferEvent::TransferCompensated {
                    id,
                    reason: reason.clone(),
                }])
            }
        }
    }

    fn evolve(&self, mut state: Transfer, event: &TransferEvent) -> Transfer {
        match event {
            TransferEvent::TransferRequested(r) => state.request = Some(*r),
            TransferEvent::TransferDebited(_) => state.debited = true,
            other => state.outcome = other.outcome(),
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use foldstore_core::testing::DeciderSpec;

    use super::*;

    fn request() -> TransferRequest {
        TransferRequest {
            id: Uuid::from_u128(1),
            from: AccountId(1),
            to: AccountId(2),
            amount: 5,
        }
    }

    #[test]
    fn a_debited_transfer_cannot_fail_only_be_compensated() {
        let r = request();
        DeciderSpec::new(TransferDecider)
            .given([
                TransferEvent::TransferRequested(r),
                TransferEvent::TransferDebited(r),
            ])
            .when(TransferCommand::Fail {
                id: r.id,
                reason: "x".into(),
            })
            .then_error(TransferError::AlreadyDebited(r.id));
    }

    #[test]
    fn an_ended_transfer_stays_ended() {
        let r = request();
        DeciderSpec::new(TransferDecider)
            .given([
                TransferEvent::TransferRequested(r),
                TransferEvent::TransferFailed {
                    id: r.id,
                    reason: "x".into(),
                },
            ])
            .when(TransferCommand::RecordDebited(r))
            .then_error(TransferError::AlreadyEnded {
                id: r.id,
                outcome: Outcome::Failed,
            });
    }

    #[test]
    fn a_credit_needs_the_debit_first() {
        let r = request();
        DeciderSpec::new(TransferDecider)
            .given([TransferEvent::TransferRequested(r)])
            .when(TransferCommand::Complete { id: r.id })
            .then_error(TransferError::NotDebited(r.id));
    }
}
