//! # foldstore-core
//!
//! The model of foldstore's event store and the contract every backend keeps:
//!
//! - [`StreamName`], [`NewEvent`], [`RecordedEvent`], [`Position`], [`ExpectedRevision`];
//! - the [`EventStore`] trait, with typed errors per operation ([`AppendError`],
//!   [`ReadError`], ...), whose one write of events is the [`transaction`]: events for
//!   several streams, a DCB condition and tracking, all or nothing;
//! - [`rules`]: the append and visibility rules as pure functions, so every backend
//!   decides the same way;
//! - [`subscription`]: catch-up-then-live subscriptions built from reads and a commit
//!   signal;
//! - [`InMemoryStore`], for tests and examples;
//! - behind the `testkit` feature, the conformance kit that every backend runs;
//! - the app toolkit: [`decider`]s and [`aggregate`]s, [`DomainEvent`] with
//!   `#[derive(DomainEvent)]` (feature `derive`, on by default), [`upcast`]ing, the
//!   [`CommandHandler`] (retries, snapshots, idempotent replays), DCB
//!   [`DecisionHandler`]s and the given/when/then kit in [`testing`]. The [`guide`]
//!   explains them from the start.
//!
//! This crate does no I/O. The SQLite backend is `foldstore-sqlite`.
//!
//! ```
//! use foldstore_core::{EventStore, ExpectedRevision, InMemoryStore, NewEvent, StreamName, AppendError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = InMemoryStore::new();
//! let cart = StreamName::new("cart-7")?;
//! store.append(&cart, ExpectedRevision::NoStream, vec![NewEvent::json("Created", &())?]).await?;
//!
//! // A second writer that also expected an empty stream loses:
//! let late = store.append(&cart, ExpectedRevision::NoStream, vec![NewEvent::json("Created", &())?]).await;
//! assert!(matches!(late, Err(AppendError::WrongExpectedRevision { .. })));
//! # Ok(())
//! # }
//! ```

// The derive macro names `::foldstore_core`; this makes it resolve inside the crate.
extern crate self as foldstore_core;

pub mod aggregate;
pub mod command;
pub mod commit_log;
pub mod dcb;
pub mod decider;
pub mod decision;
pub mod domain_event;
mod error;
mod event;
mod memory;
mod metadata;
mod options;
pub mod persistent;
mod position;
pub mod projection;
mod retry;
pub mod rules;
pub mod saga;
pub mod snapshot;
mod snapshotting;
mod store;
mod stream_name;
pub mod subscription;
pub mod testing;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod transaction;
pub mod upcast;

#[doc = include_str!("../../../docs/guide.md")]
pub mod guide {}

pub use command::{
    CommandContext, CommandError, CommandHandler, CommandOutcome, Loaded, deterministic_event_id,
};
pub use decision::{DecisionHandler, DecisionState};
pub use domain_event::{DecodeError, DomainEvent, EncodeError, SCHEMA_VERSION};
pub use error::{
    AppendError, BackendError, BackendErrorKind, DeleteError, InvalidEvent, MetadataError,
    ReadError, SubscriptionError,
};
pub use event::{JSON, MAX_EVENT_TYPE_BYTES, NewEvent, RecordedEvent};
/// `#[derive(DomainEvent)]` (feature `derive`): see [`DomainEvent`](trait@DomainEvent).
#[cfg(feature = "derive")]
pub use foldstore_derive::DomainEvent;
pub use memory::InMemoryStore;
pub use metadata::{CAUSATION_ID, CORRELATION_ID, InvalidMetadata, Metadata};
pub use options::{
    ConsumerGroup, Direction, EventFilter, ReadAllOptions, ReadStreamOptions, SubscribeFrom,
    SubscribeStreamFrom, group_hash,
};
pub use position::{CurrentRevision, ExpectedRevision, InvalidPosition, Position};
pub use retry::RetryPolicy;
pub use rules::{AppendResult, Limits, StreamMetadata, StreamState};
pub use snapshot::{Snapshot, SnapshotError, SnapshotStore};
pub use snapshotting::{SnapshotPolicy, SnapshotState};
pub use store::{EventStore, EventSubscription};
pub use stream_name::{
    InvalidStreamName, MAX_STREAM_NAME_BYTES, StreamName, category_of, validate_category,
};
pub use transaction::{AppendTransaction, StreamAppend, Tracking, TransactionResult};
