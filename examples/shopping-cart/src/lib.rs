//! # shopping-cart
//!
//! A shopping cart on foldstore, about what happens to an event-sourced model over
//! time: snapshots, so a long cart loads fast; an upcaster, so events an older
//! version of the shop stored still load; and idempotent requests, so a phone that
//! resends after a timeout changes the cart once. Tests prove it on every backend.
//!
//! - [`cart`]: the cart as a decider, its snapshot state and its upcasters.
//! - [`service`]: the commands through the toolkit's command handler, with
//!   snapshots every [`service::SNAPSHOT_EVERY`] events and the upcasters.
//! - [`scenario`]: 24 devices filling 8 carts at once, half of them checked out
//!   halfway; then every rule checked against the streams.
//!
//! ```
//! use std::sync::Arc;
//! use shopping_cart::cart::CartId;
//! use shopping_cart::service::Carts;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let carts = Carts::new(Arc::new(foldstore_core::InMemoryStore::new()));
//! let cart = CartId(1);
//! for _ in 0..45 {
//!     carts.add(cart, "apples", 1, 260, uuid::Uuid::now_v7()).await?;
//!     carts.remove(cart, "apples", uuid::Uuid::now_v7()).await?;
//! }
//! carts.add(cart, "tea", 2, 450, uuid::Uuid::now_v7()).await?;
//! let loaded = carts.load(cart).await?;
//! assert_eq!(loaded.state.total(), 900);
//! // 91 events, but the load started from a snapshot and folded only the last few.
//! assert!(loaded.events_folded < 20);
//! # Ok(())
//! # }
//! ```

pub mod cart;
pub mod scenario;
pub mod service;
