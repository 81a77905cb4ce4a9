//! The [`EventStore`] trait: the contract every backend keeps.

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::dcb::{AppendCondition, Query, ReadQueryOptions};
use crate::transaction::{AppendTransaction, TransactionResult};
use crate::{
    AppendError, AppendResult, BackendError, BackendErrorKind, DeleteError, EventFilter,
    ExpectedRevision, MetadataError, NewEvent, Position, ReadAllOptions, ReadError,
    ReadStreamOptions, RecordedEvent, StreamMetadata, StreamName, SubscribeFrom,
    SubscribeStreamFrom, SubscriptionError, validate_category,
};

/// A live stream of events: catch-up first, then new events as they commit.
///
/// It is pulled: a slow consumer only falls behind and reads later pages from the
/// store, it never makes the store buffer events for it. After an error it ends.
pub type EventSubscription = BoxStream<'static, Result<RecordedEvent, SubscriptionError>>;

/// An event store. Every backend implements this and passes the conformance kit
/// (`foldstore_core::testkit`), so the semantics described in `docs/semantics.md` hold
/// on all of them.
///
/// ```
/// use foldstore_core::{EventStore, ExpectedRevision, InMemoryStore, NewEvent, ReadStreamOptions, StreamName};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryStore::new();
/// let stream = StreamName::new("account-42")?;
/// let opened = NewEvent::json("Opened", &serde_json::json!({"owner": "ada"}))?;
/// let result = store.append(&stream, ExpectedRevision::NoStream, vec![opened]).await?;
/// assert_eq!(result.next_expected_revision, 0);
///
/// let events = store.read_stream(&stream, ReadStreamOptions::forwards()).await?;
/// assert_eq!(events[0].event_type, "Opened");
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Writes a transaction all or nothing: each part's events to its stream if the
    /// stream is at the part's expected revision, if no event matching the condition was
    /// stored after its `after`, and if the tracking position is past the one stored for
    /// its source; the tracking is stored with the events (`docs/semantics.md` §13).
    ///
    /// The checks run in this order: the transaction itself
    /// ([`crate::rules::validate_transaction`]); for each part, in order, its tombstone,
    /// idempotency and expected revision ([`crate::rules::plan_transaction`]: a
    /// transaction whose parts are all stored already is a retry and returns the first
    /// result, checking nothing else); the tracking
    /// ([`AppendError::AlreadyProcessed`]); then the condition
    /// ([`AppendError::ConditionFailed`], naming the first matching event). The events of
    /// the parts follow each other in the global order, part after part. The result is
    /// acknowledged only once it is durable as the backend's durability setting defines.
    ///
    /// ```
    /// use foldstore_core::dcb::{AppendCondition, Query, QueryItem};
    /// use foldstore_core::transaction::AppendTransaction;
    /// use foldstore_core::{AppendError, EventStore, ExpectedRevision, InMemoryStore, NewEvent, Position, StreamName};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = InMemoryStore::new();
    /// let (a, b) = (StreamName::new("account-a")?, StreamName::new("account-b")?);
    /// let transfer = |amount: i64| -> Result<AppendTransaction, serde_json::Error> {
    ///     Ok(AppendTransaction::new()
    ///         .stream(a.clone(), ExpectedRevision::Any, vec![NewEvent::json("Withdrawn", &amount)?])
    ///         .stream(b.clone(), ExpectedRevision::Any, vec![NewEvent::json("Deposited", &amount)?]))
    /// };
    /// let first = store.append_transaction(transfer(10)?.tracking("bank", Position::new(1))).await?;
    /// assert_eq!(first.streams[1].next_expected_revision, 0);
    ///
    /// // The same source position again: already processed, nothing written.
    /// let again = store.append_transaction(transfer(10)?.tracking("bank", Position::new(1))).await;
    /// assert!(matches!(again, Err(AppendError::AlreadyProcessed { .. })));
    ///
    /// // A condition refuses the whole transaction: neither stream is written.
    /// let any = Query::from_items([QueryItem::new().types(["Withdrawn"])]);
    /// let late = store.append_transaction(transfer(5)?.condition(AppendCondition::new(any, None))).await;
    /// assert!(matches!(late, Err(AppendError::ConditionFailed { position }) if Some(position) == first.first_position));
    /// # Ok(())
    /// # }
    /// ```
    async fn append_transaction(
        &self,
        transaction: AppendTransaction,
    ) -> Result<TransactionResult, AppendError>;

    /// The position stored for tracking `source` by the last transaction that carried
    /// it (see [`crate::transaction::Tracking`]), or `None` when none did. An invalid
    /// source name is [`ReadError::InvalidTracking`].
    async fn tracking(&self, source: &str) -> Result<Option<Position>, ReadError>;

    /// Appends `events` to `stream` atomically, if the stream is at `expected`: a
    /// transaction of one part ([`EventStore::append_transaction`]).
    ///
    /// Repeating an append with the same event ids returns the first result and writes
    /// nothing (see [`crate::rules::plan_append`]). The result is acknowledged only
    /// once it is durable as the backend's durability setting defines.
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, AppendError> {
        let transaction = AppendTransaction::single(stream.clone(), expected, events, None);
        one_append(self.append_transaction(transaction).await?)
    }

    /// Appends like [`EventStore::append`], and also fails with
    /// [`AppendError::ConditionFailed`] if an event matching `condition`'s query is
    /// stored after `condition.after` (Dynamic Consistency Boundary, see [`crate::dcb`]):
    /// a transaction of one part with a condition.
    ///
    /// The checks run in this order: the events are validated, a retry of an append
    /// that is already stored returns its first result (the condition is not checked
    /// again, since the stored events may match it themselves), the expected revision
    /// is checked, then the condition. Condition and write are atomic: no event that
    /// matches can be committed between the check and the write. An invalid tag in
    /// the condition's query is [`AppendError::InvalidTag`].
    ///
    /// Take `condition.after` from the last event the decision's [`read_query`]
    /// returned, or `None` when it returned nothing (then any matching event fails the
    /// append, which is also how a uniqueness check is written):
    ///
    /// [`read_query`]: EventStore::read_query
    ///
    /// ```
    /// use foldstore_core::dcb::{AppendCondition, Query, QueryItem, ReadQueryOptions};
    /// use foldstore_core::{AppendError, EventStore, ExpectedRevision, InMemoryStore, NewEvent, StreamName};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = InMemoryStore::new();
    /// let seats = Query::from_items([QueryItem::new().types(["SeatClaimed"]).tags(["course:c1"])]);
    ///
    /// // Decide on what the query shows (here: a course of one seat)...
    /// let seen = store.read_query(&seats, ReadQueryOptions::new()).await?;
    /// assert!(seen.is_empty());
    /// let after = seen.last().map(|e| e.position);
    /// let claim = NewEvent::json("SeatClaimed", &"ada")?.with_tags(["course:c1", "student:ada"]);
    /// let stream = StreamName::new("enrolment-ada")?;
    /// store
    ///     .append_if(&stream, ExpectedRevision::Any, vec![claim], AppendCondition::new(seats.clone(), after))
    ///     .await?;
    ///
    /// // ...and a second decision made on the same, now outdated, view fails.
    /// let late = NewEvent::json("SeatClaimed", &"bob")?.with_tags(["course:c1", "student:bob"]);
    /// let r = store
    ///     .append_if(&StreamName::new("enrolment-bob")?, ExpectedRevision::Any, vec![late], AppendCondition::new(seats, after))
    ///     .await;
    /// assert!(matches!(r, Err(AppendError::ConditionFailed { .. })));
    /// # Ok(())
    /// # }
    /// ```
    async fn append_if(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> Result<AppendResult, AppendError> {
        let transaction =
            AppendTransaction::single(stream.clone(), expected, events, Some(condition));
        one_append(self.append_transaction(transaction).await?)
    }

    /// Reads the events matching `query` in global order (Dynamic Consistency
    /// Boundary, see [`crate::dcb`]), strictly after `options.after`, at most
    /// `options.limit`. Unlike stream reads, soft-deleted, truncated and tombstoned
    /// streams' events are included, as in `$all`; it shows what `read_all` shows (on
    /// PostgreSQL, events below the visibility horizon). An invalid tag in the query is
    /// [`ReadError::InvalidTag`].
    async fn read_query(
        &self,
        query: &Query,
        options: ReadQueryOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError>;

    /// Reads a stream's visible events (soft-delete and metadata limits applied).
    ///
    /// A stream that was never written, or was soft-deleted and not written since, is
    /// [`ReadError::StreamNotFound`]; a tombstoned one [`ReadError::StreamTombstoned`].
    async fn read_stream(
        &self,
        stream: &StreamName,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError>;

    /// Reads the global log, `$all`. It holds every committed event in commit order,
    /// including events that stream reads hide (deleted, truncated, tombstoned).
    async fn read_all(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError>;

    /// Reads the events of one category (streams named `category-...`) in global
    /// order; `options.filter` may add a consumer group, event types or a prefix.
    async fn read_category(
        &self,
        category: &str,
        mut options: ReadAllOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        validate_category(category)?;
        options.filter.category = Some(category.to_owned());
        self.read_all(options).await
    }

    /// Soft-deletes a stream: reads say it does not exist; a later append starts again
    /// after its last revision. The events stay in `$all`.
    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError>;

    /// Tombstones a stream: it can never be written again; reads and appends get a
    /// typed error. The events stay in `$all`.
    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError>;

    /// The stream's metadata, if any was set.
    async fn stream_metadata(
        &self,
        stream: &StreamName,
    ) -> Result<Option<StreamMetadata>, MetadataError>;

    /// Replaces the stream's metadata. Reads honour it from then on.
    async fn set_stream_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<(), MetadataError>;

    /// The position of the last committed event: every event at or below it is
    /// visible to every read that starts later. `None` for an empty store.
    async fn head_position(&self) -> Result<Option<Position>, ReadError>;

    /// Whether the store still accepts writes; `Err` is the error a write would get
    /// now (SQLite stops writing after a disk error until it is reopened). Cheap: it
    /// asks the store's state, not the disk. Health checks (`GET /health`) report it.
    /// The default says yes; a store that wraps another must forward it.
    fn writable(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Subscribes to `$all`: catches up from `from`, then continues live.
    async fn subscribe_to_all(
        &self,
        from: SubscribeFrom,
        filter: EventFilter,
    ) -> Result<EventSubscription, ReadError>;

    /// Subscribes to one stream: catches up from `from`, then continues live. A stream
    /// that does not exist yet is waited for.
    async fn subscribe_to_stream(
        &self,
        stream: &StreamName,
        from: SubscribeStreamFrom,
    ) -> Result<EventSubscription, ReadError>;

    /// The names of the streams that were ever written whose names start with
    /// `prefix` (empty: every stream), in byte order, after `after` (exclusive), at
    /// most `limit` of them. Deleted and tombstoned streams are listed too: read a
    /// stream to learn its state.
    ///
    /// The default implementation scans `$all` (with the prefix as a filter), so it is
    /// correct on every backend but costs a read of every matching event; backends
    /// with a table of streams answer from it instead.
    ///
    /// ```
    /// use foldstore_core::{EventStore, ExpectedRevision, InMemoryStore, NewEvent, StreamName};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = InMemoryStore::new();
    /// for name in ["order-2", "order-1", "user-1"] {
    ///     let event = NewEvent::json("Created", &serde_json::json!({}))?;
    ///     store.append(&StreamName::new(name)?, ExpectedRevision::Any, vec![event]).await?;
    /// }
    /// let names = store.list_streams("order-", None, 10).await?;
    /// let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
    /// assert_eq!(names, ["order-1", "order-2"]);
    /// # Ok(())
    /// # }
    /// ```
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamName>, ReadError> {
        const PAGE: usize = 1000;
        let mut names = std::collections::BTreeSet::new();
        let mut from = None;
        loop {
            let mut filter = EventFilter::all();
            if !prefix.is_empty() {
                filter.stream_prefix = Some(prefix.to_owned());
            }
            let mut options = ReadAllOptions::forwards().max_count(PAGE).filter(filter);
            options.from = from;
            let page = self.read_all(options).await?;
            let Some(last) = page.last() else { break };
            from = Some(last.position.next());
            let full = page.len() == PAGE;
            for event in page {
                if after.is_none_or(|a| event.stream.as_str() > a.as_str()) {
                    names.insert(event.stream);
                }
            }
            if !full {
                break;
            }
        }
        Ok(names.into_iter().take(limit).collect())
    }
}

/// The answer of a one-part transaction as `append` gives it.
fn one_append(result: TransactionResult) -> Result<AppendResult, AppendError> {
    result.append_result().ok_or_else(|| {
        AppendError::Backend(BackendError::new(
            BackendErrorKind::Internal,
            "a one-part transaction answered without a revision or a position",
        ))
    })
}
