//! A reference model of the contract in `docs/semantics.md`, written to be obviously
//! correct rather than fast: a `Vec` of every event ever committed (`$all`) and a map of
//! per-stream facts. Every lookup is a linear scan. It shares no code with
//! [`crate::InMemoryStore`] or [`crate::rules`], so a bug there does not hide itself here.
//!
//! Positions are opaque, so the model answers with indexes into its log; the model test
//! maps them to the store's positions.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::dcb::Query;
use crate::{
    AppendError, ConsumerGroup, CurrentRevision, DeleteError, Direction, EventFilter,
    ExpectedRevision, InvalidEvent, MetadataError, NewEvent, ReadError, StreamMetadata, StreamName,
};

/// An event as the model stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEvent {
    /// The event id.
    pub id: Uuid,
    /// Its stream.
    pub stream: StreamName,
    /// Its type.
    pub event_type: String,
    /// Its revision in the stream.
    pub revision: u64,
    /// The payload.
    pub data: Bytes,
    /// The payload's media type.
    pub content_type: String,
    /// The metadata, parsed.
    pub metadata: Map<String, Value>,
    /// The tags, as given.
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct ModelStream {
    /// The last revision ever written.
    last: Option<u64>,
    /// Revisions below this were soft-deleted.
    deleted_before: u64,
    tombstoned: bool,
    metadata: Option<StreamMetadata>,
}

impl ModelStream {
    fn visible_last(&self) -> Option<u64> {
        self.last.filter(|&l| l >= self.deleted_before)
    }

    fn current(&self) -> CurrentRevision {
        match self.visible_last() {
            Some(l) => CurrentRevision::Current(l),
            None => CurrentRevision::NoStream,
        }
    }

    fn visible(&self, revision: u64) -> bool {
        if revision < self.deleted_before {
            return false;
        }
        let Some(m) = &self.metadata else {
            return true;
        };
        if m.truncate_before.is_some_and(|t| revision < t) {
            return false;
        }
        if let (Some(max), Some(last)) = (m.max_count, self.last) {
            // Visible: the last `max` revisions, `last + 1 - max ..= last`.
            if u128::from(revision) + u128::from(max) <= u128::from(last) {
                return false;
            }
        }
        true
    }
}

/// Why the model (or a store, translated) refused a request. Compared between the
/// model and the store; fields that a backend may word differently are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `AppendError::NoEvents`.
    NoEvents,
    /// `AppendError::TooLarge`.
    TooLarge {
        /// Bytes of data plus metadata.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// `AppendError::InvalidEvent`, with the reason's kind.
    InvalidEvent {
        /// Index of the event.
        index: usize,
        /// The kind of the reason.
        kind: InvalidKind,
    },
    /// `*::WrongExpectedRevision`.
    WrongExpectedRevision {
        /// What the request expected.
        expected: ExpectedRevision,
        /// What the stream is at.
        actual: CurrentRevision,
    },
    /// `AppendError::DuplicateEventId` (which id it names is checked separately).
    DuplicateEventId,
    /// `*::StreamTombstoned`.
    StreamTombstoned,
    /// `ReadError::StreamNotFound`.
    StreamNotFound,
    /// `ReadError::InvalidName` / `AppendError::InvalidStreamName`.
    InvalidName,
    /// `ReadError::InvalidConsumerGroup`.
    InvalidConsumerGroup,
    /// `AppendError::ConditionFailed` (which position it names is checked separately).
    ConditionFailed,
    /// `AppendError::InvalidTag` / `ReadError::InvalidTag`: a tag in a query.
    InvalidTag,
    /// `AppendError::DuplicateStream`: two parts of a transaction name one stream.
    DuplicateStream,
    /// `AppendError::AlreadyProcessed`, with the stored tracking position.
    AlreadyProcessed {
        /// The position stored for the source.
        stored: u128,
    },
    /// `AppendError::InvalidTracking` / `ReadError::InvalidTracking`.
    InvalidTracking,
    /// Anything else (a backend failure): never expected.
    Other(String),
}

/// The kind of an [`InvalidEvent`], without its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
    /// Empty event type.
    EmptyType,
    /// Event type over 200 bytes.
    TypeTooLong,
    /// Control character in the event type.
    TypeControlCharacter,
    /// JSON content type, data not JSON.
    DataNotJson,
    /// Empty content type.
    EmptyContentType,
    /// Two events of one append share an id.
    DuplicateIdInAppend,
    /// A tag is invalid.
    Tag,
}

impl From<&InvalidEvent> for InvalidKind {
    fn from(e: &InvalidEvent) -> Self {
        match e {
            InvalidEvent::EmptyType => Self::EmptyType,
            InvalidEvent::TypeTooLong { .. } => Self::TypeTooLong,
            InvalidEvent::TypeControlCharacter => Self::TypeControlCharacter,
            InvalidEvent::DataNotJson(_) => Self::DataNotJson,
            InvalidEvent::EmptyContentType => Self::EmptyContentType,
            InvalidEvent::DuplicateIdInAppend(_) => Self::DuplicateIdInAppend,
            InvalidEvent::Tag(_) => Self::Tag,
        }
    }
}

impl From<&AppendError> for Refusal {
    fn from(e: &AppendError) -> Self {
        match e {
            AppendError::InvalidStreamName(_) => Self::InvalidName,
            AppendError::NoEvents => Self::NoEvents,
            AppendError::InvalidEvent { index, reason } => Self::InvalidEvent {
                index: *index,
                kind: reason.into(),
            },
            AppendError::TooLarge { size, limit } => Self::TooLarge {
                size: *size,
                limit: *limit,
            },
            AppendError::WrongExpectedRevision {
                expected, actual, ..
            } => Self::WrongExpectedRevision {
                expected: *expected,
                actual: *actual,
            },
            AppendError::DuplicateEventId { .. } => Self::DuplicateEventId,
            AppendError::StreamTombstoned { .. } => Self::StreamTombstoned,
            AppendError::ConditionFailed { .. } => Self::ConditionFailed,
            AppendError::InvalidTag(_) => Self::InvalidTag,
            AppendError::DuplicateStream { .. } => Self::DuplicateStream,
            AppendError::AlreadyProcessed { stored, .. } => Self::AlreadyProcessed {
                stored: stored.as_u128(),
            },
            AppendError::InvalidTracking(_) => Self::InvalidTracking,
            AppendError::Backend(b) => Self::Other(b.to_string()),
        }
    }
}

impl From<&ReadError> for Refusal {
    fn from(e: &ReadError) -> Self {
        match e {
            ReadError::StreamNotFound { .. } => Self::StreamNotFound,
            ReadError::StreamTombstoned { .. } => Self::StreamTombstoned,
            ReadError::InvalidName(_) => Self::InvalidName,
            ReadError::InvalidConsumerGroup { .. } => Self::InvalidConsumerGroup,
            ReadError::InvalidTag(_) => Self::InvalidTag,
            ReadError::InvalidTracking(_) => Self::InvalidTracking,
            ReadError::Backend(b) => Self::Other(b.to_string()),
        }
    }
}

impl From<&DeleteError> for Refusal {
    fn from(e: &DeleteError) -> Self {
        match e {
            DeleteError::WrongExpectedRevision {
                expected, actual, ..
            } => Self::WrongExpectedRevision {
                expected: *expected,
                actual: *actual,
            },
            DeleteError::StreamTombstoned { .. } => Self::StreamTombstoned,
            DeleteError::Backend(b) => Self::Other(b.to_string()),
        }
    }
}

impl From<&MetadataError> for Refusal {
    fn from(e: &MetadataError) -> Self {
        match e {
            MetadataError::StreamTombstoned { .. } => Self::StreamTombstoned,
            MetadataError::Backend(b) => Self::Other(b.to_string()),
        }
    }
}

/// What a successful append answered, in model terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelAppend {
    /// The revision of the last event.
    pub next_expected_revision: u64,
    /// Index in the log of the last event (its position, in model terms).
    pub last_index: usize,
    /// Whether anything was written (false for an idempotent retry).
    pub wrote: bool,
}

/// One part of a transaction, as the model takes it.
#[derive(Debug, Clone)]
pub struct ModelPart {
    /// The stream, or `None` for events without a stream (`dcb-<first id>`).
    pub stream: Option<StreamName>,
    /// The expectation (ignored for events without a stream, which expect no stream).
    pub expected: ExpectedRevision,
    /// The events.
    pub events: Vec<NewEvent>,
}

/// What a successful transaction answered, in model terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelTransaction {
    /// Each part's stream and the revision of its last event, in order.
    pub streams: Vec<(StreamName, u64)>,
    /// Log indexes of the first and the last event; `None` without events.
    pub first_index: Option<usize>,
    /// See `first_index`.
    pub last_index: Option<usize>,
    /// Whether anything was written (false for an idempotent retry).
    pub wrote: bool,
}

/// How the model plans one part of a transaction.
enum PartPlan {
    /// Write from this revision.
    Write(u64),
    /// Already stored at these log indexes.
    Stored(Vec<usize>),
}

/// The reference model.
#[derive(Debug, Clone)]
pub struct Model {
    log: Vec<ModelEvent>,
    streams: BTreeMap<StreamName, ModelStream>,
    /// Tracking positions by source.
    tracking: BTreeMap<String, u128>,
    max_append_bytes: usize,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

fn expected_matches(expected: ExpectedRevision, current: CurrentRevision) -> bool {
    match expected {
        ExpectedRevision::Any => true,
        ExpectedRevision::NoStream => current == CurrentRevision::NoStream,
        ExpectedRevision::StreamExists => current != CurrentRevision::NoStream,
        ExpectedRevision::Exact(n) => current == CurrentRevision::Current(n),
    }
}

fn content_type_is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A tag the contract accepts: non-empty, at most 200 bytes, no control character.
fn tag_ok(tag: &str) -> bool {
    !tag.is_empty() && tag.len() <= 200 && !tag.chars().any(char::is_control)
}

/// A tracking source the contract accepts: non-empty, at most 200 bytes, no control
/// character.
fn source_ok(source: &str) -> bool {
    !source.is_empty() && source.len() <= 200 && !source.chars().any(char::is_control)
}

fn query_tags_ok(query: &Query) -> bool {
    query.items.iter().flat_map(|i| &i.tags).all(|t| tag_ok(t))
}

/// Whether `e` matches `query` (docs/semantics.md §10.2), written out again.
fn query_matches(query: &Query, e: &ModelEvent) -> bool {
    query.items.is_empty()
        || query.items.iter().any(|item| {
            (item.types.is_empty() || item.types.contains(&e.event_type))
                && item
                    .tags
                    .iter()
                    .all(|t| e.tags.iter().any(|have| have == t))
        })
}

fn category(stream: &str) -> &str {
    stream.split('-').next().unwrap_or(stream)
}

fn filter_error(filter: &EventFilter) -> Option<Refusal> {
    if let Some(c) = &filter.category {
        if c.is_empty() || c.len() > 200 || c.contains('-') || c.starts_with('$') {
            return Some(Refusal::InvalidName);
        }
        if c.chars().any(char::is_control) {
            return Some(Refusal::InvalidName);
        }
    }
    if let Some(g) = filter.consumer_group
        && (g.size == 0 || g.member >= g.size)
    {
        return Some(Refusal::InvalidConsumerGroup);
    }
    None
}

fn passes(filter: &EventFilter, e: &ModelEvent) -> bool {
    let name = e.stream.as_str();
    if filter
        .stream_prefix
        .as_ref()
        .is_some_and(|p| !name.starts_with(p.as_str()))
    {
        return false;
    }
    if filter
        .category
        .as_ref()
        .is_some_and(|c| category(name) != c)
    {
        return false;
    }
    if !filter.event_types.is_empty() && !filter.event_types.contains(&e.event_type) {
        return false;
    }
    if let Some(g) = filter.consumer_group {
        let id = name.split_once('-').map_or(name, |(_, id)| id);
        if crate::group_hash(id) % u64::from(g.size) != u64::from(g.member) {
            return false;
        }
    }
    true
}

impl Model {
    /// An empty model with the default 16 MiB append limit.
    pub fn new() -> Self {
        Self {
            log: Vec::new(),
            streams: BTreeMap::new(),
            tracking: BTreeMap::new(),
            max_append_bytes: 16 * 1024 * 1024,
        }
    }

    /// Every event ever committed, in commit order.
    pub fn log(&self) -> &[ModelEvent] {
        &self.log
    }

    /// The index of the last event, if any.
    pub fn head(&self) -> Option<usize> {
        self.log.len().checked_sub(1)
    }

    /// What an append with this expectation would be compared with.
    pub fn current(&self, stream: &StreamName) -> CurrentRevision {
        self.streams
            .get(stream)
            .map_or(CurrentRevision::NoStream, ModelStream::current)
    }

    /// Whether the stream is tombstoned.
    pub fn is_tombstoned(&self, stream: &StreamName) -> bool {
        self.streams.get(stream).is_some_and(|s| s.tombstoned)
    }

    fn check_events(&self, events: &[NewEvent]) -> Result<(), Refusal> {
        if events.is_empty() {
            return Err(Refusal::NoEvents);
        }
        let size: usize = events
            .iter()
            .map(|e| e.data.len() + e.metadata.as_str().len())
            .sum();
        if size > self.max_append_bytes {
            return Err(Refusal::TooLarge {
                size,
                limit: self.max_append_bytes,
            });
        }
        for (index, e) in events.iter().enumerate() {
            let bad = |kind| Err(Refusal::InvalidEvent { index, kind });
            if e.event_type.is_empty() {
                return bad(InvalidKind::EmptyType);
            }
            if e.event_type.len() > 200 {
                return bad(InvalidKind::TypeTooLong);
            }
            if e.event_type.chars().any(char::is_control) {
                return bad(InvalidKind::TypeControlCharacter);
            }
            if e.content_type.is_empty() {
                return bad(InvalidKind::EmptyContentType);
            }
            if content_type_is_json(&e.content_type)
                && serde_json::from_slice::<Value>(&e.data).is_err()
            {
                return bad(InvalidKind::DataNotJson);
            }
            if events[..index].iter().any(|earlier| earlier.id == e.id) {
                return bad(InvalidKind::DuplicateIdInAppend);
            }
            if e.tags.len() > 64 || !e.tags.iter().all(|t| tag_ok(t)) {
                return bad(InvalidKind::Tag);
            }
        }
        Ok(())
    }

    /// Appends, following `docs/semantics.md` section 3: a transaction of one part.
    pub fn append(
        &mut self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: &[NewEvent],
    ) -> Result<ModelAppend, Refusal> {
        let part = ModelPart {
            stream: Some(stream.clone()),
            expected,
            events: events.to_vec(),
        };
        self.transaction(&[part], None, None).map(Self::one)
    }

    /// Appends on condition that no event matching `query` is in the log after index
    /// `after` (anywhere when `None`), following `docs/semantics.md` section 10.
    pub fn append_if(
        &mut self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: &[NewEvent],
        query: &Query,
        after: Option<usize>,
    ) -> Result<ModelAppend, Refusal> {
        let part = ModelPart {
            stream: Some(stream.clone()),
            expected,
            events: events.to_vec(),
        };
        self.transaction(&[part], Some((query, after)), None)
            .map(Self::one)
    }

    fn one(t: ModelTransaction) -> ModelAppend {
        ModelAppend {
            next_expected_revision: t.streams[0].1,
            last_index: t.last_index.unwrap_or_default(),
            wrote: t.wrote,
        }
    }

    /// The stored tracking position of `source`, following `docs/semantics.md` §13.
    pub fn tracking(&self, source: &str) -> Result<Option<u128>, Refusal> {
        if !source_ok(source) {
            return Err(Refusal::InvalidTracking);
        }
        Ok(self.tracking.get(source).copied())
    }

    /// The stream a part goes to: its own, or `dcb-<id of its first event>`.
    pub fn stream_of(part: &ModelPart) -> StreamName {
        match &part.stream {
            Some(s) => s.clone(),
            None => {
                let id = part.events.first().map_or(Uuid::nil(), |e| e.id);
                StreamName::new(format!("dcb-{}", id.hyphenated()))
                    .expect("a dcb stream name is valid")
            }
        }
    }

    /// A transaction, following `docs/semantics.md` section 13: the parts all or
    /// nothing, with an optional condition (query, `after` index) and tracking
    /// (source, position).
    pub fn transaction(
        &mut self,
        parts: &[ModelPart],
        condition: Option<(&Query, Option<usize>)>,
        tracking: Option<(&str, u128)>,
    ) -> Result<ModelTransaction, Refusal> {
        // 1. The transaction itself.
        if parts.is_empty() && tracking.is_none() {
            return Err(Refusal::NoEvents);
        }
        if parts.iter().any(|p| p.events.is_empty()) {
            return Err(Refusal::NoEvents);
        }
        let all: Vec<NewEvent> = parts.iter().flat_map(|p| p.events.clone()).collect();
        if !all.is_empty() {
            self.check_events(&all)?;
        }
        let streams: Vec<StreamName> = parts.iter().map(Self::stream_of).collect();
        for (i, s) in streams.iter().enumerate() {
            if streams[..i].contains(s) {
                return Err(Refusal::DuplicateStream);
            }
        }
        if let Some((query, _)) = condition
            && !query_tags_ok(query)
        {
            return Err(Refusal::InvalidTag);
        }
        if let Some((source, _)) = tracking
            && !source_ok(source)
        {
            return Err(Refusal::InvalidTracking);
        }
        // 2. Each part: tombstone, idempotency, expected revision.
        let mut plans = Vec::with_capacity(parts.len());
        for (part, stream) in parts.iter().zip(&streams) {
            let expected = if part.stream.is_some() {
                part.expected
            } else {
                ExpectedRevision::NoStream
            };
            plans.push(self.plan_part(stream, expected, &part.events)?);
        }
        let stored: Vec<&Vec<usize>> = plans
            .iter()
            .filter_map(|p| match p {
                PartPlan::Stored(at) => Some(at),
                PartPlan::Write(_) => None,
            })
            .collect();
        if !stored.is_empty() {
            if stored.len() < plans.len() {
                return Err(Refusal::DuplicateEventId);
            }
            let indexes: Vec<usize> = stored.iter().flat_map(|at| at.iter().copied()).collect();
            return Ok(ModelTransaction {
                streams: streams
                    .iter()
                    .zip(&stored)
                    .map(|(s, at)| (s.clone(), self.log[at[at.len() - 1]].revision))
                    .collect(),
                first_index: indexes.iter().min().copied(),
                last_index: indexes.iter().max().copied(),
                wrote: false,
            });
        }
        // 3. Tracking, 4. the condition.
        if let Some((source, position)) = tracking
            && let Some(&stored) = self.tracking.get(source)
            && position <= stored
        {
            return Err(Refusal::AlreadyProcessed { stored });
        }
        if let Some((query, after)) = condition
            && self.first_match(query, after).is_some()
        {
            return Err(Refusal::ConditionFailed);
        }
        // 5. Write every part, in order.
        let first = self.log.len();
        let mut answer = Vec::with_capacity(parts.len());
        for ((part, stream), plan) in parts.iter().zip(&streams).zip(&plans) {
            let PartPlan::Write(mut revision) = *plan else {
                continue;
            };
            for e in &part.events {
                self.log.push(ModelEvent {
                    id: e.id,
                    stream: stream.clone(),
                    event_type: e.event_type.clone(),
                    revision,
                    data: e.data.clone(),
                    content_type: e.content_type.clone(),
                    metadata: e.metadata.to_map(),
                    tags: e.tags.clone(),
                });
                revision += 1;
            }
            self.streams.entry(stream.clone()).or_default().last = Some(revision - 1);
            answer.push((stream.clone(), revision - 1));
        }
        if let Some((source, position)) = tracking {
            self.tracking.insert(source.to_owned(), position);
        }
        let last = self.log.len();
        Ok(ModelTransaction {
            streams: answer,
            first_index: (last > first).then_some(first),
            last_index: last.checked_sub(1).filter(|&l| l >= first),
            wrote: true,
        })
    }

    /// The index of the first event after index `after` (all when `None`) matching
    /// `query`.
    pub fn first_match(&self, query: &Query, after: Option<usize>) -> Option<usize> {
        let start = after.map_or(0, |a| a + 1);
        (start..self.log.len()).find(|&i| query_matches(query, &self.log[i]))
    }

    /// The indexes of the events matching `query` after index `after`, at most `limit`.
    pub fn read_query(
        &self,
        query: &Query,
        after: Option<usize>,
        limit: usize,
    ) -> Result<Vec<usize>, Refusal> {
        if !query_tags_ok(query) {
            return Err(Refusal::InvalidTag);
        }
        let start = after.map_or(0, |a| a + 1);
        Ok((start..self.log.len())
            .filter(|&i| query_matches(query, &self.log[i]))
            .take(limit)
            .collect())
    }

    /// One part of a transaction: where it would be written, or where its events are
    /// stored already (a retry).
    fn plan_part(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: &[NewEvent],
    ) -> Result<PartPlan, Refusal> {
        let s = self.streams.get(stream).cloned().unwrap_or_default();
        if s.tombstoned {
            return Err(Refusal::StreamTombstoned);
        }
        let found: Vec<Option<usize>> = events
            .iter()
            .map(|e| self.log.iter().position(|l| l.id == e.id))
            .collect();
        let wrong = || Refusal::WrongExpectedRevision {
            expected,
            actual: s.current(),
        };
        if found.iter().all(Option::is_none) {
            if !expected_matches(expected, s.current()) {
                return Err(wrong());
            }
            return Ok(PartPlan::Write(s.last.map_or(0, |l| l + 1)));
        }
        // Some ids are stored: a retry only when all are, in this stream, consecutive,
        // in the same order.
        let Some(indexes) = found.iter().copied().collect::<Option<Vec<usize>>>() else {
            return Err(Refusal::DuplicateEventId);
        };
        let first = &self.log[indexes[0]];
        let is_retry = indexes.iter().enumerate().all(|(i, &at)| {
            self.log[at].stream == *stream && self.log[at].revision == first.revision + i as u64
        });
        if !is_retry {
            return Err(Refusal::DuplicateEventId);
        }
        // The expectation must agree with where the events were written. For `NoStream`
        // the model accepts what a backend can know from the stream's current state:
        // the first event at revision 0 or at or below the soft-delete point (the
        // backend cannot tell which delete came first; see `rules::plan_append`).
        let agrees = match expected {
            ExpectedRevision::Any | ExpectedRevision::StreamExists => true,
            ExpectedRevision::Exact(n) => u128::from(n) + 1 == u128::from(first.revision),
            ExpectedRevision::NoStream => first.revision == 0 || first.revision <= s.deleted_before,
        };
        if !agrees {
            return Err(wrong());
        }
        Ok(PartPlan::Stored(indexes))
    }

    /// Reads a stream: the indexes (into [`Model::log`]) of the events returned.
    pub fn read_stream(
        &self,
        stream: &StreamName,
        from: Option<u64>,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<usize>, Refusal> {
        let Some(s) = self.streams.get(stream) else {
            return Err(Refusal::StreamNotFound);
        };
        if s.tombstoned {
            return Err(Refusal::StreamTombstoned);
        }
        if s.visible_last().is_none() {
            return Err(Refusal::StreamNotFound);
        }
        let mut out: Vec<usize> = (0..self.log.len())
            .filter(|&i| self.log[i].stream == *stream && s.visible(self.log[i].revision))
            .collect();
        match direction {
            Direction::Forwards => {
                out.retain(|&i| from.is_none_or(|f| self.log[i].revision >= f));
            }
            Direction::Backwards => {
                out.retain(|&i| from.is_none_or(|f| self.log[i].revision <= f));
                out.reverse();
            }
        }
        out.truncate(max_count);
        Ok(out)
    }

    /// Reads `$all` from log index `from` (inclusive; `from` may be the log's length,
    /// just past the end).
    pub fn read_all(
        &self,
        from: Option<usize>,
        direction: Direction,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<Vec<usize>, Refusal> {
        if let Some(r) = filter_error(filter) {
            return Err(r);
        }
        let mut out: Vec<usize> = (0..self.log.len())
            .filter(|&i| passes(filter, &self.log[i]))
            .collect();
        match direction {
            Direction::Forwards => out.retain(|&i| from.is_none_or(|f| i >= f)),
            Direction::Backwards => {
                out.retain(|&i| from.is_none_or(|f| i <= f));
                out.reverse();
            }
        }
        out.truncate(max_count);
        Ok(out)
    }

    /// Reads a category (`read_all` with the category set).
    pub fn read_category(
        &self,
        category: &str,
        from: Option<usize>,
        direction: Direction,
        max_count: usize,
        group: Option<ConsumerGroup>,
    ) -> Result<Vec<usize>, Refusal> {
        let filter = EventFilter {
            category: Some(category.to_owned()),
            consumer_group: group,
            ..EventFilter::default()
        };
        self.read_all(from, direction, max_count, &filter)
    }

    /// Soft-deletes (`tombstone == false`) or tombstones a stream.
    pub fn delete(
        &mut self,
        stream: &StreamName,
        expected: ExpectedRevision,
        tombstone: bool,
    ) -> Result<(), Refusal> {
        let s = self.streams.entry(stream.clone()).or_default();
        if s.tombstoned {
            return Err(Refusal::StreamTombstoned);
        }
        if !expected_matches(expected, s.current()) {
            return Err(Refusal::WrongExpectedRevision {
                expected,
                actual: s.current(),
            });
        }
        if tombstone {
            s.tombstoned = true;
        } else {
            s.deleted_before = s.last.map_or(0, |l| l + 1);
        }
        Ok(())
    }

    /// A stream's metadata.
    pub fn metadata(&self, stream: &StreamName) -> Result<Option<StreamMetadata>, Refusal> {
        match self.streams.get(stream) {
            Some(s) if s.tombstoned => Err(Refusal::StreamTombstoned),
            Some(s) => Ok(s.metadata.clone()),
            None => Ok(None),
        }
    }

    /// Replaces a stream's metadata.
    pub fn set_metadata(
        &mut self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<(), Refusal> {
        let s = self.streams.entry(stream.clone()).or_default();
        if s.tombstoned {
            return Err(Refusal::StreamTombstoned);
        }
        s.metadata = Some(metadata);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JSON;

    fn s(n: &str) -> StreamName {
        StreamName::new(n).expect("valid name")
    }

    #[test]
    fn model_retry_and_delete() {
        let mut m = Model::new();
        let a = NewEvent::raw("A", "{}", JSON);
        let first = m
            .append(
                &s("x-1"),
                ExpectedRevision::NoStream,
                std::slice::from_ref(&a),
            )
            .expect("append");
        assert!(first.wrote);
        let again = m
            .append(
                &s("x-1"),
                ExpectedRevision::NoStream,
                std::slice::from_ref(&a),
            )
            .expect("retry");
        assert!(!again.wrote);
        assert_eq!(again.last_index, first.last_index);
        m.delete(&s("x-1"), ExpectedRevision::Exact(0), false)
            .expect("delete");
        assert_eq!(
            m.read_stream(&s("x-1"), None, Direction::Forwards, usize::MAX),
            Err(Refusal::StreamNotFound)
        );
        let b = NewEvent::raw("B", "{}", JSON);
        let r = m
            .append(&s("x-1"), ExpectedRevision::NoStream, &[b])
            .expect("append after delete");
        assert_eq!(r.next_expected_revision, 1);
    }
}
