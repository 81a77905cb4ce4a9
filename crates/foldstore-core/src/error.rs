//! Typed errors, one enum per operation. Each message says what to do about it.

use uuid::Uuid;

use crate::{CurrentRevision, ExpectedRevision, InvalidStreamName, Position, StreamName};

/// What went wrong inside a backend (disk, database, connection), as opposed to a
/// refused request.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct BackendError {
    /// The class of failure, which says whether retrying can help.
    pub kind: BackendErrorKind,
    /// What happened, for people.
    pub message: String,
    /// The underlying error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Classes of backend failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The store cannot be reached or is shutting down; nothing was written. Retry later.
    #[error("the store is unavailable (nothing was written; retry later)")]
    Unavailable,
    /// The request may or may not have taken effect (a timeout, a connection lost
    /// during commit, or a commit whose `fsync` failed). Retry an append with the same
    /// event ids: it is idempotent. (After a failed `fsync` the retry gets
    /// [`BackendErrorKind::Storage`] until the store is reopened.)
    #[error("the outcome is unknown (retry with the same event ids; the retry is idempotent)")]
    OutcomeUnknown,
    /// The disk (or the database server's disk) is full: nothing of the request was
    /// written. Reads keep working. Writes are refused while the disk stays full and
    /// succeed again, without a restart, once space is freed: free disk space, then
    /// retry (an append with the same event ids, which is idempotent).
    #[error(
        "the disk is full (nothing was written; free disk space, then retry: the store resumes by itself, no restart needed)"
    )]
    StorageFull,
    /// The disk or database failed in a way that leaves durability in doubt (such as a
    /// failed `fsync`); the store stopped accepting writes to protect data.
    #[error("storage failure (check the disk and the logs, then restart)")]
    Storage,
    /// The stored data is not what this version of foldstore can read.
    #[error("incompatible or corrupt data")]
    Incompatible,
    /// A bug or an unexpected state.
    #[error("internal error (please report it)")]
    Internal,
}

impl BackendError {
    /// A new error of `kind`.
    pub fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            BackendErrorKind::Unavailable | BackendErrorKind::OutcomeUnknown
        )
    }
}

/// Why an event in an append was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidEvent {
    /// The event type was empty.
    #[error("the event type is empty: give every event a type such as `Deposited`")]
    EmptyType,
    /// The event type was too long.
    #[error("the event type is {len} bytes long; the limit is {max}")]
    TypeTooLong {
        /// Length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The event type contained a control character.
    #[error("the event type contains a control character")]
    TypeControlCharacter,
    /// The content type was JSON but the data did not parse.
    #[error("the data is not valid JSON ({0}); send JSON or set another content type")]
    DataNotJson(String),
    /// The content type was empty.
    #[error("the content type is empty: use `application/json` or the data's media type")]
    EmptyContentType,
    /// Two events of one append had the same id.
    #[error("event id {0} appears twice in this append: every event needs its own id")]
    DuplicateIdInAppend(Uuid),
    /// One of the event's tags is invalid.
    #[error("{0}")]
    Tag(crate::dcb::InvalidTag),
}

/// Why an append failed. Nothing of a failed append is written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The stream name is invalid.
    #[error(transparent)]
    InvalidStreamName(#[from] InvalidStreamName),
    /// The append carried no events (or a part of a transaction carried none, or a
    /// transaction carried neither events nor tracking).
    #[error("an append must carry at least one event; to check a stream's revision, read it")]
    NoEvents,
    /// One of the events is invalid.
    #[error("event {index} of the append is invalid: {reason}")]
    InvalidEvent {
        /// 0-based index of the event in the append (in a transaction, counted over
        /// all its parts, part after part).
        index: usize,
        /// What is wrong with it.
        reason: InvalidEvent,
    },
    /// Data and metadata together exceed the limit.
    #[error(
        "the append carries {size} bytes of data and metadata; the limit is {limit}: split it into several appends or raise the limit"
    )]
    TooLarge {
        /// Bytes of data plus metadata.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The stream is not at the expected revision: someone else wrote first.
    #[error(
        "stream {stream} is at {actual}, not at the expected {expected}: read it again, decide again, and retry"
    )]
    WrongExpectedRevision {
        /// The stream.
        stream: StreamName,
        /// What the append expected.
        expected: ExpectedRevision,
        /// What the stream is at.
        actual: CurrentRevision,
    },
    /// An event id is already stored and this append is not a retry of that append.
    #[error(
        "event id {event_id} is already stored in {existing_stream} at revision {existing_revision}; an append is a retry only when it repeats all of the earlier append's event ids in order: give new events new ids"
    )]
    DuplicateEventId {
        /// The id.
        event_id: Uuid,
        /// The stream that holds it.
        existing_stream: StreamName,
        /// Its revision there.
        existing_revision: u64,
    },
    /// The stream was tombstoned and can never be written again.
    #[error(
        "stream {stream} was tombstoned and can never be written again: use another stream name"
    )]
    StreamTombstoned {
        /// The stream.
        stream: StreamName,
    },
    /// The append's [`crate::dcb::AppendCondition`] failed: an event matching its query
    /// was stored after the condition's `after` position.
    #[error(
        "the append condition failed: event at position {position} matches its query and came after the decision was made: read the query again, decide again, and retry"
    )]
    ConditionFailed {
        /// The position of the first matching event after `after`.
        position: Position,
    },
    /// A tag on an event, or in the condition's query, is invalid.
    #[error("{0}")]
    InvalidTag(#[from] crate::dcb::InvalidTag),
    /// Two parts of a transaction name the same stream.
    #[error(
        "stream {stream} is named by two parts of the transaction: put all of its events in one part"
    )]
    DuplicateStream {
        /// The stream.
        stream: StreamName,
    },
    /// The transaction's tracking position is not past the one stored for its source:
    /// what it carries was processed already (see [`crate::transaction::Tracking`]).
    #[error(
        "source {source_name:?} was already processed up to position {stored}, so position {position} was processed already: skip it and go on after {stored}"
    )]
    AlreadyProcessed {
        /// The tracking source.
        source_name: String,
        /// The position stored for it.
        stored: Position,
        /// The position the transaction carried.
        position: Position,
    },
    /// The transaction's tracking source name is invalid.
    #[error("{0}")]
    InvalidTracking(#[from] crate::transaction::InvalidTracking),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The stream does not exist, or was soft-deleted and not written since.
    #[error("stream {stream} does not exist (never written, or deleted)")]
    StreamNotFound {
        /// The stream.
        stream: StreamName,
    },
    /// The stream was tombstoned.
    #[error("stream {stream} was tombstoned: its events are gone for good")]
    StreamTombstoned {
        /// The stream.
        stream: StreamName,
    },
    /// A stream or category name is invalid.
    #[error(transparent)]
    InvalidName(#[from] InvalidStreamName),
    /// A tag in a query is invalid.
    #[error("{0}")]
    InvalidTag(#[from] crate::dcb::InvalidTag),
    /// A tracking source name is invalid.
    #[error("{0}")]
    InvalidTracking(#[from] crate::transaction::InvalidTracking),
    /// A consumer group was given with `member >= size` or `size == 0`.
    #[error("consumer group member {member} of size {size} is invalid: use 0 <= member < size")]
    InvalidConsumerGroup {
        /// The member.
        member: u32,
        /// The size.
        size: u32,
    },
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Why a delete or a tombstone failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeleteError {
    /// The stream is not at the expected revision.
    #[error(
        "stream {stream} is at {actual}, not at the expected {expected}: read it again and retry"
    )]
    WrongExpectedRevision {
        /// The stream.
        stream: StreamName,
        /// What the delete expected.
        expected: ExpectedRevision,
        /// What the stream is at.
        actual: CurrentRevision,
    },
    /// The stream was already tombstoned.
    #[error("stream {stream} was already tombstoned")]
    StreamTombstoned {
        /// The stream.
        stream: StreamName,
    },
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Why reading or writing stream metadata failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The stream was tombstoned.
    #[error("stream {stream} was tombstoned: its metadata can no longer change")]
    StreamTombstoned {
        /// The stream.
        stream: StreamName,
    },
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// An error ending a subscription. A subscription that yields an error ends; resume it
/// from the last position it delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriptionError {
    /// The subscribed stream was tombstoned.
    #[error("stream {stream} was tombstoned; the subscription ended")]
    StreamTombstoned {
        /// The stream.
        stream: StreamName,
    },
    /// A read failed. Resume from `last_position` (or the last delivered revision).
    #[error("subscription read failed after position {last_position:?}: {source}")]
    Read {
        /// The last position delivered before the failure, if any.
        last_position: Option<Position>,
        /// The failure.
        #[source]
        source: ReadError,
    },
}
