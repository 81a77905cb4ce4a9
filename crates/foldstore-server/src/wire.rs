//! The JSON shapes of requests and answers, and their conversion to the core's types.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use foldstore_core::rules::is_json;
use foldstore_core::{
    AppendResult, ExpectedRevision, JSON, Metadata, NewEvent, Position, RecordedEvent,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::error::ApiError;

/// `expected_revision` in a body: `"any"`, `"no_stream"`, `"stream_exists"` or a
/// revision.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum WireExpected {
    Named(NamedExpected),
    Exact(u64),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum NamedExpected {
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendBody {
    expected_revision: WireExpected,
    events: Vec<EventBody>,
}

/// One event of an append.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    #[serde(default)]
    id: Option<Uuid>,
    #[serde(rename = "type")]
    event_type: String,
    data: Value,
    /// The data's media type; JSON when absent. Other types carry `data` as base64.
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
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
#[derive(Debug, Serialize)]
pub(crate) struct AppendAnswer {
    next_expected_revision: u64,
    position: Position,
}

impl From<AppendResult> for AppendAnswer {
    fn from(r: AppendResult) -> Self {
        Self {
            next_expected_revision: r.next_expected_revision,
            position: r.position,
        }
    }
}

/// A recorded event as JSON: `data` is JSON when the content type is JSON, else a
/// base64 string beside `content_type`.
pub(crate) fn event_json(e: &RecordedEvent) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), json!(e.id));
    object.insert("stream".into(), json!(e.stream.as_str()));
    object.insert("type".into(), json!(e.event_type));
    object.insert("revision".into(), json!(e.revision));
    object.insert("position".into(), json!(e.position.to_string()));
    let json_data = if is_json(&e.content_type) {
        serde_json::from_slice::<Value>(&e.data).ok()
    } else {
        None
    };
    match json_data {
        Some(data) => {
            object.insert("data".into(), data);
        }
        None => {
            object.insert("data".into(), json!(BASE64.encode(&e.data)));
            object.insert("content_type".into(), json!(e.content_type));
        }
    }
    object.insert("metadata".into(), Value::Object(e.metadata.to_map()));
    object.insert("recorded_at".into(), json!(e.recorded_at));
    Value::Object(object)
}

/// A page of events; `next` is the `from` of the following page, absent at the end.
pub(crate) fn page_json(events: &[RecordedEvent], next: Option<Value>) -> Value {
    let mut object = Map::new();
    object.insert(
        "events".into(),
        Value::Array(events.iter().map(event_json).collect()),
    );
    if let Some(next) = next {
        object.insert("next".into(), next);
    }
    Value::Object(object)
}
