//! The append and visibility rules, as pure functions every backend calls, so that
//! every backend decides the same way.
//!
//! A backend gathers the facts (the stream's [`StreamState`], which of the new event
//! ids are already stored) and asks [`plan_append`] what to do.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    let size: usize = events.iter().map(NewEvent::size).sum();
    if size > limits.max_append_bytes {
        return Err(AppendError::TooLarge {
            size,
            limit: limits.max_append_bytes,
        });
    }
    let mut ids = HashSet::with_capacity(events.len());
    for (index, e) in events.iter().enumerate() {
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
