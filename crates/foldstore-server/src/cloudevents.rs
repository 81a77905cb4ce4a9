//! CloudEvents 1.0 batches as appends: `POST /streams/{stream}` with
//! `Content-Type: application/cloudevents-batch+json` and a JSON array of events in
//! the CloudEvents JSON format (`id`, `source`, `type`, `specversion`, and `data` or
//! `data_base64`; optional `datacontenttype`, `dataschema`, `subject`, `time` and
//! extension attributes).
//!
//! Mapping, so that producers that speak CloudEvents need no glue and retries stay
//! idempotent:
//! - `id` becomes the event id when it is a UUID; otherwise the id is the UUIDv5 of
//!   `source` and `id` (in [`NAMESPACE`]), so a retried batch carries the same ids
//!   and is stored once;
//! - `type` becomes the event type; `data` (JSON) or `data_base64` (bytes, with
//!   `datacontenttype` as the content type) the data;
//! - the other attributes go into the event's metadata under `cloudevents`.
//!
//! The expected revision comes from the `expected_revision` query parameter (`any`
//! when absent). A JSON append carries it in its body; the query may repeat it only
//! with the same value (a generic client may put it in every URL), and a different
//! value is a 400 `conflicting_parameters`, never silently ignored. A batch is checked whole before anything is written: a wrong
//! `specversion` or a missing attribute is a 400 `invalid_cloudevent` naming the
//! event and the attribute.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use foldstore_core::rules::is_json;
use foldstore_core::{ExpectedRevision, Metadata, NewEvent};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{ApiError, expected_json};
use crate::extract::{JsonBody, body_bytes, parse_json, query_pairs};
use crate::wire::{AppendBody, parse_expected};

/// The media type of a CloudEvents batch.
pub(crate) const BATCH: &str = "application/cloudevents-batch+json";

/// The namespace of the UUIDv5 ids made from `source` and `id`.
pub(crate) const NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_0c3e_5b8a_4e0f_9a57_2c1e_7d4b_f0a1);

/// The stable code of an invalid CloudEvent.
const INVALID: &str = "invalid_cloudevent";

/// An append's input: a JSON append body or a CloudEvents batch.
pub(crate) struct AppendInput {
    pub(crate) expected: ExpectedRevision,
    pub(crate) events: Vec<NewEvent>,
}

fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

impl<S: Send + Sync> FromRequest<S> for AppendInput {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = crate::extract::content_type(req.headers())?.to_owned();
        let in_query = expected_from_query(req.uri().query())?;
        if !essence(&content_type).eq_ignore_ascii_case(BATCH) {
            if !crate::extract::is_json(&content_type) {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!(
                        "the body's content type is {content_type:?}: send `Content-Type: application/json` (an append) or `{BATCH}` (a CloudEvents batch)"
                    ),
                ));
            }
            let JsonBody(body) = JsonBody::<AppendBody>::from_request(req, state).await?;
            let (expected, events) = body.into_parts()?;
            if let Some(queried) = in_query
                && queried != expected
            {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "conflicting_parameters",
                    format!(
                        "expected_revision is {} in the body but {} in the query: give it once, in the body",
                        expected_json(expected),
                        expected_json(queried)
                    ),
                ));
            }
            return Ok(AppendInput { expected, events });
        }
        let expected = in_query.unwrap_or(ExpectedRevision::Any);
        let bytes = body_bytes(req, state).await?;
        let batch: Vec<Value> = parse_json(&bytes)
            .map_err(|_| invalid_batch("the body must be a JSON array of CloudEvents"))?;
        let events = batch
            .into_iter()
            .enumerate()
            .map(|(index, value)| to_new_event(index, value))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AppendInput { expected, events })
    }
}

fn invalid_batch(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, INVALID, detail)
}

/// `expected_revision` from the query string, if given (once: see
/// [`crate::extract::query_pairs`]); the only parameter an append takes.
fn expected_from_query(query: Option<&str>) -> Result<Option<ExpectedRevision>, ApiError> {
    let mut expected = None;
    for (key, value) in query_pairs(query)? {
        match key.as_str() {
            "expected_revision" => expected = Some(parse_expected(&value)?),
            other => {
                return Err(ApiError::invalid_query(format!(
                    "unknown query parameter {other:?}: an append takes only expected_revision"
                )));
            }
        }
    }
    Ok(expected)
}

/// A required string attribute, non-empty.
fn required(object: &mut Map<String, Value>, index: usize, name: &str) -> Result<String, ApiError> {
    match object.remove(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(invalid_batch(format!(
            "event {index}: `{name}` is empty: CloudEvents requires a non-empty {name}"
        ))),
        Some(_) => Err(invalid_batch(format!(
            "event {index}: `{name}` must be a string"
        ))),
        None => Err(invalid_batch(format!(
            "event {index}: `{name}` is missing: CloudEvents 1.0 requires id, source, specversion and type"
        ))),
    }
}

/// An optional string attribute.
fn optional(
    object: &mut Map<String, Value>,
    index: usize,
    name: &str,
) -> Result<Option<String>, ApiError> {
    match object.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid_batch(format!(
            "event {index}: `{name}` must be a string"
        ))),
    }
}

/// The event id of a CloudEvent: its `id` when that is a UUID, else the UUIDv5 of
/// `source` and `id`.
pub(crate) fn event_id(source: &str, id: &str) -> Uuid {
    Uuid::parse_str(id).unwrap_or_else(|_| {
        // Length-prefixed, so that ("a", "bc") and ("ab", "c") differ.
        let name = format!("{}:{source}{id}", source.len());
        Uuid::new_v5(&NAMESPACE, name.as_bytes())
    })
}

fn to_new_event(index: usize, value: Value) -> Result<NewEvent, ApiError> {
    let Value::Object(mut object) = value else {
        return Err(invalid_batch(format!(
            "event {index} is not a JSON object: a batch is an array of CloudEvents"
        )));
    };
    let specversion = required(&mut object, index, "specversion")?;
    if specversion != "1.0" {
        return Err(invalid_batch(format!(
            "event {index}: specversion {specversion:?} is not supported: send \"1.0\""
        )));
    }
    let id = required(&mut object, index, "id")?;
    let source = required(&mut object, index, "source")?;
    let event_type = required(&mut object, index, "type")?;
    let datacontenttype = optional(&mut object, index, "datacontenttype")?;
    let subject = optional(&mut object, index, "subject")?;
    let time = optional(&mut object, index, "time")?;
    if let Some(t) = &time
        && chrono::DateTime::parse_from_rfc3339(t).is_err()
    {
        return Err(invalid_batch(format!(
            "event {index}: time {t:?} is not an RFC 3339 timestamp (such as 2026-01-02T03:04:05Z)"
        )));
    }
    let data = object.remove("data");
    let data_base64 = object.remove("data_base64");
    let (bytes, content_type) = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err(invalid_batch(format!(
                "event {index}: has both data and data_base64: send one"
            )));
        }
        (None, Some(Value::String(text))) => {
            let bytes = BASE64.decode(text.as_bytes()).map_err(|e| {
                invalid_batch(format!(
                    "event {index}: data_base64 is not valid base64: {e}"
                ))
            })?;
            let content_type = datacontenttype
                .clone()
                .unwrap_or_else(|| "application/octet-stream".to_owned());
            (bytes, content_type)
        }
        (None, Some(_)) => {
            return Err(invalid_batch(format!(
                "event {index}: data_base64 must be a base64 string"
            )));
        }
        (data, None) => {
            let data = data.unwrap_or(Value::Null);
            match datacontenttype.as_deref() {
                None => (json_bytes(&data), foldstore_core::JSON.to_owned()),
                Some(ct) if is_json(ct) => (json_bytes(&data), ct.to_owned()),
                Some(ct) => match data {
                    Value::String(text) => (text.into_bytes(), ct.to_owned()),
                    _ => {
                        return Err(invalid_batch(format!(
                            "event {index}: data of datacontenttype {ct:?} must be a string; send binary data as data_base64"
                        )));
                    }
                },
            }
        }
    };
    let mut ce = Map::new();
    ce.insert("id".into(), Value::String(id.clone()));
    ce.insert("source".into(), Value::String(source.clone()));
    ce.insert("specversion".into(), Value::String(specversion));
    if let Some(subject) = subject {
        ce.insert("subject".into(), Value::String(subject));
    }
    if let Some(time) = time {
        ce.insert("time".into(), Value::String(time));
    }
    if let Some(ct) = datacontenttype {
        ce.insert("datacontenttype".into(), Value::String(ct));
    }
    // `dataschema` and extension attributes, as given.
    for (key, value) in object {
        ce.insert(key, value);
    }
    let mut metadata = Map::new();
    metadata.insert("cloudevents".into(), Value::Object(ce));
    Ok(NewEvent::raw(event_type, bytes, content_type)
        .with_id(event_id(&source, &id))
        .with_metadata(Metadata::from_map(metadata)))
}

fn json_bytes(data: &Value) -> Vec<u8> {
    serde_json::to_vec(data).unwrap_or_else(|_| b"null".to_vec())
}

/// One CloudEvent of a batch (documentation of the JSON format, for OpenAPI).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct CloudEventDoc {
    /// Unique per source; a UUID is used as the event id, anything else is hashed
    /// with `source` into a UUIDv5.
    id: String,
    /// Who produced the event (a URI reference).
    source: String,
    /// The event type.
    #[serde(rename = "type")]
    event_type: String,
    /// Must be `1.0`.
    specversion: String,
    /// The data's media type; JSON when absent.
    datacontenttype: Option<String>,
    /// The payload: JSON, or a string for other content types.
    data: Option<serde_json::Value>,
    /// A binary payload, base64; not with `data`.
    data_base64: Option<String>,
    /// What the event is about, within the source.
    subject: Option<String>,
    /// When it happened, RFC 3339.
    time: Option<String>,
}
