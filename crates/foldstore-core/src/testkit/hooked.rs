//! A store that runs a test's hook just before every append (plain, conditional or a
//! transaction: all of them go through `append_transaction`): the way to force "someone
//! wrote between my read and my append" or "both writers decided before either wrote"
//! with barriers and scripted writes instead of sleeps.
//!
//! ```
//! use async_trait::async_trait;
//! use foldstore_core::testkit::hooked::{AppendHook, HookedStore};
//! use foldstore_core::{EventStore, ExpectedRevision, InMemoryStore, NewEvent, StreamName};
//!
//! /// Before each append, writes one event to `noise-1` first.
//! struct Noise;
//!
//! #[async_trait]
//! impl AppendHook<InMemoryStore> for Noise {
//!     async fn before_append(&self, inner: &InMemoryStore) {
//!         let noise = StreamName::new("noise-1").unwrap();
//!         let event = NewEvent::json("Noise", &()).unwrap();
//!         inner.append(&noise, ExpectedRevision::Any, vec![event]).await.unwrap();
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = HookedStore::new(InMemoryStore::new(), Noise);
//! let cart = StreamName::new("cart-1").unwrap();
//! let r = store.append(&cart, ExpectedRevision::NoStream, vec![NewEvent::json("Created", &()).unwrap()]).await.unwrap();
//! assert_eq!(u64::try_from(r.position.as_u128()).unwrap(), 2, "the hook's write came first");
//! # }
//! ```

use async_trait::async_trait;

use crate::dcb::{Query, ReadQueryOptions};
use crate::transaction::{AppendTransaction, TransactionResult};
use crate::{
    AppendError, BackendError, DeleteError, EventFilter, EventStore, EventSubscription,
    ExpectedRevision, MetadataError, Position, ReadAllOptions, ReadError, ReadStreamOptions,
    RecordedEvent, StreamMetadata, StreamName, SubscribeFrom, SubscribeStreamFrom,
};

/// What runs before each append of a [`HookedStore`]; it may write to the inner store.
#[async_trait]
pub trait AppendHook<S: Sync>: Send + Sync {
    /// Called at the start of every `append_transaction` (so of every `append` and
    /// `append_if` too).
    async fn before_append(&self, inner: &S);
}

/// Delegates everything to `inner`, calling `hook` first on every append.
#[derive(Debug, Clone, Default)]
pub struct HookedStore<S, H> {
    /// The store that does the work.
    pub inner: S,
    /// The hook (tests keep their controls on it).
    pub hook: H,
}

impl<S, H> HookedStore<S, H> {
    /// Wraps `inner`.
    pub fn new(inner: S, hook: H) -> Self {
        Self { inner, hook }
    }
}

#[async_trait]
impl<S: EventStore, H: AppendHook<S>> EventStore for HookedStore<S, H> {
    async fn append_transaction(
        &self,
        transaction: AppendTransaction,
    ) -> Result<TransactionResult, AppendError> {
        self.hook.before_append(&self.inner).await;
        self.inner.append_transaction(transaction).await
    }

    async fn tracking(&self, source: &str) -> Result<Option<Position>, ReadError> {
        self.inner.tracking(source).await
    }

    async fn read_query(
        &self,
        query: &Query,
        options: ReadQueryOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_query(query, options).await
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_stream(stream, options).await
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_all(options).await
    }

    async fn read_category(
        &self,
        category: &str,
        options: ReadAllOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_category(category, options).await
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamName>, ReadError> {
        self.inner.list_streams(prefix, after, limit).await
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError> {
        self.inner.delete_stream(stream, expected).await
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError> {
        self.inner.tombstone_stream(stream, expected).await
    }

    async fn stream_metadata(
        &self,
        stream: &StreamName,
    ) -> Result<Option<StreamMetadata>, MetadataError> {
        self.inner.stream_metadata(stream).await
    }

    async fn set_stream_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<(), MetadataError> {
        self.inner.set_stream_metadata(stream, metadata).await
    }

    async fn head_position(&self) -> Result<Option<Position>, ReadError> {
        self.inner.head_position().await
    }

    fn writable(&self) -> Result<(), BackendError> {
        self.inner.writable()
    }

    async fn subscribe_to_all(
        &self,
        from: SubscribeFrom,
        filter: EventFilter,
    ) -> Result<EventSubscription, ReadError> {
        self.inner.subscribe_to_all(from, filter).await
    }

    async fn subscribe_to_stream(
        &self,
        stream: &StreamName,
        from: SubscribeStreamFrom,
    ) -> Result<EventSubscription, ReadError> {
        self.inner.subscribe_to_stream(stream, from).await
    }
}
