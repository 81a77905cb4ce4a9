//! Transfers: the events of a transfer stream `transfer-<id>`, shared by both designs.
//!
//! In the aggregate design the stream records the saga's progress
//! (`TransferRequested`, then `TransferDebited`, then one outcome); in the DCB design
//! it holds the two account events of the transfer, or `TransferFailed`.

use foldstore_core::{NewEvent, RecordedEvent, StreamName};
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum TransferEvent {
    /// Someone asked for the transfer (aggregate design: the saga starts here).
    TransferRequested(TransferRequest),
    /// The source was debited (aggregate design: the saga's first step is done).
    TransferDebited {
        /// The transfer.
        id: Uuid,
    },
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

/// The stored event types, one per variant.
pub const TRANSFER_EVENT_TYPES: [&str; 5] = [
    "TransferRequested",
    "TransferDebited",
    "TransferCompleted",
    "TransferFailed",
    "TransferCompensated",
];

impl TransferEvent {
    /// The stored event type.
    pub fn event_type(&self) -> &'static str {
        match self {
            TransferEvent::TransferRequested(_) => "TransferRequested",
            TransferEvent::TransferDebited { .. } => "TransferDebited",
            TransferEvent::TransferCompleted { .. } => "TransferCompleted",
            TransferEvent::TransferFailed { .. } => "TransferFailed",
            TransferEvent::TransferCompensated { .. } => "TransferCompensated",
        }
    }

    /// The transfer's id.
    pub fn id(&self) -> Uuid {
        match self {
            TransferEvent::TransferRequested(r) => r.id,
            TransferEvent::TransferDebited { id }
            | TransferEvent::TransferCompleted { id }
            | TransferEvent::TransferFailed { id, .. }
            | TransferEvent::TransferCompensated { id, .. } => *id,
        }
    }

    /// Whether this event ends the transfer.
    pub fn is_outcome(&self) -> bool {
        matches!(
            self,
            TransferEvent::TransferCompleted { .. }
                | TransferEvent::TransferFailed { .. }
                | TransferEvent::TransferCompensated { .. }
        )
    }

    /// The event as stored.
    pub fn to_new_event(&self) -> NewEvent {
        let value = serde_json::to_value(self).expect("transfer events serialize");
        let data = value.get("data").cloned().unwrap_or_default();
        NewEvent::json(self.event_type(), &data).expect("JSON serializes")
    }

    /// Reads a transfer event back, or `None` when `event` is not one.
    pub fn from_recorded(event: &RecordedEvent) -> Option<TransferEvent> {
        if !TRANSFER_EVENT_TYPES.contains(&event.event_type.as_str()) {
            return None;
        }
        let data: serde_json::Value = event.json().ok()?;
        serde_json::from_value(serde_json::json!({ "type": event.event_type, "data": data })).ok()
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
