//! Payments as a decider ([`PaymentDecider`]): one stream `payment-<order>` per order,
//! charged at most once. The provider's answer (charged, declined, no answer) is the
//! bus's business ([`crate::bus::Shop`]); this records what was charged.

use foldstore_core::DomainEvent;
use foldstore_core::decider::Decider;
use serde::{Deserialize, Serialize};

use crate::order::OrderId;

/// An order's payment stream: `payment-<n>`.
pub fn stream(order: OrderId) -> foldstore_core::StreamName {
    foldstore_core::StreamName::new(format!("payment-{}", order.0))
        .expect("payment-<n> is a valid stream name")
}

/// What happened to a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum PaymentEvent {
    /// The customer's card was charged.
    Charged {
        /// The order.
        #[event(tag = "order")]
        order: OrderId,
        /// How much, in cents.
        amount: u64,
    },
}

/// Charge an order's card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// The order.
    pub order: OrderId,
    /// How much, in cents.
    pub amount: u64,
}

/// Whether the order's card was charged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Payment {
    /// Charged already.
    pub charged: bool,
}

/// The payment decider: a second charge of the same order changes nothing.
///
/// ```
/// use foldstore_core::decider::{Decider, fold};
/// use order_saga::order::OrderId;
/// use order_saga::payment::{Charge, PaymentDecider, PaymentEvent};
///
/// let order = OrderId(4);
/// let paid = fold(&PaymentDecider, &[PaymentEvent::Charged { order, amount: 900 }]);
/// assert_eq!(PaymentDecider.decide(&Charge { order, amount: 900 }, &paid), Ok(vec![]));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct PaymentDecider;

impl Decider for PaymentDecider {
    type Command = Charge;
    type Event = PaymentEvent;
    type State = Payment;
    type Error = std::convert::Infallible;

    fn initial_state(&self) -> Payment {
        Payment::default()
    }

    fn decide(&self, command: &Charge, state: &Payment) -> Result<Vec<PaymentEvent>, Self::Error> {
        Ok(if state.charged {
            vec![]
        } else {
            vec![PaymentEvent::Charged {
                order: command.order,
                amount: command.amount,
            }]
        })
    }

    fn evolve(&self, _state: Payment, _event: &PaymentEvent) -> Payment {
        Payment { charged: true }
    }
}
