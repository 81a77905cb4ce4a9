//! # gift-card
//!
//! Gift cards on foldstore, small enough to read in one sitting, with a test that
//! proves on every backend that a busy shop never overdraws a card.
//!
//! - [`card`]: the card as a decider: issue, redeem, cancel; pure `decide` and
//!   `evolve`, tested with the toolkit's given/when/then kit.
//! - [`service`]: commands through the toolkit's command handler: optimistic
//!   concurrency with retries, and ids derived from the till's redemption id, so a
//!   redemption resent after a timeout is charged once.
//! - [`read_model`]: every card's balance in a SQLite table, applied exactly once
//!   (each batch commits with its checkpoint), whatever backend holds the events.
//! - [`scenario`]: 32 tills redeeming at once from a few cards, resending some
//!   redemptions and cancelling a card halfway; then every rule checked against the
//!   log and the read model.
//!
//! ```
//! use std::sync::Arc;
//! use gift_card::card::{CardId, GiftCardError};
//! use gift_card::service::GiftCards;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cards = GiftCards::new(Arc::new(foldstore_core::InMemoryStore::new()));
//! let card = CardId(42);
//! cards.issue(card, 2500).await?;
//! cards.redeem(card, 2000, uuid::Uuid::now_v7()).await?;
//! // 5.00 left: a 6.00 lunch is refused and nothing is charged.
//! let refused = cards.redeem(card, 600, uuid::Uuid::now_v7()).await.unwrap_err();
//! assert!(matches!(
//!     refused,
//!     foldstore_core::CommandError::Rejected(GiftCardError::InsufficientBalance { balance: 500, .. })
//! ));
//! assert_eq!(cards.card(card).await?.balance, 500);
//! # Ok(())
//! # }
//! ```

pub mod card;
pub mod read_model;
pub mod scenario;
pub mod service;
