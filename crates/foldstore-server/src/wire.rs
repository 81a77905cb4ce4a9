//! The JSON shapes of requests and answers, and their conversion to the core's types.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use foldstore_core::rules::is_json;
use foldstore_core::{
    AppendResult, ExpectedRevision, JSON, Metadata, NewEvent, Position, RecordedEvent,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

/// `expected_revision` in a body: `"any"`, `"no_stream"`, `"stream_exists"` or a
/// revision.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum WireExpected {
    Named(NamedExpected),
    Exact(u64),
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NamedExpected {
    Any,
    NoStream,
    StreamExists,
}

impl From<WireExpected> for ExpectedRevision {
    fn from(w: WireExpected) -> Self {
        match w {
            WireExpected::Named(NamedExpected::Any) => ExpectedRevision::Any,
            WireExpected::Named(NamedExpected::NoStream) => ExpectedRevision::NoStream,
            WireExpected::Named(NamedExpected::StreamExists) => ExpectedRevision::StreamExists,
            WireExpected::Exact(n) => ExpectedRevision::Exact(n),
        }
    }
}

/// Parses `expected_revision` given as a query parameter.
pub(crate) fn parse_expected(text: &str) -> Result<ExpectedRevision, ApiError> {
    match text {
        "any" => Ok(ExpectedRevision::Any),
        "no_stream" => Ok(ExpectedRevision::NoStream),
        "stream_exists" => Ok(ExpectedRevision::StreamExists),
        n => n.parse().map(ExpectedRevision::Exact).map_err(|_| {
            ApiError::invalid_query(format!(
                "expected_revision={n:?}: use any, no_stream, stream_exists or a revision number"
            ))
        }),
    }
}

/// The body of `POST /streams/{stream}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendBody {
    expected_revision: WireExpected,
    events: Vec<EventBody>,
}

/// One event of an append.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventBody {
    /// The event id; a random one when absent. Retrying with the same ids is idempotent.
    #[serde(default)]
    id: Option<Uuid>,
    #[serde(rename = "type")]
    event_type: String,
    /// Any JSON, or a base64 string when `content_type` is not JSON.
    data: Value,
    /// The data's media type; JSON when absent. Other types carry `data` as base64.
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Map<String, Value>>,
}

impl AppendBody {
    /// The expected revision and the events, or `invalid_event` naming the event.
    pub(crate) fn into_parts(self) -> Result<(ExpectedRevision, Vec<NewEvent>), ApiError> {
        let events = self
            .events
            .into_iter()
            .enumerate()
            .map(|(index, e)| e.into_new_event(index))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((self.expected_revision.into(), events))
    }
}

impl EventBody {
    fn into_new_event(self, index: usize) -> Result<NewEvent, ApiError> {
        let content_type = self.content_type.unwrap_or_else(|| JSON.to_owned());
        let data = if is_json(&content_type) {
            serde_json::to_vec(&self.data)
                .map_err(|e| ApiError::invalid_event(format!("event {index}: data: {e}")))?
        } else {
            let Value::String(text) = &self.data else {
                return Err(ApiError::invalid_event(format!(
                    "event {index}: data of content type {content_type:?} must be a base64 string"
                )));
            };
            BASE64.decode(text).map_err(|e| {
                ApiError::invalid_event(format!("event {index}: data is not valid base64: {e}"))
            })?
        };
        let mut event = NewEvent::raw(self.event_type, data, content_type);
        if let Some(id) = self.id {
            event = event.with_id(id);
        }
        if let Some(map) = self.metadata {
            event = event.with_metadata(Metadata::from_map(map));
        }
        Ok(event)
    }
}

/// The answer to an append.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AppendAnswer {
    /// The stream's revision after the append: the `expected_revision` of the next.
    next_expected_revision: u64,
    /// The position of the last event appended, as a decimal string.
    #[schema(value_type = String)]
    position: Position,
}

/// A recorded event, as reads and subscriptions send it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WireEvent {
    id: Uuid,
    stream: String,
    #[serde(rename = "type")]
    event_type: String,
    /// 0-based, gapless within the stream.
    revision: u64,
    /// The place in `$all`, as a decimal string.
    position: String,
    /// JSON when the content type is JSON, else a base64 string.
    data: Value,
    /// The data's media type, present only when it is not JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[schema(value_type = Object)]
    metadata: Map<String, Value>,
    recorded_at: chrono::DateTime<chrono::Utc>,
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WirePage {
    events: Vec<WireEvent>,
    /// The `from` of the following page (a revision for streams, a position string
    /// for `$all` and categories); absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<Value>,
}

impl From<AppendResult> for AppendAnswer {
    fn from(r: AppendResult) -> Self {
        Self {
            next_expected_revision: r.next_expected_revision,
            position: r.position,
        }
    }
}

/// A recorded event as sent: `data` is JSON when the content type is JSON, else a
/// base64 string beside `content_type`.
pub(crate) fn wire_event(e: &RecordedEvent) -> WireEvent {
    let json_data = if is_json(&e.content_type) {
        serde_json::from_slice::<Value>(&e.data).ok()
    } else {
        None
    };
    let (data, content_type) = match json_data {
        Some(data) => (data, None),
        None => (json!(BASE64.encode(&e.data)), Some(e.content_type.clone())),
    };
    WireEvent {
        id: e.id,
        stream: e.stream.as_str().to_owned(),
        event_type: e.event_type.clone(),
        revision: e.revision,
        position: e.position.to_string(),
        data,
        content_type,
        metadata: e.metadata.to_map(),
        recorded_at: e.recorded_at,
    }
}

/// A recorded event as JSON (see [`wire_event`]).
pub(crate) fn event_json(e: &RecordedEvent) -> Value {
    serde_json::to_value(wire_event(e)).unwrap_or(Value::Null)
}

#[cfg(test)]
impl WirePage {
    /// The `serde` form of a page, which [`crate::page_json`] writes by hand.
    pub(crate) fn of(events: &[RecordedEvent], next: Option<Value>) -> Self {
        Self {
            events: events.iter().map(wire_event).collect(),
            next,
        }
    }
}
