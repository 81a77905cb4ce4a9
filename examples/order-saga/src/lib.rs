//! # order-saga
//!
//! An order saga on foldstore: a process manager that reserves stock, charges a card
//! and confirms the order, and when a step fails cancels the order and gives the stock
//! back, with a payment timeout and a dead-letter stream. Its tests prove on every
//! backend that every order ends exactly once and that no unit of stock is lost.
//!
//! - [`order`], [`stock`], [`payment`]: three pure deciders, one stream per order,
//!   product and payment.
//! - [`saga`]: the process, a pure function from an order event to commands, with
//!   compensation and a timeout.
//! - [`bus`]: the commands, through the toolkit's command handler with the saga's
//!   deterministic ids, and a simulated payment provider.
//! - [`scenario`]: 240 orders placed at once against too little stock, with cards that
//!   pay, are declined or never answer; then every rule checked against the log.
//!
//! ```
//! use std::sync::Arc;
//! use foldstore_core::saga::SagaRunner;
//! use order_saga::bus::Shop;
//! use order_saga::order::{Card, OrderCommand, OrderId, Status};
//! use order_saga::saga::OrderSaga;
//! use order_saga::stock::{Sku, StockCommand};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let store = Arc::new(foldstore_core::InMemoryStore::new());
//! let shop = Shop::new(store.clone());
//! shop.stock(&StockCommand::Restock { sku: Sku(1), quantity: 1 }).await?;
//! for (n, card) in [(1, Card::Good), (2, Card::Good)] {
//!     let place = OrderCommand::Place { order: OrderId(n), sku: Sku(1), quantity: 1, amount: 900, card };
//!     shop.order(&place).await?;
//! }
//! let mut saga = SagaRunner::new(store, OrderSaga, shop.clone())?;
//! saga.catch_up().await?; // each event's reaction appends events the next round reacts to
//! saga.catch_up().await?;
//! saga.catch_up().await?;
//! saga.catch_up().await?;
//! assert_eq!(shop.status(OrderId(1)).await?, Status::Confirmed);
//! // One unit for two orders: the second is cancelled.
//! assert!(matches!(shop.status(OrderId(2)).await?, Status::Cancelled(_)));
//! # Ok(())
//! # }
//! ```

pub mod bus;
pub mod order;
pub mod payment;
pub mod saga;
pub mod scenario;
pub mod stock;
