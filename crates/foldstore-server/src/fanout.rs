//! One shared live tail of `$all` for every `$all` subscription of the server.
//!
//! The core's subscription reads one page from the store each time a commit is
//! signalled, so *N* live subscribers cost *N* store reads per commit: with 1,000
//! browsers or services following `/all/subscribe`, every commit became 1,000 SQLite
//! queries. [`LiveTail`] wraps the store: a single background subscription keeps the
//! last [`RING_EVENTS`] events in memory, and `$all` subscriptions read their pages
//! from that ring while they are within it (falling back to the store when they are
//! behind it, when catching up from further back).
//!
//! Why no event is skipped: the ring holds **every** event after `start` up to its
//! last event, in order (it is filled by one gap-free core subscription). A page asked
//! from position `p > start` is answered from the ring with everything it holds at or
//! after `p`, possibly nothing yet; the subscription then waits on the ring's own
//! commit signal, which fires after each batch the ring takes in. The head position a
//! filtered subscription uses to move past checked events is the ring's head, never the
//! store's, so it cannot move past events the ring has not seen. Plain reads (`GET
//! /all`, streams, categories) and stream subscriptions go to the store unchanged, so
//! a read after an acknowledged append always sees it.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use foldstore_core::dcb::{Query, ReadQueryOptions};
use foldstore_core::subscription::{CommitNotifier, GlobalLog, subscribe_all};
use foldstore_core::{
    AppendError, AppendTransaction, BackendError, DeleteError, Direction, EventFilter, EventStore,
    EventSubscription, ExpectedRevision, MetadataError, Position, ReadAllOptions, ReadError,
    ReadStreamOptions, RecordedEvent, StreamMetadata, StreamName, SubscribeFrom,
    SubscribeStreamFrom, TransactionResult,
};
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

/// Events the ring keeps.
pub(crate) const RING_EVENTS: usize = 4096;
/// Events an unfiltered page read from the ring holds at most (see
/// `RingView::read_page`).
const RING_PAGE: usize = 16;
/// Events an unfiltered page read from the store for a subscriber behind the ring
/// holds at most.
const STORE_PAGE: usize = 32;
/// Bytes of data and metadata the ring keeps at most (it keeps fewer events then).
const RING_BYTES: usize = 16 * 1024 * 1024;

/// The recent events, and from where they are complete.
#[derive(Default)]
struct Ring {
    /// Every event after this position is in `events` (`None`: from the start).
    start: Option<Position>,
    events: VecDeque<RecordedEvent>,
    bytes: usize,
}

impl Ring {
    fn head(&self) -> Option<Position> {
        self.events.back().map(|e| e.position).or(self.start)
    }

    /// Whether a forwards read from `from` (inclusive) can be answered here.
    fn covers(&self, from: Option<Position>) -> bool {
        match (self.start, from) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(start), Some(from)) => from > start,
        }
    }

    fn push(&mut self, event: RecordedEvent) {
        self.bytes += event.size();
        self.events.push_back(event);
        while self.events.len() > RING_EVENTS || self.bytes > RING_BYTES {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            self.bytes -= old.size();
            self.start = Some(old.position);
        }
    }

    fn read(&self, options: &ReadAllOptions) -> Vec<RecordedEvent> {
        let first = match options.from {
            Some(from) => self.events.partition_point(|e| e.position < from),
            None => 0,
        };
        self.events
            .range(first..)
            .filter(|e| options.filter.matches(e.stream.as_str(), &e.event_type))
            .take(options.max_count)
            .cloned()
            .collect()
    }
}

struct Shared {
    inner: Arc<dyn EventStore>,
    ring: RwLock<Ring>,
    commits: CommitNotifier,
    /// Set once the ring is seeded and the tail runs; concurrent first subscribers
    /// wait for it.
    started: tokio::sync::OnceCell<()>,
    shutdown: watch::Receiver<bool>,
}

/// The store, with `$all` subscriptions served from a shared live tail.
#[derive(Clone)]
pub(crate) struct LiveTail(Arc<Shared>);

/// What `$all` subscriptions read: the ring when it covers the page, else the store.
#[derive(Clone)]
struct RingView(Arc<Shared>);

impl LiveTail {
    /// Wraps `inner`; the tail starts with the first `$all` subscription and ends when
    /// `shutdown` turns true.
    pub(crate) fn wrap(
        inner: Arc<dyn EventStore>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<dyn EventStore> {
        Arc::new(LiveTail(Arc::new(Shared {
            inner,
            ring: RwLock::new(Ring::default()),
            commits: CommitNotifier::new(),
            started: tokio::sync::OnceCell::new(),
            shutdown,
        })))
    }

    /// Seeds the ring at the store's head and starts the tail task, once.
    async fn ensure_started(&self) -> Result<(), ReadError> {
        self.0
            .started
            .get_or_try_init(|| async {
                let head = self.0.inner.head_position().await?;
                if let Ok(mut ring) = self.0.ring.write() {
                    ring.start = head;
                }
                tokio::spawn(tail(Arc::clone(&self.0), head));
                Ok::<(), ReadError>(())
            })
            .await
            .map(|_| ())
    }
}

/// Keeps the ring filled from one subscription, resuming after its last event if the
/// subscription fails, until shutdown.
async fn tail(shared: Arc<Shared>, mut after: Option<Position>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let from = after.map_or(SubscribeFrom::Start, SubscribeFrom::After);
        let subscription = tokio::select! {
            s = shared.inner.subscribe_to_all(from, EventFilter::all()) => s,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let mut subscription = match subscription {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "live tail: could not subscribe; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            let first = tokio::select! {
                e = subscription.next() => e,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let Some(Ok(first)) = first else {
                tracing::warn!("live tail: the subscription ended; resubscribing");
                break;
            };
            // Take in what is ready as one batch, then signal once.
            let mut batch = vec![first];
            while batch.len() < 512 {
                match subscription.next().now_or_never() {
                    Some(Some(Ok(e))) => batch.push(e),
                    _ => break,
                }
            }
            after = batch.last().map(|e| e.position);
            if let Ok(mut ring) = shared.ring.write() {
                for e in batch {
                    ring.push(e);
                }
            }
            shared.commits.notify();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[async_trait]
impl EventStore for LiveTail {
    async fn append_transaction(
        &self,
        transaction: AppendTransaction,
    ) -> Result<TransactionResult, AppendError> {
        self.0.inner.append_transaction(transaction).await
    }

    async fn tracking(&self, source: &str) -> Result<Option<Position>, ReadError> {
        self.0.inner.tracking(source).await
    }

    async fn read_query(
        &self,
        query: &Query,
        options: ReadQueryOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.0.inner.read_query(query, options).await
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamName>, ReadError> {
        self.0.inner.list_streams(prefix, after, limit).await
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.0.inner.read_stream(stream, options).await
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError> {
        self.0.inner.read_all(options).await
    }

    async fn read_category(
        &self,
        category: &str,
        options: ReadAllOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.0.inner.read_category(category, options).await
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError> {
        self.0.inner.delete_stream(stream, expected).await
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError> {
        self.0.inner.tombstone_stream(stream, expected).await
    }

    async fn stream_metadata(
        &self,
        stream: &StreamName,
    ) -> Result<Option<StreamMetadata>, MetadataError> {
        self.0.inner.stream_metadata(stream).await
    }

    async fn set_stream_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<(), MetadataError> {
        self.0.inner.set_stream_metadata(stream, metadata).await
    }

    async fn head_position(&self) -> Result<Option<Position>, ReadError> {
        self.0.inner.head_position().await
    }

    fn writable(&self) -> Result<(), BackendError> {
        self.0.inner.writable()
    }

    async fn subscribe_to_all(
        &self,
        from: SubscribeFrom,
        filter: EventFilter,
    ) -> Result<EventSubscription, ReadError> {
        self.ensure_started().await?;
        subscribe_all(RingView(Arc::clone(&self.0)), &self.0.commits, from, filter).await
    }

    async fn subscribe_to_stream(
        &self,
        stream: &StreamName,
        from: SubscribeStreamFrom,
    ) -> Result<EventSubscription, ReadError> {
        self.0.inner.subscribe_to_stream(stream, from).await
    }
}

#[async_trait]
impl GlobalLog for RingView {
    /// Forwards pages the ring covers come from the ring; others from the store.
    ///
    /// An unfiltered page from the ring holds at most [`RING_PAGE`] events, and one
    /// from the store [`STORE_PAGE`]: what a
    /// subscription holds for a client that stopped reading is then small, and as the
    /// page comes back short the subscription reads no page ahead. An unfiltered
    /// subscription does not use the head (it moves only past the events it got), so a
    /// short page skips nothing; a filtered one does, so its pages stay whole.
    async fn read_page(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError> {
        let mut options = options;
        if options.direction == Direction::Forwards
            && let Ok(ring) = self.0.ring.read()
            && ring.covers(options.from)
        {
            if options.filter.is_all() {
                options.max_count = options.max_count.min(RING_PAGE);
            }
            return Ok(ring.read(&options));
        }
        // A subscriber behind the ring reads the store; its pages are capped too, or
        // one that stopped reading would hold a whole store page (thousands of events).
        if options.filter.is_all() {
            options.max_count = options.max_count.min(STORE_PAGE);
        }
        self.0.inner.read_all(options).await
    }

    /// The ring's head: a filtered subscription may move up to it, never past what
    /// the ring has seen.
    async fn head(&self) -> Result<Option<Position>, ReadError> {
        let head = self.0.ring.read().ok().map(|ring| ring.head());
        match head {
            Some(head) => Ok(head),
            None => self.0.inner.head_position().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foldstore_core::{InMemoryStore, NewEvent};

    fn event(n: u64) -> NewEvent {
        NewEvent::json("E", &serde_json::json!({"n": n})).unwrap_or_else(|_| unreachable!())
    }

    /// Subscribers that start at the end, behind the ring and in it all get every
    /// event once, in order, across ring evictions, with filters.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribers_get_every_event_in_order_through_the_ring() {
        let inner: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
        let (stop, stopped) = watch::channel(false);
        let store = LiveTail::wrap(inner.clone(), stopped);
        let a = StreamName::new("a-1").unwrap();
        let b = StreamName::new("b-1").unwrap();
        // Events before the tail starts: read from the store.
        for n in 0..10 {
            store
                .append(&a, ExpectedRevision::Any, vec![event(n)])
                .await
                .unwrap();
        }
        let from_start = store
            .subscribe_to_all(SubscribeFrom::Start, EventFilter::all())
            .await
            .unwrap();
        let at_end = store
            .subscribe_to_all(SubscribeFrom::End, EventFilter::all())
            .await
            .unwrap();
        let only_b = store
            .subscribe_to_all(SubscribeFrom::Start, EventFilter::stream_prefix("b-"))
            .await
            .unwrap();
        let total = RING_EVENTS as u64 * 2 + 100;
        for n in 10..total {
            let s = if n % 3 == 0 { &b } else { &a };
            store
                .append(s, ExpectedRevision::Any, vec![event(n)])
                .await
                .unwrap();
        }
        let everything: Vec<_> = from_start
            .take(total as usize)
            .map(|e| e.unwrap().position)
            .collect()
            .await;
        let all_positions: Vec<_> = inner
            .read_all(ReadAllOptions::forwards().max_count(usize::MAX))
            .await
            .unwrap()
            .iter()
            .map(|e| e.position)
            .collect();
        assert_eq!(everything, all_positions);
        let new: Vec<_> = at_end
            .take(total as usize - 10)
            .map(|e| e.unwrap().position)
            .collect()
            .await;
        assert_eq!(new, all_positions[10..]);
        let bs = (10..total).filter(|n| n % 3 == 0).count();
        let got_b: Vec<_> = only_b.take(bs).map(|e| e.unwrap()).collect().await;
        assert!(got_b.iter().all(|e| e.stream.as_str() == "b-1"));
        assert!(got_b.windows(2).all(|w| w[0].position < w[1].position));
        // A late subscriber from the start catches up from the store, then the ring.
        let late: Vec<_> = store
            .subscribe_to_all(SubscribeFrom::Start, EventFilter::all())
            .await
            .unwrap()
            .take(total as usize)
            .map(|e| e.unwrap().position)
            .collect()
            .await;
        assert_eq!(late, all_positions);
        let _ = stop.send(true);
    }
}
