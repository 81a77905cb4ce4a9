//! A shopping cart as a decider ([`CartDecider`]): items added and removed, then one
//! checkout. No I/O.
//!
//! A cart lives in the stream `cart-<n>`. Its state can be snapshotted
//! ([`SnapshotState`]), and the events an older version of the shop stored are
//! brought to today's shape by [`upcasters`].

use std::collections::BTreeMap;

use foldstore_core::decider::Decider;
use foldstore_core::upcast::Upcasters;
use foldstore_core::{DomainEvent, SnapshotState};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The most units of one product in a cart.
pub const MAX_QUANTITY: u32 = 99;

/// The most different products in a cart.
pub const MAX_LINES: usize = 50;

/// A cart number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CartId(pub u32);

impl CartId {
    /// The cart's stream: `cart-<n>`.
    pub fn stream(self) -> foldstore_core::StreamName {
        foldstore_core::StreamName::new(format!("cart-{}", self.0))
            .expect("cart-<n> is a valid stream name")
    }
}

impl std::fmt::Display for CartId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What happened to a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum CartEvent {
    /// Units of a product went into the cart. Version 2: version 1 (stored by the
    /// shop before prices were kept in cents) had `product`, `qty` and a `price` in
    /// euros; see [`upcasters`].
    #[event(version = 2)]
    ItemAdded {
        /// The cart.
        #[event(tag = "cart")]
        cart: CartId,
        /// The product.
        sku: String,
        /// How many units.
        quantity: u32,
        /// The price of one unit when it was added, in cents.
        unit_price: u64,
    },
    /// A product left the cart, all its units.
    ItemRemoved {
        /// The cart.
        #[event(tag = "cart")]
        cart: CartId,
        /// The product.
        sku: String,
    },
    /// The cart was paid for; it changes no more.
    CheckedOut {
        /// The cart.
        #[event(tag = "cart")]
        cart: CartId,
        /// What it cost, in cents.
        total: u64,
        /// Units in it.
        units: u32,
    },
}

/// Brings stored events to today's shapes: `ItemAdded` version 1
/// (`{"cart", "product", "qty", "price"}`, the price in euros) becomes version 2
/// (`{"cart", "sku", "quantity", "unit_price"}`, in cents). Stored events are never
/// rewritten: this runs on every read.
///
/// ```
/// use foldstore_core::{DomainEvent, ExpectedRevision, InMemoryStore, NewEvent, EventStore, ReadStreamOptions};
/// use shopping_cart::cart::{CartEvent, CartId, upcasters};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryStore::new();
/// // As the shop's first version stored it (no schema version: version 1).
/// let old = NewEvent::json("ItemAdded", &serde_json::json!(
///     {"cart": 7, "product": "tea", "qty": 2, "price": 4.5}
/// ))?;
/// store.append(&CartId(7).stream(), ExpectedRevision::Any, vec![old]).await?;
/// let stored = store.read_stream(&CartId(7).stream(), ReadStreamOptions::forwards()).await?;
/// let event: CartEvent = upcasters().decode(&stored[0])?;
/// assert_eq!(event, CartEvent::ItemAdded {
///     cart: CartId(7), sku: "tea".into(), quantity: 2, unit_price: 450,
/// });
/// # Ok(())
/// # }
/// ```
pub fn upcasters() -> Upcasters {
    Upcasters::new().add("ItemAdded", 1, |v| {
        let euros = v["price"].as_f64().ok_or("ItemAdded v1 without a price")?;
        Ok(json!({
            "cart": v["cart"],
            "sku": v["product"],
            "quantity": v["qty"],
            "unit_price": (euros * 100.0).round() as u64,
        }))
    })
}

/// What can be asked of a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CartCommand {
    /// Put units of a product in.
    Add {
        /// The cart.
        cart: CartId,
        /// The product.
        sku: String,
        /// How many units.
        quantity: u32,
        /// The price of one unit now, in cents.
        unit_price: u64,
    },
    /// Take a product out.
    Remove {
        /// The cart.
        cart: CartId,
        /// The product.
        sku: String,
    },
    /// Pay.
    CheckOut {
        /// The cart.
        cart: CartId,
    },
}

impl CartCommand {
    /// The cart the command is for.
    pub fn cart(&self) -> CartId {
        match self {
            CartCommand::Add { cart, .. }
            | CartCommand::Remove { cart, .. }
            | CartCommand::CheckOut { cart } => *cart,
        }
    }
}

/// Why a cart refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CartError {
    /// The cart was paid for.
    #[error("cart {0} is checked out: start a new cart")]
    CheckedOut(CartId),
    /// Nothing to pay for.
    #[error("cart {0} is empty: add an item before checking out")]
    Empty(CartId),
    /// Zero units, or more than [`MAX_QUANTITY`] of one product.
    #[error("cart {cart}: {sku} would have {quantity} units; keep it between 1 and {max}", max = MAX_QUANTITY)]
    BadQuantity {
        /// The cart.
        cart: CartId,
        /// The product.
        sku: String,
        /// The units it would have.
        quantity: u32,
    },
    /// More than [`MAX_LINES`] products.
    #[error("cart {0} holds {max} different products already: check out or remove one", max = MAX_LINES)]
    TooManyLines(CartId),
    /// Removing a product the cart does not hold.
    #[error("cart {cart} holds no {sku}")]
    NotInCart {
        /// The cart.
        cart: CartId,
        /// The product.
        sku: String,
    },
}

/// One product in a cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Units.
    pub quantity: u32,
    /// The price of one unit when last added, in cents.
    pub unit_price: u64,
}

/// What a cart remembers to decide; snapshotted as `Cart` version 1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    /// Its products.
    pub lines: BTreeMap<String, Line>,
    /// Whether it was paid for.
    pub checked_out: bool,
}

impl SnapshotState for Cart {
    const STATE_TYPE: &'static str = "Cart";
    const SCHEMA_VERSION: u32 = 1;
}

impl Cart {
    /// What the cart costs now, in cents.
    pub fn total(&self) -> u64 {
        self.lines
            .values()
            .map(|l| u64::from(l.quantity) * l.unit_price)
            .sum()
    }

    /// Units in the cart.
    pub fn units(&self) -> u32 {
        self.lines.values().map(|l| l.quantity).sum()
    }

    /// Applies one event.
    pub fn evolve(mut self, event: &CartEvent) -> Self {
        match event {
            CartEvent::ItemAdded {
                sku,
                quantity,
                unit_price,
                ..
            } => {
                let line = self.lines.entry(sku.clone()).or_insert(Line {
                    quantity: 0,
                    unit_price: *unit_price,
                });
                line.quantity += quantity;
                line.unit_price = *unit_price;
            }
            CartEvent::ItemRemoved { sku, .. } => {
                self.lines.remove(sku);
            }
            CartEvent::CheckedOut { .. } => self.checked_out = true,
        }
        self
    }

    /// Decides what a command does.
    pub fn decide(&self, command: &CartCommand) -> Result<Vec<CartEvent>, CartError> {
        let cart = command.cart();
        if self.checked_out {
            return Err(CartError::CheckedOut(cart));
        }
        match command {
            CartCommand::Add {
                sku,
                quantity,
                unit_price,
                ..
            } => {
                let now = self.lines.get(sku).map_or(0, |l| l.quantity);
                let after = now.saturating_add(*quantity);
                if *quantity == 0 || after > MAX_QUANTITY {
                    return Err(CartError::BadQuantity {
                        cart,
                        sku: sku.clone(),
                        quantity: after,
                    });
                }
                if now == 0 && self.lines.len() >= MAX_LINES {
                    return Err(CartError::TooManyLines(cart));
                }
                Ok(vec![CartEvent::ItemAdded {
                    cart,
                    sku: sku.clone(),
                    quantity: *quantity,
                    unit_price: *unit_price,
                }])
            }
            CartCommand::Remove { sku, .. } if !self.lines.contains_key(sku) => {
                Err(CartError::NotInCart {
                    cart,
                    sku: sku.clone(),
                })
            }
            CartCommand::Remove { sku, .. } => Ok(vec![CartEvent::ItemRemoved {
                cart,
                sku: sku.clone(),
            }]),
            CartCommand::CheckOut { .. } if self.lines.is_empty() => Err(CartError::Empty(cart)),
            CartCommand::CheckOut { .. } => Ok(vec![CartEvent::CheckedOut {
                cart,
                total: self.total(),
                units: self.units(),
            }]),
        }
    }
}

/// The cart decider, for the toolkit's command handler.
///
/// ```
/// use foldstore_core::testing::DeciderSpec;
/// use shopping_cart::cart::{CartCommand, CartDecider, CartEvent, CartId};
///
/// let cart = CartId(1);
/// let tea = CartEvent::ItemAdded { cart, sku: "tea".into(), quantity: 2, unit_price: 450 };
/// DeciderSpec::new(CartDecider)
///     .given([tea])
///     .when(CartCommand::CheckOut { cart })
///     .then([CartEvent::CheckedOut { cart, total: 900, units: 2 }]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CartDecider;

impl Decider for CartDecider {
    type Command = CartCommand;
    type Event = CartEvent;
    type State = Cart;
    type Error = CartError;

    fn initial_state(&self) -> Cart {
        Cart::default()
    }

    fn decide(&self, command: &CartCommand, state: &Cart) -> Result<Vec<CartEvent>, CartError> {
        state.decide(command)
    }

    fn evolve(&self, state: Cart, event: &CartEvent) -> Cart {
        state.evolve(event)
    }
}

#[cfg(test)]
mod tests {
    use foldstore_core::testing::DeciderSpec;

    use super::*;

    const C: CartId = CartId(1);

    fn add(sku: &str, quantity: u32) -> CartCommand {
        CartCommand::Add {
            cart: C,
            sku: sku.into(),
            quantity,
            unit_price: 100,
        }
    }

    fn added(sku: &str, quantity: u32) -> CartEvent {
        CartEvent::ItemAdded {
            cart: C,
            sku: sku.into(),
            quantity,
            unit_price: 100,
        }
    }

    #[test]
    fn a_checked_out_cart_changes_no_more() {
        let paid = CartEvent::CheckedOut {
            cart: C,
            total: 100,
            units: 1,
        };
        DeciderSpec::new(CartDecider)
            .given([added("tea", 1), paid])
            .when(add("tea", 1))
            .then_error(CartError::CheckedOut(C));
    }

    #[test]
    fn an_empty_cart_cannot_be_checked_out() {
        DeciderSpec::new(CartDecider)
            .given([
                added("tea", 1),
                CartEvent::ItemRemoved {
                    cart: C,
                    sku: "tea".into(),
                },
            ])
            .when(CartCommand::CheckOut { cart: C })
            .then_error(CartError::Empty(C));
    }

    #[test]
    fn quantities_add_up_within_the_limit() {
        DeciderSpec::new(CartDecider)
            .given([added("tea", 98)])
            .when(add("tea", 2))
            .then_error(CartError::BadQuantity {
                cart: C,
                sku: "tea".into(),
                quantity: 100,
            });
        DeciderSpec::new(CartDecider)
            .given([added("tea", 98)])
            .when(add("tea", 1))
            .then([added("tea", 1)]);
    }

    #[test]
    fn removing_what_is_not_there_is_refused() {
        DeciderSpec::new(CartDecider)
            .when(CartCommand::Remove {
                cart: C,
                sku: "tea".into(),
            })
            .then_error(CartError::NotInCart {
                cart: C,
                sku: "tea".into(),
            });
    }
}
