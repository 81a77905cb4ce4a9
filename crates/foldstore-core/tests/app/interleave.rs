//! An event store that lets a test slip writes in just before the next append: the
//! interleaving "someone wrote between my load and my append", forced, not timed.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use foldstore_core::dcb::{AppendCondition, Query, ReadQueryOptions};
use foldstore_core::*;

#[derive(Clone, Default)]
pub(crate) struct Interleave {
    pub(crate) inner: InMemoryStore,
    /// Writes made (with `Any`) at the start of the next append calls, one per call.
    pending: Arc<Mutex<Vec<(StreamName, NewEvent)>>>,
    pub(crate) appends: Arc<Mutex<u32>>,
}

impl Interleave {
    /// Before each of the next appends, write `event` to `stream` first.
    pub(crate) fn sneak_in(&self, stream: &StreamName, event: NewEvent) {
        self.pending.lock().unwrap().push((stream.clone(), event));
    }

    async fn before_append(&self) {
        *self.appends.lock().unwrap() += 1;
        let next = {
            let mut p = self.pending.lock().unwrap();
            (!p.is_empty()).then(|| p.remove(0))
        };
        if let Some((stream, event)) = next {
            self.inner
                .append(&stream, ExpectedRevision::Any, vec![event])
                .await
                .unwrap();
        }
    }
}

#[async_trait]
impl EventStore for Interleave {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, AppendError> {
        self.before_append().await;
        self.inner.append(stream, expected, events).await
    }
    async fn append_if(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> Result<AppendResult, AppendError> {
        self.before_append().await;
        self.inner
            .append_if(stream, expected, events, condition)
            .await
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
