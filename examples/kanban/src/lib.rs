//! # kanban
//!
//! A kanban board on foldstore with a live web UI. Every browser on the page sees
//! each change as it happens, and at most three cards are ever in "doing", however
//! many people move cards at once.
//!
//! - [`board`]: the rules as one DCB decider. A move into "doing" is decided on the
//!   events of the card and of the "doing" column, and appended on condition that
//!   none changed since.
//! - [`service`]: the commands, through the toolkit's `DecisionHandler`.
//! - [`view`]: the board as the page shows it, a `LiveView` in the server's memory,
//!   pushed over server-sent events.
//! - [`app`]: the page and its JSON API (axum), errors as problem+json.
//!
//! Run it with `cargo run -p kanban` and open <http://127.0.0.1:3000>.
//!
//! ```
//! use std::sync::Arc;
//! use kanban::board::{BoardError, Column};
//! use kanban::service::Board;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let board = Board::new(Arc::new(foldstore_core::InMemoryStore::new()));
//! let mut cards = Vec::new();
//! for title in ["design", "build", "test", "ship"] {
//!     let card = board.add(title).await?;
//!     cards.push(card);
//! }
//! for &card in &cards[..3] {
//!     board.move_card(card, Column::Doing).await?;
//! }
//! // "doing" is full: the fourth card waits.
//! let refused = board.move_card(cards[3], Column::Doing).await.unwrap_err();
//! assert!(matches!(refused, foldstore_core::CommandError::Rejected(BoardError::WipLimit(_))));
//! # Ok(())
//! # }
//! ```

pub mod app;
pub mod board;
pub mod service;
pub mod view;
