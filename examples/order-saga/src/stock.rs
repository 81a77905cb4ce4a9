//! The stock of one product as a decider ([`StockDecider`]): restocked, reserved for
//! orders, released when an order is cancelled. No I/O.
//!
//! A product's stock lives in the stream `stock-<n>`. What is available never goes
//! below zero; an order reserves at most once and is released at most once, so a
//! repeated reservation or release changes nothing.

use std::collections::{HashMap, HashSet};

use foldstore_core::DomainEvent;
use foldstore_core::decider::Decider;
use serde::{Deserialize, Serialize};

use crate::order::OrderId;

/// A product number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Sku(pub u32);

impl Sku {
    /// The product's stock stream: `stock-<n>`.
    pub fn stream(self) -> foldstore_core::StreamName {
        foldstore_core::StreamName::new(format!("stock-{}", self.0))
            .expect("stock-<n> is a valid stream name")
    }
}

impl std::fmt::Display for Sku {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What happened to a product's stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum StockEvent {
    /// Units arrived.
    Restocked {
        /// The product.
        #[event(tag = "sku")]
        sku: Sku,
        /// How many.
        quantity: u32,
    },
    /// Units were set aside for an order.
    Reserved {
        /// The product.
        #[event(tag = "sku")]
        sku: Sku,
        /// The order.
        #[event(tag = "order")]
        order: OrderId,
        /// How many.
        quantity: u32,
    },
    /// An order's units came back.
    Released {
        /// The product.
        #[event(tag = "sku")]
        sku: Sku,
        /// The order.
        #[event(tag = "order")]
        order: OrderId,
        /// How many.
        quantity: u32,
    },
}

/// What can be asked of a product's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StockCommand {
    /// Add units.
    Restock {
        /// The product.
        sku: Sku,
        /// How many.
        quantity: u32,
    },
    /// Set units aside for an order.
    Reserve {
        /// The product.
        sku: Sku,
        /// The order.
        order: OrderId,
        /// How many.
        quantity: u32,
    },
    /// Give back whatever an order reserved (nothing, if it reserved nothing).
    Release {
        /// The product.
        sku: Sku,
        /// The order.
        order: OrderId,
    },
}

impl StockCommand {
    /// The product the command is for.
    pub fn sku(&self) -> Sku {
        match self {
            StockCommand::Restock { sku, .. }
            | StockCommand::Reserve { sku, .. }
            | StockCommand::Release { sku, .. } => *sku,
        }
    }
}

/// Why the stock refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StockError {
    /// Fewer units than asked for.
    #[error("product {sku} has {available} units left, fewer than the {wanted} asked for")]
    OutOfStock {
        /// The product.
        sku: Sku,
        /// Units available.
        available: u32,
        /// Units asked for.
        wanted: u32,
    },
}

/// What a product's stock remembers to decide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stock {
    /// Units not reserved.
    pub available: u32,
    /// Units reserved, by order (released orders included).
    pub reserved: HashMap<OrderId, u32>,
    /// Orders whose units came back.
    pub released: HashSet<OrderId>,
}

impl Stock {
    /// Applies one event.
    pub fn evolve(mut self, event: &StockEvent) -> Self {
        match *event {
            StockEvent::Restocked { quantity, .. } => self.available += quantity,
            StockEvent::Reserved {
                order, quantity, ..
            } => {
                self.available = self.available.saturating_sub(quantity);
                self.reserved.insert(order, quantity);
            }
            StockEvent::Released {
                order, quantity, ..
            } => {
                self.available += quantity;
                self.released.insert(order);
            }
        }
        self
    }

    /// Decides what a command does. An empty list means "already done" (or, for a
    /// release, "nothing to give back").
    pub fn decide(&self, command: &StockCommand) -> Result<Vec<StockEvent>, StockError> {
        match *command {
            StockCommand::Restock { sku, quantity } => {
                Ok(vec![StockEvent::Restocked { sku, quantity }])
            }
            StockCommand::Reserve { order, .. } if self.reserved.contains_key(&order) => Ok(vec![]),
            StockCommand::Reserve { sku, quantity, .. } if quantity > self.available => {
                Err(StockError::OutOfStock {
                    sku,
                    available: self.available,
                    wanted: quantity,
                })
            }
            StockCommand::Reserve {
                sku,
                order,
                quantity,
            } => Ok(vec![StockEvent::Reserved {
                sku,
                order,
                quantity,
            }]),
            StockCommand::Release { order, .. } if self.released.contains(&order) => Ok(vec![]),
            StockCommand::Release { sku, order } => Ok(self
                .reserved
                .get(&order)
                .map(|&quantity| StockEvent::Released {
                    sku,
                    order,
                    quantity,
                })
                .into_iter()
                .collect()),
        }
    }
}

/// The stock decider, for the toolkit's command handler.
///
/// ```
/// use foldstore_core::decider::{Decider, fold};
/// use order_saga::order::OrderId;
/// use order_saga::stock::{Sku, StockCommand, StockDecider, StockError, StockEvent};
///
/// let sku = Sku(1);
/// let state = fold(&StockDecider, &[StockEvent::Restocked { sku, quantity: 2 }]);
/// let reserve = StockCommand::Reserve { sku, order: OrderId(9), quantity: 3 };
/// assert!(matches!(
///     StockDecider.decide(&reserve, &state),
///     Err(StockError::OutOfStock { available: 2, .. })
/// ));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct StockDecider;

impl Decider for StockDecider {
    type Command = StockCommand;
    type Event = StockEvent;
    type State = Stock;
    type Error = StockError;

    fn initial_state(&self) -> Stock {
        Stock::default()
    }

    fn decide(&self, command: &StockCommand, state: &Stock) -> Result<Vec<StockEvent>, StockError> {
        state.decide(command)
    }

    fn evolve(&self, state: Stock, event: &StockEvent) -> Stock {
        state.evolve(event)
    }
}

#[cfg(test)]
mod tests {
    use foldstore_core::testing::DeciderSpec;

    use super::*;

    const S: Sku = Sku(1);
    const O: OrderId = OrderId(7);

    fn reserved() -> StockEvent {
        StockEvent::Reserved {
            sku: S,
            order: O,
            quantity: 2,
        }
    }

    #[test]
    fn a_release_gives_back_what_the_order_reserved_once() {
        let restocked = StockEvent::Restocked {
            sku: S,
            quantity: 5,
        };
        let released = StockEvent::Released {
            sku: S,
            order: O,
            quantity: 2,
        };
        DeciderSpec::new(StockDecider)
            .given([restocked.clone(), reserved()])
            .when(StockCommand::Release { sku: S, order: O })
            .then([released.clone()]);
        DeciderSpec::new(StockDecider)
            .given([restocked, reserved(), released])
            .when(StockCommand::Release { sku: S, order: O })
            .then([]);
    }

    #[test]
    fn releasing_an_order_that_reserved_nothing_changes_nothing() {
        DeciderSpec::new(StockDecider)
            .when(StockCommand::Release { sku: S, order: O })
            .then([]);
    }

    #[test]
    fn a_reservation_never_takes_more_than_is_available() {
        DeciderSpec::new(StockDecider)
            .given([StockEvent::Restocked {
                sku: S,
                quantity: 1,
            }])
            .when(StockCommand::Reserve {
                sku: S,
                order: O,
                quantity: 2,
            })
            .then_error(StockError::OutOfStock {
                sku: S,
                available: 1,
                wanted: 2,
            });
    }
}
