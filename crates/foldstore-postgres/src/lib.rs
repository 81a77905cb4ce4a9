//! # foldstore-postgres
//!
//! The PostgreSQL backend of foldstore: many stateless foldstore processes over one
//! PostgreSQL database share one event store, one global order and live
//! subscriptions. It keeps the same contract as every other backend
//! (`docs/semantics.md`) and passes the same conformance kit.
//!
//! ```no_run
//! use foldstore_core::{EventStore, ExpectedRevision, NewEvent, StreamName, SubscribeFrom, EventFilter};
//! use foldstore_postgres::{PostgresOptions, PostgresStore};
//! use futures::StreamExt;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::connect(
//!     PostgresOptions::new("postgres://app@127.0.0.1:5432/app").schema("billing"),
//! )
//! .await?;
//!
//! let stream = StreamName::new("invoice-17")?;
//! let issued = NewEvent::json("Issued", &serde_json::json!({"total": 120}))?;
//! let result = store.append(&stream, ExpectedRevision::NoStream, vec![issued]).await?;
//!
//! // Another process subscribed to the category sees it within milliseconds.
//! let mut invoices = store
//!     .subscribe_to_all(SubscribeFrom::Start, EventFilter::category("invoice")?)
//!     .await?;
//! let first = invoices.next().await.expect("a live subscription")?;
//! assert_eq!(first.position, result.position);
//! # Ok(())
//! # }
//! ```
//!
//! ## How the global order is kept
//!
//! A position is the pair (writing transaction id, sequence number), packed into one
//! opaque [`foldstore_core::Position`]. Reads of `$all` and of categories only return
//! events of transactions older than the oldest transaction still running, so an
//! event that took a lower sequence number but commits later is never passed over.
//! The price: an event becomes visible to those reads only once every older
//! transaction in the cluster has finished. `docs/semantics.md` ("PostgreSQL: how the
//! global order is kept") gives the reasoning and the costs.
//!
//! ## Errors
//!
//! While PostgreSQL cannot be reached, operations fail fast with
//! [`foldstore_core::BackendErrorKind::Unavailable`] (nothing was written). An append
//! whose connection broke after `COMMIT` was sent fails with
//! [`foldstore_core::BackendErrorKind::OutcomeUnknown`]: retry it with the same event
//! ids, which is idempotent. The pool reconnects by itself; subscriptions retry their
//! reads while the server is away and go on from their last position.

mod batch;
mod connect;
mod driven;
mod error;
mod locks;
mod names;
mod options;
mod pg;
mod pipeline;
pub mod projection;
mod schema;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
mod watch;
mod writer;

pub use error::ConnectError;
pub use options::{DEFAULT_SCHEMA, PostgresOptions};
pub use schema::SCHEMA_VERSION;
pub use store::{GroupCommitStats, PostgresStore};
