//! Events: what an append carries and what a read returns.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Metadata, Position, StreamName};

/// The longest event type, in UTF-8 bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 200;

/// The content type of JSON event data, the default.
pub const JSON: &str = "application/json";

/// An event to append.
///
/// ```
/// use foldstore_core::NewEvent;
///
/// let event = NewEvent::json("Deposited", &serde_json::json!({"amount": 10})).unwrap();
/// assert_eq!(event.event_type, "Deposited");
/// assert_eq!(event.content_type, "application/json");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// The event's id, unique in the whole store. Generated (time-ordered UUIDv7) by the
    /// constructors; set it yourself to make a retried append idempotent.
    pub id: Uuid,
    /// The event type, such as `Deposited`: non-empty, at most 200 bytes.
    pub event_type: String,
    /// The payload.
    pub data: Bytes,
    /// The payload's media type; [`JSON`] by default, in which case `data` must be JSON.
    pub content_type: String,
    /// A JSON object: correlation and causation ids and user keys.
    pub metadata: Metadata,
    /// Tags for Dynamic Consistency Boundary queries (see [`crate::dcb`]), such as
    /// `account:42`. Opaque to the store; none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl NewEvent {
    /// An event of `event_type` whose data is the JSON serialization of `data`.
    pub fn json<T: Serialize + ?Sized>(
        event_type: impl Into<String>,
        data: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::raw(event_type, serde_json::to_vec(data)?, JSON))
    }

    /// An event with raw data of the given content type.
    pub fn raw(
        event_type: impl Into<String>,
        data: impl Into<Bytes>,
        content_type: impl Into<String>,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            data: data.into(),
            content_type: content_type.into(),
            metadata: Metadata::new(),
            tags: Vec::new(),
        }
    }

    /// Sets the id (for idempotent retries).
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the tags (see [`crate::dcb`]).
    pub fn with_tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Bytes this event counts against the append size limit: data plus metadata.
    pub fn size(&self) -> usize {
        self.data.len() + self.metadata.as_str().len()
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// The id given on append.
    pub id: Uuid,
    /// The stream the event belongs to.
    pub stream: StreamName,
    /// The event type.
    pub event_type: String,
    /// 0-based, gapless within the stream.
    pub revision: u64,
    /// Place in the global order.
    pub position: Position,
    /// The payload.
    pub data: Bytes,
    /// The payload's media type.
    pub content_type: String,
    /// A JSON object.
    pub metadata: Metadata,
    /// When the store committed the event.
    pub recorded_at: DateTime<Utc>,
    /// The tags given on append, in their order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl RecordedEvent {
    /// The bytes of data and metadata, counted as [`NewEvent::size`] counts them.
    pub fn size(&self) -> usize {
        self.data.len() + self.metadata.as_str().len()
    }

    /// Deserializes JSON data.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.data)
    }
}
