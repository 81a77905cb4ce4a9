//! Transactional appends: events for several streams, an optional Dynamic Consistency
//! Boundary condition and optional tracking, written all or nothing
//! ([`crate::EventStore::append_transaction`], `docs/semantics.md` §13).
//!
//! - An [`AppendTransaction`] holds [`StreamAppend`] parts, one per stream, each with
//!   its own expected revision.
//! - Events that have no stream of their own (a DCB client's, such as UmaDB's) go to a
//!   new stream named from the id of the first of them: [`StreamAppend::without_stream`].
//! - [`Tracking`] records how far the writer has processed some source, in the same
//!   transaction: an append whose tracking position is not past the stored one is
//!   refused ([`crate::AppendError::AlreadyProcessed`]), which makes "read from one
//!   place, write events back" exactly-once.
//!
//! ```
//! use foldstore_core::transaction::AppendTransaction;
//! use foldstore_core::{EventStore, ExpectedRevision, InMemoryStore, NewEvent, Position, StreamName};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = InMemoryStore::new();
//! let (from, to) = (StreamName::new("account-1")?, StreamName::new("account-2")?);
//! let transfer = AppendTransaction::new()
//!     .stream(from.clone(), ExpectedRevision::Any, vec![NewEvent::json("Withdrawn", &10)?])
//!     .stream(to.clone(), ExpectedRevision::Any, vec![NewEvent::json("Deposited", &10)?])
//!     .tracking("payments", Position::new(17));
//! let result = store.append_transaction(transfer).await?;
//! assert_eq!(result.streams.len(), 2);
//! assert!(result.first_position < result.last_position);
//! assert_eq!(store.tracking("payments").await?, Some(Position::new(17)));
//! # Ok(())
//! # }
//! ```

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::dcb::AppendCondition;
use crate::{AppendResult, ExpectedRevision, NewEvent, Position, StreamName};

/// The category of the streams that hold events appended without a stream
/// ([`StreamAppend::without_stream`]): `dcb-<id of the first event>`.
pub const STREAMLESS_CATEGORY: &str = "dcb";

/// The longest tracking source name, in UTF-8 bytes.
pub const MAX_TRACKING_SOURCE_BYTES: usize = 200;

/// One part of an [`AppendTransaction`]: events for one stream, if it is at `expected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamAppend {
    /// The stream. A transaction names each stream at most once.
    pub stream: StreamName,
    /// What the stream must be at, as for [`crate::EventStore::append`].
    pub expected: ExpectedRevision,
    /// The events, in order; at least one.
    pub events: Vec<NewEvent>,
}

impl StreamAppend {
    /// `events` for `stream`, if it is at `expected`.
    pub fn new(stream: StreamName, expected: ExpectedRevision, events: Vec<NewEvent>) -> Self {
        Self {
            stream,
            expected,
            events,
        }
    }

    /// Events that have no stream of their own: they go, in order, to a new stream named
    /// `dcb-<id of the first event>` ([`streamless_stream`]), expected not to exist.
    ///
    /// So they keep their tags and their place in the global order, each such append
    /// has a revision counter of its own (no two appends wait for one another), and a
    /// retry with the same ids names the same stream and returns the first result.
    ///
    /// ```
    /// use foldstore_core::transaction::StreamAppend;
    /// use foldstore_core::{ExpectedRevision, NewEvent};
    ///
    /// let claim = NewEvent::json("SeatClaimed", &"ada").unwrap().with_tags(["course:c1"]);
    /// let part = StreamAppend::without_stream(vec![claim.clone()]);
    /// assert_eq!(part.stream.as_str(), format!("dcb-{}", claim.id));
    /// assert_eq!(part.expected, ExpectedRevision::NoStream);
    /// ```
    pub fn without_stream(events: Vec<NewEvent>) -> Self {
        // Without events there is no id to name the stream by; the nil id names a
        // stream the append is refused for anyway (`NoEvents`).
        let first = events.first().map_or(Uuid::nil(), |e| e.id);
        Self {
            stream: streamless_stream(first),
            expected: ExpectedRevision::NoStream,
            events,
        }
    }
}

/// The stream that events appended without a stream go to, when `first_event` is the
/// id of the first of them: `dcb-<first_event>` (lower-case, hyphenated).
pub fn streamless_stream(first_event: Uuid) -> StreamName {
    StreamName::trusted(format!("{STREAMLESS_CATEGORY}-{first_event}"))
}

/// How far a writer has processed a source: stored with the events of an
/// [`AppendTransaction`], read with [`crate::EventStore::tracking`].
///
/// `position` is the source's own: any number that grows as the writer moves through
/// the source, such as a foldstore position or an UmaDB sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tracking {
    /// The source's name: non-empty, at most [`MAX_TRACKING_SOURCE_BYTES`] bytes, no
    /// control characters.
    pub source: String,
    /// The position in the source of what this transaction processed.
    pub position: Position,
}

impl Tracking {
    /// `position` of `source`.
    pub fn new(source: impl Into<String>, position: Position) -> Self {
        Self {
            source: source.into(),
            position,
        }
    }
}

/// Why a tracking source name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTracking {
    /// The source name was empty.
    #[error("the tracking source is empty: name the source, such as `orders-projection`")]
    EmptySource,
    /// The source name was too long.
    #[error(
        "the tracking source is {len} bytes long; the limit is {MAX_TRACKING_SOURCE_BYTES}: use a shorter name"
    )]
    SourceTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The source name held a control character.
    #[error("the tracking source {0:?} holds a control character: use printable text")]
    SourceControlCharacter(String),
}

/// Checks a tracking source name.
///
/// ```
/// use foldstore_core::transaction::validate_tracking_source;
///
/// assert!(validate_tracking_source("orders-projection").is_ok());
/// assert!(validate_tracking_source("").is_err());
/// ```
pub fn validate_tracking_source(source: &str) -> Result<(), InvalidTracking> {
    if source.is_empty() {
        return Err(InvalidTracking::EmptySource);
    }
    if source.len() > MAX_TRACKING_SOURCE_BYTES {
        return Err(InvalidTracking::SourceTooLong { len: source.len() });
    }
    if source.chars().any(char::is_control) {
        return Err(InvalidTracking::SourceControlCharacter(source.to_owned()));
    }
    Ok(())
}

/// Events for several streams, an optional condition and optional tracking, written all
/// or nothing by [`crate::EventStore::append_transaction`].
///
/// Build it with [`AppendTransaction::new`] and the builder methods, or fill the public
/// fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AppendTransaction {
    /// One part per stream, written in this order: the events of the first part come
    /// first in the global order.
    pub parts: Vec<StreamAppend>,
    /// Refuses the whole transaction if an event matching its query was stored after
    /// its `after` (see [`crate::dcb`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<AppendCondition>,
    /// Stored in the same transaction; refuses it when `position` is not past the
    /// stored position of `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<Tracking>,
}

impl AppendTransaction {
    /// An empty transaction: add parts, and optionally a condition and tracking.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a part: `events` for `stream`, if it is at `expected`.
    pub fn stream(
        mut self,
        stream: StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Self {
        self.parts.push(StreamAppend::new(stream, expected, events));
        self
    }

    /// Adds events that have no stream of their own (see
    /// [`StreamAppend::without_stream`]).
    pub fn without_stream(mut self, events: Vec<NewEvent>) -> Self {
        self.parts.push(StreamAppend::without_stream(events));
        self
    }

    /// Adds a part.
    pub fn part(mut self, part: StreamAppend) -> Self {
        self.parts.push(part);
        self
    }

    /// Sets the condition.
    pub fn condition(mut self, condition: AppendCondition) -> Self {
        self.condition = Some(condition);
        self
    }

    /// Sets the tracking: this transaction processed `source` up to `position`.
    pub fn tracking(mut self, source: impl Into<String>, position: Position) -> Self {
        self.tracking = Some(Tracking::new(source, position));
        self
    }

    /// The transaction of one append (what [`crate::EventStore::append`] and
    /// [`crate::EventStore::append_if`] send).
    pub fn single(
        stream: StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
    ) -> Self {
        Self {
            parts: vec![StreamAppend::new(stream, expected, events)],
            condition,
            tracking: None,
        }
    }

    /// Every event of the transaction, part after part: their order in the global log.
    pub fn events(&self) -> impl Iterator<Item = &NewEvent> {
        self.parts.iter().flat_map(|p| p.events.iter())
    }

    /// How many events the transaction carries.
    pub fn event_count(&self) -> usize {
        self.parts.iter().map(|p| p.events.len()).sum()
    }
}

/// Where one part of a transaction left its stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamRevision {
    /// The stream.
    pub stream: StreamName,
    /// The revision of the part's last event: pass it as `Exact` to the next append.
    pub next_expected_revision: u64,
}

/// What a transaction did (or, for a retry, what the first attempt did).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TransactionResult {
    /// One entry per part, in the transaction's order.
    pub streams: Vec<StreamRevision>,
    /// The position of the first event written; `None` only for a transaction without
    /// events (tracking alone).
    pub first_position: Option<Position>,
    /// The position of the last event written; `None` only for a transaction without
    /// events.
    pub last_position: Option<Position>,
}

impl TransactionResult {
    /// The result of a one-part transaction as [`crate::EventStore::append`] answers it:
    /// the first part's revision and the last event's position. `None` for a
    /// transaction without events.
    pub fn append_result(&self) -> Option<AppendResult> {
        Some(AppendResult {
            next_expected_revision: self.streams.first()?.next_expected_revision,
            position: self.last_position?,
        })
    }
}
