//! The append and visibility rules, as pure functions every backend calls, so that
//! every backend decides the same way.
//!
//! A backend gathers the facts (the stream's [`StreamState`], which of the new event
//! ids are already stored) and asks [`plan_append`] what to do.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::transaction::{
    AppendTransaction, StreamAppend, StreamRevision, Tracking, TransactionResult,
    validate_tracking_source,
};
use crate::{
    AppendError, CurrentRevision, DeleteError, ExpectedRevision, InvalidEvent, JSON,
    MAX_EVENT_TYPE_BYTES, NewEvent, Position, StreamName,
};

/// Limits applied to every append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of data plus metadata one append may carry. Default 16 MiB.
    pub max_append_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_append_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Checks the events of an append on their own, before the store is consulted.
///
/// ```
/// use foldstore_core::{Limits, NewEvent, rules::validate_events};
///
/// let ok = NewEvent::json("Opened", &serde_json::json!({})).unwrap();
/// assert!(validate_events(&[ok], &Limits::default()).is_ok());
/// let bad = NewEvent::raw("Opened", "{not json", "application/json");
/// assert!(validate_events(&[bad], &Limits::default()).is_err());
/// ```
pub fn validate_events(events: &[NewEvent], limits: &Limits) -> Result<(), AppendError> {
    if events.is_empty() {
        return Err(AppendError::NoEvents);
    }
    check_events(events, limits)
}

/// Checks a transaction on its own, before the store is consulted: every part carries
/// events (and the transaction carries events or tracking), the events as
/// [`validate_events`] checks one append's (the size limit and event indexes count over
/// all parts, and ids must differ across parts too), each stream is named once, then the
/// condition's tags and the tracking source.
///
/// ```
/// use foldstore_core::transaction::AppendTransaction;
/// use foldstore_core::{AppendError, ExpectedRevision, Limits, NewEvent, StreamName, rules::validate_transaction};
///
/// let s = StreamName::new("cart-1").unwrap();
/// let event = || NewEvent::json("Added", &1).unwrap();
/// let twice = AppendTransaction::new()
///     .stream(s.clone(), ExpectedRevision::Any, vec![event()])
///     .stream(s, ExpectedRevision::Any, vec![event()]);
/// let r = validate_transaction(&twice, &Limits::default());
/// assert!(matches!(r, Err(AppendError::DuplicateStream { .. })));
/// ```
pub fn validate_transaction(tx: &AppendTransaction, limits: &Limits) -> Result<(), AppendError> {
    if tx.parts.is_empty() && tx.tracking.is_none() {
        return Err(AppendError::NoEvents);
    }
    if tx.parts.iter().any(|p| p.events.is_empty()) {
        return Err(AppendError::NoEvents);
    }
    match tx.parts.as_slice() {
        [] => {}
        [one] => check_events(&one.events, limits)?,
        parts => {
            let all: Vec<&NewEvent> = tx.events().collect();
            check_events(&all, limits)?;
            let mut streams = HashSet::with_capacity(parts.len());
            if let Some(twice) = parts.iter().find(|p| !streams.insert(&p.stream)) {
                return Err(AppendError::DuplicateStream {
                    stream: twice.stream.clone(),
                });
            }
        }
    }
    if let Some(c) = &tx.condition {
        c.fail_if_events_match.validate()?;
    }
    if let Some(t) = &tx.tracking {
        validate_tracking_source(&t.source)?;
    }
    Ok(())
}

/// The checks of [`validate_events`] after the count, on events given by reference.
fn check_events<E: std::borrow::Borrow<NewEvent>>(
    events: &[E],
    limits: &Limits,
) -> Result<(), AppendError> {
    let size: usize = events.iter().map(|e| e.borrow().size()).sum();
    if size > limits.max_append_bytes {
        return Err(AppendError::TooLarge {
            size,
            limit: limits.max_append_bytes,
        });
    }
    let mut ids = HashSet::with_capacity(events.len());
    for (index, e) in events.iter().enumerate() {
        let e = e.borrow();
        let invalid = |reason| AppendError::InvalidEvent { index, reason };
        if e.event_type.is_empty() {
            return Err(invalid(InvalidEvent::EmptyType));
        }
        if e.event_type.len() > MAX_EVENT_TYPE_BYTES {
            return Err(invalid(InvalidEvent::TypeTooLong {
                len: e.event_type.len(),
                max: MAX_EVENT_TYPE_BYTES,
            }));
        }
        if e.event_type.chars().any(char::is_control) {
            return Err(invalid(InvalidEvent::TypeControlCharacter));
        }
        if e.content_type.is_empty() {
            return Err(invalid(InvalidEvent::EmptyContentType));
        }
        if is_json(&e.content_type)
            && let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(&e.data)
        {
            return Err(invalid(InvalidEvent::DataNotJson(err.to_string())));
        }
        if !ids.insert(e.id) {
            return Err(invalid(InvalidEvent::DuplicateIdInAppend(e.id)));
        }
        if let Err(tag) = crate::dcb::validate_tags(&e.tags) {
            return Err(invalid(InvalidEvent::Tag(tag)));
        }
    }
    Ok(())
}

/// Whether a content type is JSON (`application/json`, with or without parameters,
/// or `application/*+json`).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case(JSON)
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// What a store knows about one stream, enough to decide an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StreamState {
    /// The revision of the last event ever written, deleted or not.
    pub last_revision: Option<u64>,
    /// Revisions below this were soft-deleted.
    pub deleted_before: u64,
    /// Whether the stream was tombstoned.
    pub tombstoned: bool,
}

impl StreamState {
    /// The revision an append compares its expectation with.
    pub fn current(&self) -> CurrentRevision {
        match self.last_revision {
            Some(last) if last >= self.deleted_before => CurrentRevision::Current(last),
            _ => CurrentRevision::NoStream,
        }
    }

    /// The revision the next event gets.
    pub fn next_revision(&self) -> u64 {
        self.last_revision.map_or(0, |r| r + 1)
    }

    /// Whether reads see the stream.
    pub fn exists(&self) -> bool {
        matches!(self.current(), CurrentRevision::Current(_))
    }
}

/// An already stored event with an id that an append carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredId {
    /// Its stream.
    pub stream: StreamName,
    /// Its revision.
    pub revision: u64,
    /// Its position.
    pub position: Position,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppendResult {
    /// The revision of the last event appended: pass it as `Exact` to the next append.
    pub next_expected_revision: u64,
    /// The position of the last event appended.
    pub position: Position,
}

/// What a backend must do with an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendPlan {
    /// Write the events at revisions `first_revision..`.
    Write {
        /// The revision of the first new event.
        first_revision: u64,
    },
    /// The append is a retry of one already stored: write nothing, answer this.
    AlreadyStored(AppendResult),
}

/// Decides an append: tombstone, idempotency, then expected revision.
///
/// `stored[i]` is the event already stored with the id of `events[i]` (looked up in
/// the store itself, not in a cache of recent writes), or `None`.
///
/// The rules:
/// 1. A tombstoned stream refuses every append.
/// 2. If no id is stored, the expected revision is checked and the events are written.
/// 3. If every id is stored, in this stream, at consecutive revisions in the same order,
///    and the expectation agrees with where they were written, the append is a retry: it
///    returns the first append's result and writes nothing. If the expectation does not
///    agree, it is a wrong expected revision.
/// 4. Any other overlap (some ids stored, or stored elsewhere, or out of order) is
///    [`AppendError::DuplicateEventId`].
pub fn plan_append(
    stream: &StreamName,
    expected: ExpectedRevision,
    state: &StreamState,
    events: &[NewEvent],
    stored: &[Option<StoredId>],
) -> Result<AppendPlan, AppendError> {
    if state.tombstoned {
        return Err(AppendError::StreamTombstoned {
            stream: stream.clone(),
        });
    }
    let Some(first) = stored.iter().flatten().next() else {
        let actual = state.current();
        if !expected.matches(actual) {
            return Err(AppendError::WrongExpectedRevision {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        return Ok(AppendPlan::Write {
            first_revision: state.next_revision(),
        });
    };
    let in_place = |i: usize, s: &Option<StoredId>| {
        s.as_ref()
            .is_some_and(|s| &s.stream == stream && s.revision == first.revision + i as u64)
    };
    if let Some(bad) = stored.iter().enumerate().position(|(i, s)| !in_place(i, s)) {
        // Name a stored id: the offending one when it is stored, else the first.
        let (index, culprit) = match &stored[bad] {
            Some(s) => (bad, s),
            None => (stored.iter().position(Option::is_some).unwrap_or(0), first),
        };
        return Err(AppendError::DuplicateEventId {
            event_id: events.get(index).map(|e| e.id).unwrap_or_default(),
            existing_stream: culprit.stream.clone(),
            existing_revision: culprit.revision,
        });
    }
    let agrees = match expected {
        ExpectedRevision::Any | ExpectedRevision::StreamExists => true,
        ExpectedRevision::Exact(n) => n.checked_add(1) == Some(first.revision),
        ExpectedRevision::NoStream => first.revision == 0 || first.revision <= state.deleted_before,
    };
    if !agrees {
        return Err(AppendError::WrongExpectedRevision {
            stream: stream.clone(),
            expected,
            actual: state.current(),
        });
    }
    let last = stored.last().and_then(Option::as_ref).unwrap_or(first);
    Ok(AppendPlan::AlreadyStored(AppendResult {
        next_expected_revision: last.revision,
        position: last.position,
    }))
}

/// What a backend must do with a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionPlan {
    /// Write each part's events from the revision given for it (one per part, in the
    /// transaction's order), once the tracking and the condition hold.
    Write {
        /// The revision of the first new event of each part.
        first_revisions: Vec<u64>,
    },
    /// The transaction is a retry of one already stored: write nothing, answer this.
    AlreadyStored(TransactionResult),
}

/// Decides a transaction's parts: [`plan_append`] for each part, in order, then:
///
/// 1. the first part that [`plan_append`] refuses refuses the transaction;
/// 2. if every part is already stored, the transaction is a retry: it returns the
///    first result (each part's last revision, the lowest and the highest position of
///    its events) and writes nothing, whatever its tracking and condition;
/// 3. if some parts are stored and others are not, it is
///    [`AppendError::DuplicateEventId`], naming the first stored part's first id;
/// 4. otherwise every part is written ([`TransactionPlan::Write`]), once the tracking
///    ([`check_tracking`]) and the condition hold.
///
/// `states[i]` is the state of part `i`'s stream and `stored[i]` the stored events with
/// the ids of its events, as for [`plan_append`].
///
/// ```
/// use foldstore_core::rules::{StreamState, TransactionPlan, plan_transaction};
/// use foldstore_core::transaction::AppendTransaction;
/// use foldstore_core::{ExpectedRevision, NewEvent, StreamName};
///
/// let tx = AppendTransaction::new()
///     .stream(StreamName::new("a-1").unwrap(), ExpectedRevision::NoStream, vec![NewEvent::json("A", &1).unwrap()])
///     .stream(StreamName::new("b-1").unwrap(), ExpectedRevision::Exact(4), vec![NewEvent::json("B", &2).unwrap()]);
/// let states = [StreamState::default(), StreamState { last_revision: Some(4), ..Default::default() }];
/// let plan = plan_transaction(&tx.parts, &states, &[vec![None], vec![None]]).unwrap();
/// assert_eq!(plan, TransactionPlan::Write { first_revisions: vec![0, 5] });
/// ```
pub fn plan_transaction(
    parts: &[StreamAppend],
    states: &[StreamState],
    stored: &[Vec<Option<StoredId>>],
) -> Result<TransactionPlan, AppendError> {
    let mut first_revisions = Vec::with_capacity(parts.len());
    let mut retried = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let state = states.get(i).copied().unwrap_or_default();
        let ids = stored.get(i).map_or(&[][..], Vec::as_slice);
        match plan_append(&part.stream, part.expected, &state, &part.events, ids)? {
            AppendPlan::Write { first_revision } => first_revisions.push(first_revision),
            AppendPlan::AlreadyStored(result) => retried.push((i, result)),
        }
    }
    if retried.is_empty() {
        return Ok(TransactionPlan::Write { first_revisions });
    }
    if first_revisions.is_empty() {
        let positions = || stored.iter().flatten().flatten().map(|s| s.position);
        return Ok(TransactionPlan::AlreadyStored(TransactionResult {
            streams: parts
                .iter()
                .zip(&retried)
                .map(|(part, (_, result))| StreamRevision {
                    stream: part.stream.clone(),
                    next_expected_revision: result.next_expected_revision,
                })
                .collect(),
            first_position: positions().min(),
            last_position: positions().max(),
        }));
    }
    let (i, _) = retried[0];
    let first = stored
        .get(i)
        .and_then(|ids| ids.first())
        .and_then(Option::as_ref);
    Err(match (parts[i].events.first(), first) {
        (Some(event), Some(first)) => AppendError::DuplicateEventId {
            event_id: event.id,
            existing_stream: first.stream.clone(),
            existing_revision: first.revision,
        },
        // `plan_append` finds a part stored only when its first id is.
        _ => AppendError::Backend(crate::BackendError::new(
            crate::BackendErrorKind::Internal,
            "a part planned as stored has no stored first id",
        )),
    })
}

/// Decides a transaction's tracking: refused with [`AppendError::AlreadyProcessed`]
/// unless `tracking.position` is past the position `stored` for its source.
///
/// ```
/// use foldstore_core::rules::check_tracking;
/// use foldstore_core::transaction::Tracking;
/// use foldstore_core::Position;
///
/// let t = Tracking::new("orders", Position::new(7));
/// assert!(check_tracking(&t, None).is_ok());
/// assert!(check_tracking(&t, Some(Position::new(6))).is_ok());
/// assert!(check_tracking(&t, Some(Position::new(7))).is_err());
/// ```
pub fn check_tracking(tracking: &Tracking, stored: Option<Position>) -> Result<(), AppendError> {
    match stored {
        Some(stored) if tracking.position <= stored => Err(AppendError::AlreadyProcessed {
            source_name: tracking.source.clone(),
            stored,
            position: tracking.position,
        }),
        _ => Ok(()),
    }
}

/// Decides a soft delete or a tombstone: a tombstoned stream refuses both, and the
/// expected revision is checked as for an append.
///
/// ```
/// use foldstore_core::{ExpectedRevision, StreamName, rules::{StreamState, check_delete}};
///
/// let stream = StreamName::new("cart-1").unwrap();
/// let state = StreamState { last_revision: Some(2), ..Default::default() };
/// assert!(check_delete(&stream, ExpectedRevision::Exact(2), &state).is_ok());
/// assert!(check_delete(&stream, ExpectedRevision::NoStream, &state).is_err());
/// ```
pub fn check_delete(
    stream: &StreamName,
    expected: ExpectedRevision,
    state: &StreamState,
) -> Result<(), DeleteError> {
    if state.tombstoned {
        return Err(DeleteError::StreamTombstoned {
            stream: stream.clone(),
        });
    }
    let actual = state.current();
    if !expected.matches(actual) {
        return Err(DeleteError::WrongExpectedRevision {
            stream: stream.clone(),
            expected,
            actual,
        });
    }
    Ok(())
}

/// Stream metadata: limits that reads honour, and free JSON.
///
/// ```
/// use foldstore_core::StreamMetadata;
///
/// let m = StreamMetadata { max_count: Some(100), ..Default::default() };
/// assert_eq!(serde_json::to_value(&m).unwrap()["max_count"], 100);
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamMetadata {
    /// Reads return at most the last `max_count` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
    /// Reads skip events older than this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
    /// Reads skip revisions below this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_before: Option<u64>,
    /// Anything else, for applications.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub custom: serde_json::Map<String, serde_json::Value>,
}

/// Which events of a stream reads see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visibility {
    /// Revisions below this are hidden.
    pub min_revision: u64,
    /// Events recorded before this are hidden.
    pub min_recorded_at: Option<DateTime<Utc>>,
}

impl Visibility {
    /// Combines the soft-delete point with the stream's metadata, as of `now`.
    pub fn of(state: &StreamState, metadata: Option<&StreamMetadata>, now: DateTime<Utc>) -> Self {
        let mut min_revision = state.deleted_before;
        let mut min_recorded_at = None;
        if let Some(m) = metadata {
            if let Some(tb) = m.truncate_before {
                min_revision = min_revision.max(tb);
            }
            if let (Some(max), Some(last)) = (m.max_count, state.last_revision) {
                min_revision = min_revision.max((last + 1).saturating_sub(max));
            }
            if let Some(age) = m.max_age_secs {
                // An age too large for a `TimeDelta` (or reaching before the earliest
                // representable time) hides nothing.
                min_recorded_at = i64::try_from(age)
                    .ok()
                    .and_then(chrono::Duration::try_seconds)
                    .and_then(|age| now.checked_sub_signed(age));
            }
        }
        Self {
            min_revision,
            min_recorded_at,
        }
    }

    /// Whether an event with this revision and time is visible.
    pub fn shows(&self, revision: u64, recorded_at: DateTime<Utc>) -> bool {
        revision >= self.min_revision && self.min_recorded_at.is_none_or(|t| recorded_at >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str) -> StreamName {
        StreamName::new(name).unwrap()
    }

    fn stored(stream: &str, revision: u64) -> Option<StoredId> {
        Some(StoredId {
            stream: s(stream),
            revision,
            position: Position::new(u128::from(revision) + 10),
        })
    }

    fn events(n: usize) -> Vec<NewEvent> {
        (0..n).map(|_| NewEvent::raw("T", "{}", JSON)).collect()
    }

    #[test]
    fn soft_deleted_stream_is_no_stream() {
        let st = StreamState {
            last_revision: Some(4),
            deleted_before: 5,
            tombstoned: false,
        };
        assert_eq!(st.current(), CurrentRevision::NoStream);
        assert_eq!(st.next_revision(), 5);
    }

    #[test]
    fn retry_returns_first_result() {
        let st = StreamState {
            last_revision: Some(2),
            ..Default::default()
        };
        let plan = plan_append(
            &s("a-1"),
            ExpectedRevision::Exact(0),
            &st,
            &events(2),
            &[stored("a-1", 1), stored("a-1", 2)],
        )
        .unwrap();
        assert_eq!(
            plan,
            AppendPlan::AlreadyStored(AppendResult {
                next_expected_revision: 2,
                position: Position::new(12)
            })
        );
    }

    #[test]
    fn partial_overlap_is_an_error() {
        let st = StreamState {
            last_revision: Some(2),
            ..Default::default()
        };
        let err = plan_append(
            &s("a-1"),
            ExpectedRevision::Any,
            &st,
            &events(2),
            &[stored("a-1", 2), None],
        );
        assert!(matches!(err, Err(AppendError::DuplicateEventId { .. })));
    }
}
