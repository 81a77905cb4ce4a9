//! An order as a decider ([`OrderDecider`]): placed, stock reserved, paid, then
//! confirmed, or cancelled on the way. No I/O.
//!
//! An order lives in the stream `order-<n>`. Its steps must come in that order, and an
//! order ends once: a step for an ended order is refused, except a repeat of the step
//! that ended it, which changes nothing.

use foldstore_core::DomainEvent;
use foldstore_core::decider::Decider;
use serde::{Deserialize, Serialize};

use crate::stock::Sku;

/// An order number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OrderId(pub u32);

impl OrderId {
    /// The order's stream: `order-<n>`.
    pub fn stream(self) -> foldstore_core::StreamName {
        foldstore_core::StreamName::new(format!("order-{}", self.0))
            .expect("order-<n> is a valid stream name")
    }
}

impl std::fmt::Display for OrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How the customer pays. The example's payment provider answers by card: a real one
/// would answer by its own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Card {
    /// Charged.
    Good,
    /// Refused by the provider.
    Declined,
    /// The provider never answers.
    Unreachable,
}

/// Why an order was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CancelReason {
    /// Not enough stock to reserve.
    OutOfStock,
    /// The payment was refused.
    PaymentDeclined,
    /// The payment did not arrive in time.
    PaymentTimedOut,
}

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum OrderEvent {
    /// The customer placed it.
    Placed {
        /// The order.
        #[event(tag = "order")]
        order: OrderId,
        /// What it buys.
        sku: Sku,
        /// How many.
        quantity: u32,
        /// Its price, in cents.
        amount: u64,
        /// How it is paid.
        card: Card,
    },
    /// Its stock is set aside; the payment is next.
    StockReserved {
        /// The order.
        #[event(tag = "order")]
        order: OrderId,
        /// What to charge, in cents.
        amount: u64,
        /// The card to charge.
        card: Card,
    },
    /// It is paid.
    Paid {
        /// The order.
        #[event(tag = "order")]
        order: OrderId,
    },
    /// It will ship: the end of a successful order.
    Confirmed {
        /// The order.
        #[event(tag = "order")]
        order: OrderId,
    },
    /// It was cancelled: the end of a failed one.
    Cancelled {
        /// The order.
        #[event(tag = "order")]
        order: OrderId,
        /// Its stock, for the saga to release.
        sku: Sku,
        /// Why.
        reason: CancelReason,
    },
}

impl OrderEvent {
    /// The event as the store hands it to readers (in `order-<n>`, at revision 0), for
    /// testing reactions with `SagaSpec`.
    ///
    /// ```
    /// use order_saga::order::{OrderEvent, OrderId};
    ///
    /// let recorded = OrderEvent::Paid { order: OrderId(5) }.recorded();
    /// assert_eq!((recorded.stream.as_str(), recorded.event_type.as_str()), ("order-5", "Paid"));
    /// ```
    pub fn recorded(&self) -> foldstore_core::RecordedEvent {
        let new = self.to_new_event().expect("order events encode");
        let data: serde_json::Value =
            serde_json::from_slice(&new.data).expect("order events are JSON");
        let order = match self {
            OrderEvent::Placed { order, .. }
            | OrderEvent::StockReserved { order, .. }
            | OrderEvent::Paid { order }
            | OrderEvent::Confirmed { order }
            | OrderEvent::Cancelled { order, .. } => *order,
        };
        foldstore_core::saga::recorded_event(order.stream().as_str(), &new.event_type, &data)
    }
}

/// What can be asked of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderCommand {
    /// Place it.
    Place {
        /// The order.
        order: OrderId,
        /// What it buys.
        sku: Sku,
        /// How many.
        quantity: u32,
        /// Its price, in cents.
        amount: u64,
        /// How it is paid.
        card: Card,
    },
    /// Record that its stock is reserved.
    MarkReserved {
        /// The order.
        order: OrderId,
    },
    /// Record that it is paid.
    MarkPaid {
        /// The order.
        order: OrderId,
    },
    /// Confirm it.
    Confirm {
        /// The order.
        order: OrderId,
    },
    /// Cancel it.
    Cancel {
        /// The order.
        order: OrderId,
        /// Why.
        reason: CancelReason,
    },
}

impl OrderCommand {
    /// The order the command is for.
    pub fn order(&self) -> OrderId {
        match self {
            OrderCommand::Place { order, .. }
            | OrderCommand::MarkReserved { order }
            | OrderCommand::MarkPaid { order }
            | OrderCommand::Confirm { order }
            | OrderCommand::Cancel { order, .. } => *order,
        }
    }
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Not placed.
    #[default]
    New,
    /// Placed, waiting for stock.
    Placed,
    /// Stock reserved, waiting for payment.
    Reserved,
    /// Paid, waiting for confirmation.
    Paid,
    /// Ended well.
    Confirmed,
    /// Ended cancelled.
    Cancelled(CancelReason),
}

impl Status {
    /// Whether the order has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Confirmed | Status::Cancelled(_))
    }
}

/// Why an order refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// The order number is taken.
    #[error("order {0} is already placed: pick another order number")]
    AlreadyPlaced(OrderId),
    /// A step that does not follow from where the order stands.
    #[error("order {order} is {status:?}: it cannot {step} now")]
    OutOfOrder {
        /// The order.
        order: OrderId,
        /// Where it stands.
        status: Status,
        /// The step asked for.
        step: &'static str,
    },
}

/// What an order remembers to decide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Order {
    /// Where it stands.
    pub status: Status,
    /// What it buys, its price and its card (set once placed).
    pub terms: Option<(Sku, u64, Card)>,
}

impl Order {
    /// Applies one event.
    pub fn evolve(mut self, event: &OrderEvent) -> Self {
        self.status = match *event {
            OrderEvent::Placed {
                sku, amount, card, ..
            } => {
                self.terms = Some((sku, amount, card));
                Status::Placed
            }
            OrderEvent::StockReserved { .. } => Status::Reserved,
            OrderEvent::Paid { .. } => Status::Paid,
            OrderEvent::Confirmed { .. } => Status::Confirmed,
            OrderEvent::Cancelled { reason, .. } => Status::Cancelled(reason),
        };
        self
    }

    /// Decides what a command does. An empty list means "already done".
    pub fn decide(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        use Status as S;
        let order = command.order();
        let refuse = |step| {
            Err(OrderError::OutOfOrder {
                order,
                status: self.status,
                step,
            })
        };
        match (*command, self.status) {
            (
                OrderCommand::Place {
                    sku,
                    quantity,
                    amount,
                    card,
                    ..
                },
                S::New,
            ) => Ok(vec![OrderEvent::Placed {
                order,
                sku,
                quantity,
                amount,
                card,
            }]),
            (OrderCommand::Place { .. }, _) => Err(OrderError::AlreadyPlaced(order)),
            (OrderCommand::MarkReserved { .. }, S::Placed) => {
                let (_, amount, card) = self.terms.expect("a placed order has terms");
                Ok(vec![OrderEvent::StockReserved {
                    order,
                    amount,
                    card,
                }])
            }
            (OrderCommand::MarkReserved { .. }, S::Reserved | S::Paid | S::Confirmed) => Ok(vec![]),
            (OrderCommand::MarkReserved { .. }, _) => refuse("record a reservation"),
            (OrderCommand::MarkPaid { .. }, S::Reserved) => Ok(vec![OrderEvent::Paid { order }]),
            (OrderCommand::MarkPaid { .. }, S::Paid | S::Confirmed) => Ok(vec![]),
            (OrderCommand::MarkPaid { .. }, _) => refuse("record a payment"),
            (OrderCommand::Confirm { .. }, S::Paid) => Ok(vec![OrderEvent::Confirmed { order }]),
            (OrderCommand::Confirm { .. }, S::Confirmed) => Ok(vec![]),
            (OrderCommand::Confirm { .. }, _) => refuse("be confirmed"),
            (OrderCommand::Cancel { reason, .. }, S::Placed | S::Reserved) => {
                Ok(vec![OrderEvent::Cancelled {
                    order,
                    sku: self.terms.expect("a placed order has terms").0,
                    reason,
                }])
            }
            (OrderCommand::Cancel { .. }, S::Cancelled(_)) => Ok(vec![]),
            (OrderCommand::Cancel { .. }, _) => refuse("be cancelled"),
        }
    }
}

/// The order decider, for the toolkit's command handler.
///
/// ```
/// use foldstore_core::decider::{Decider, fold};
/// use order_saga::order::{Card, OrderCommand, OrderDecider, OrderEvent, OrderId, Status};
/// use order_saga::stock::Sku;
///
/// let order = OrderId(1);
/// let placed = OrderEvent::Placed { order, sku: Sku(3), quantity: 2, amount: 1800, card: Card::Good };
/// let reserved = OrderEvent::StockReserved { order, amount: 1800, card: Card::Good };
/// let state = fold(&OrderDecider, &[placed, reserved]);
/// assert_eq!(state.status, Status::Reserved);
/// // Not paid yet: it cannot be confirmed.
/// assert!(OrderDecider.decide(&OrderCommand::Confirm { order }, &state).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderDecider;

impl Decider for OrderDecider {
    type Command = OrderCommand;
    type Event = OrderEvent;
    type State = Order;
    type Error = OrderError;

    fn initial_state(&self) -> Order {
        Order::default()
    }

    fn decide(&self, command: &OrderCommand, state: &Order) -> Result<Vec<OrderEvent>, OrderError> {
        state.decide(command)
    }

    fn evolve(&self, state: Order, event: &OrderEvent) -> Order {
        state.evolve(event)
    }
}

#[cfg(test)]
mod tests {
    use foldstore_core::testing::DeciderSpec;

    use super::*;

    const O: OrderId = OrderId(1);

    fn reserved() -> OrderEvent {
        OrderEvent::StockReserved {
            order: O,
            amount: 900,
            card: Card::Good,
        }
    }

    fn placed() -> OrderEvent {
        OrderEvent::Placed {
            order: O,
            sku: Sku(2),
            quantity: 1,
            amount: 900,
            card: Card::Good,
        }
    }

    #[test]
    fn a_reserved_order_can_be_cancelled_and_names_its_stock() {
        DeciderSpec::new(OrderDecider)
            .given([placed(), reserved()])
            .when(OrderCommand::Cancel {
                order: O,
                reason: CancelReason::PaymentTimedOut,
            })
            .then([OrderEvent::Cancelled {
                order: O,
                sku: Sku(2),
                reason: CancelReason::PaymentTimedOut,
            }]);
    }

    #[test]
    fn a_paid_order_cannot_be_cancelled() {
        DeciderSpec::new(OrderDecider)
            .given([placed(), reserved(), OrderEvent::Paid { order: O }])
            .when(OrderCommand::Cancel {
                order: O,
                reason: CancelReason::PaymentTimedOut,
            })
            .then_error(OrderError::OutOfOrder {
                order: O,
                status: Status::Paid,
                step: "be cancelled",
            });
    }

    #[test]
    fn an_order_ends_once() {
        let cancelled = OrderEvent::Cancelled {
            order: O,
            sku: Sku(2),
            reason: CancelReason::OutOfStock,
        };
        DeciderSpec::new(OrderDecider)
            .given([placed(), cancelled.clone()])
            .when(OrderCommand::Cancel {
                order: O,
                reason: CancelReason::PaymentDeclined,
            })
            .then([]);
        DeciderSpec::new(OrderDecider)
            .given([placed(), cancelled])
            .when(OrderCommand::MarkReserved { order: O })
            .then_error(OrderError::OutOfOrder {
                order: O,
                status: Status::Cancelled(CancelReason::OutOfStock),
                step: "record a reservation",
            });
    }

    #[test]
    fn steps_come_in_order() {
        DeciderSpec::new(OrderDecider)
            .given([placed()])
            .when(OrderCommand::MarkPaid { order: O })
            .then_error(OrderError::OutOfOrder {
                order: O,
                status: Status::Placed,
                step: "record a payment",
            });
        DeciderSpec::new(OrderDecider)
            .given([placed()])
            .when(OrderCommand::Place {
                order: O,
                sku: Sku(1),
                quantity: 1,
                amount: 1,
                card: Card::Good,
            })
            .then_error(OrderError::AlreadyPlaced(O));
    }
}
