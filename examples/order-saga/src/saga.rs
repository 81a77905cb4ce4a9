//! The order saga (process manager) on the toolkit's [`Saga`] runtime. The bus that
//! carries its commands to the three deciders is [`crate::bus::Shop`].
//!
//! | order event     | commands, in order                          | if a command is refused          |
//! |-----------------|---------------------------------------------|----------------------------------|
//! | `Placed`        | reserve the stock; record the reservation  | cancel the order: out of stock   |
//! | `StockReserved` | charge the card; record the payment; and a timeout in 15 minutes: cancel the order | cancel the order: declined |
//! | `Paid`          | confirm the order; drop the timeout         |                                  |
//! | `Cancelled`     | release the order's stock; drop the timeout |                                  |
//!
//! Compensation is a cancellation, and every cancellation releases the stock: one
//! path, whatever went wrong. A card whose provider never answers fails each attempt
//! as a transient error; after the runner's last attempt the event goes to the saga's
//! dead-letter stream, and the timeout cancels the order.
//!
//! The saga is a pure function of one event, so it is tested without a store
//! (`SagaSpec`, below). Its progress lives in the order stream, whose decider refuses
//! steps out of order. The runner gives every command an id seed derived from the
//! triggering event, and the bus hands it to the command handlers, so a command
//! dispatched again after a restart appends nothing new.

use foldstore_core::projection::HandlerError;
use foldstore_core::saga::{Failure, Reaction, Saga};
use foldstore_core::{DomainEvent, EventFilter, RecordedEvent};
use serde::{Deserialize, Serialize};

use crate::order::{CancelReason, Card, OrderCommand, OrderEvent, OrderId};
use crate::payment::Charge;
use crate::stock::StockCommand;

/// How long a reserved order waits for its payment.
pub const PAYMENT_TIMEOUT: chrono::Duration = chrono::Duration::minutes(15);

/// What the saga sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShopCommand {
    /// To an order.
    Order(OrderCommand),
    /// To a product's stock.
    Stock(StockCommand),
    /// To the payment provider, with the card to charge.
    Pay {
        /// The charge.
        charge: Charge,
        /// The card.
        card: Card,
    },
}

/// The key of an order's payment timeout.
fn timeout_key(order: OrderId) -> String {
    format!("payment-timeout-{order}")
}

/// The order saga.
///
/// ```
/// use order_saga::order::{CancelReason, Card, OrderCommand, OrderEvent, OrderId};
/// use order_saga::saga::{OrderSaga, ShopCommand};
/// use order_saga::stock::{Sku, StockCommand};
/// use foldstore_core::saga::{DispatchError, SagaSpec};
///
/// let order = OrderId(1);
/// let placed = OrderEvent::Placed { order, sku: Sku(2), quantity: 3, amount: 2700, card: Card::Good };
/// let reserve = ShopCommand::Stock(StockCommand::Reserve { sku: Sku(2), order, quantity: 3 });
/// SagaSpec::for_saga(OrderSaga)
///     .when(placed.recorded())
///     .then_commands(vec![reserve, ShopCommand::Order(OrderCommand::MarkReserved { order })])
///     // The stock runs short: the order is cancelled.
///     .then_compensates(reserve, DispatchError::rejected("out of stock"), vec![
///         ShopCommand::Order(OrderCommand::Cancel { order, reason: CancelReason::OutOfStock }),
///     ]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderSaga;

/// The saga's name: its position, schedule and dead-letter streams carry it.
pub const SAGA_NAME: &str = "orders";

impl Saga for OrderSaga {
    type Command = ShopCommand;

    fn name(&self) -> &str {
        SAGA_NAME
    }

    fn filter(&self) -> EventFilter {
        EventFilter::category("order").expect("a valid category")
    }

    fn react(&self, event: &RecordedEvent) -> Result<Reaction<ShopCommand>, HandlerError> {
        let order = |command| ShopCommand::Order(command);
        let stock = |command| ShopCommand::Stock(command);
        Ok(match OrderEvent::from_recorded(event)? {
            OrderEvent::Placed {
                order: id,
                sku,
                quantity,
                ..
            } => Reaction::new()
                .command(stock(StockCommand::Reserve {
                    sku,
                    order: id,
                    quantity,
                }))
                .command(order(OrderCommand::MarkReserved { order: id })),
            OrderEvent::StockReserved {
                order: id,
                amount,
                card,
            } => Reaction::new()
                .schedule(
                    timeout_key(id),
                    event.recorded_at + PAYMENT_TIMEOUT,
                    order(OrderCommand::Cancel {
                        order: id,
                        reason: CancelReason::PaymentTimedOut,
                    }),
                )
                .command(ShopCommand::Pay {
                    charge: Charge { order: id, amount },
                    card,
                })
                .command(order(OrderCommand::MarkPaid { order: id })),
            OrderEvent::Paid { order: id } => Reaction::new()
                .cancel(timeout_key(id))
                .command(order(OrderCommand::Confirm { order: id })),
            OrderEvent::Cancelled { order: id, sku, .. } => Reaction::new()
                .cancel(timeout_key(id))
                .command(stock(StockCommand::Release { sku, order: id })),
            OrderEvent::Confirmed { .. } => Reaction::new(),
        })
    }

    fn compensate(&self, failure: &Failure<ShopCommand>) -> Vec<ShopCommand> {
        let cancel =
            |order, reason| vec![ShopCommand::Order(OrderCommand::Cancel { order, reason })];
        match failure.command {
            ShopCommand::Stock(StockCommand::Reserve { order, .. }) => {
                cancel(order, CancelReason::OutOfStock)
            }
            ShopCommand::Pay { charge, .. } => cancel(charge.order, CancelReason::PaymentDeclined),
            // The order moved on (a timeout after the payment, a reservation recorded
            // for an order already cancelled): its own events say what follows.
            ShopCommand::Order(_) | ShopCommand::Stock(_) => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use foldstore_core::saga::{DispatchError, SagaSpec};

    use super::*;
    use crate::stock::Sku;

    const O: OrderId = OrderId(3);
    const SKU: Sku = Sku(1);

    fn cancel(reason: CancelReason) -> ShopCommand {
        ShopCommand::Order(OrderCommand::Cancel { order: O, reason })
    }

    #[test]
    fn a_reserved_order_is_charged_and_times_out_unless_paid() {
        let reserved = OrderEvent::StockReserved {
            order: O,
            amount: 1200,
            card: Card::Good,
        };
        let pay = ShopCommand::Pay {
            charge: Charge {
                order: O,
                amount: 1200,
            },
            card: Card::Good,
        };
        SagaSpec::for_saga(OrderSaga)
            .when(reserved.recorded())
            .then_commands(vec![
                pay,
                ShopCommand::Order(OrderCommand::MarkPaid { order: O }),
            ])
            .then_scheduled("payment-timeout-3", cancel(CancelReason::PaymentTimedOut))
            .then_compensates(
                pay,
                DispatchError::rejected("declined"),
                vec![cancel(CancelReason::PaymentDeclined)],
            );
    }

    #[test]
    fn payment_confirms_and_drops_the_timeout() {
        SagaSpec::for_saga(OrderSaga)
            .when(OrderEvent::Paid { order: O }.recorded())
            .then_commands(vec![ShopCommand::Order(OrderCommand::Confirm { order: O })])
            .then_cancels("payment-timeout-3");
    }

    #[test]
    fn every_cancellation_releases_the_stock_and_drops_the_timeout() {
        let cancelled = OrderEvent::Cancelled {
            order: O,
            sku: SKU,
            reason: CancelReason::PaymentDeclined,
        };
        SagaSpec::for_saga(OrderSaga)
            .when(cancelled.recorded())
            .then_commands(vec![ShopCommand::Stock(StockCommand::Release {
                sku: SKU,
                order: O,
            })])
            .then_cancels("payment-timeout-3");
    }

    #[test]
    fn a_timeout_refused_because_the_order_was_paid_needs_no_compensation() {
        let reserved = OrderEvent::StockReserved {
            order: O,
            amount: 1,
            card: Card::Good,
        };
        SagaSpec::for_saga(OrderSaga)
            .when(reserved.recorded())
            .then_compensates(
                cancel(CancelReason::PaymentTimedOut),
                DispatchError::rejected("order 3 is Paid: it cannot be cancelled now"),
                vec![],
            );
    }
}
