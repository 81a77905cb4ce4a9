//! Domain events: your event enum, with a stable type name and a schema version per
//! variant, encoded to [`NewEvent`] and decoded from [`RecordedEvent`].
//!
//! Derive it for a serde enum (feature `derive`, on by default). Each variant is one
//! event type, named after the variant unless `#[event(name = "...")]` says otherwise,
//! at schema version 1 unless `#[event(version = N)]` says otherwise. The data stored
//! is the variant's content (`{"cents": 5}`, not `{"Deposited": {"cents": 5}}`); the
//! schema version travels in the event's metadata under [`SCHEMA_VERSION`].
//!
//! ```
//! use foldstore_core::{DomainEvent, DecodeError, SCHEMA_VERSION};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize, DomainEvent)]
//! enum AccountEvent {
//!     Opened { #[event(tag = "account")] id: String },
//!     #[event(name = "MoneyDeposited", version = 2)]
//!     Deposited { #[event(tag = "account")] id: String, cents: u64 },
//!     Closed,
//! }
//!
//! let event = AccountEvent::Deposited { id: "7".into(), cents: 5 };
//! let new = event.to_new_event().unwrap();
//! assert_eq!(new.event_type, "MoneyDeposited");
//! assert_eq!(&new.data[..], br#"{"id":"7","cents":5}"#);
//! assert_eq!(new.metadata.get(SCHEMA_VERSION).unwrap(), 2);
//! assert_eq!(new.tags, ["account:7"]);
//!
//! let back = AccountEvent::decode_data("MoneyDeposited", &new.data).unwrap();
//! assert_eq!(back, event);
//! assert!(matches!(
//!     AccountEvent::decode_data("Renamed", b"{}"),
//!     Err(DecodeError::UnknownType { .. })
//! ));
//! ```
//!
//! The derive refuses serde attributes that would change how variants are named
//! (`rename`, `rename_all`, `tag`, `untagged`...): name types with `#[event(name)]`.
//!
//! ```compile_fail
//! #[derive(serde::Serialize, serde::Deserialize, foldstore_core::DomainEvent)]
//! #[serde(rename_all = "snake_case")] // error: keep serde's default representation
//! enum Ev { Opened }
//! ```
//!
//! Two variants may not share a type name:
//!
//! ```compile_fail
//! #[derive(serde::Serialize, serde::Deserialize, foldstore_core::DomainEvent)]
//! enum Ev { Opened, #[event(name = "Opened")] Reopened }
//! ```
//! Stored events of an older version are brought up to date by [`crate::upcast`]
//! before they are decoded.

use crate::{JSON, Metadata, NewEvent, RecordedEvent};

/// The metadata key holding an event's schema version (a JSON number). An event
/// without it is at version 1.
pub const SCHEMA_VERSION: &str = "schema_version";

/// An application's event type: usually an enum with `#[derive(DomainEvent)]`.
///
/// Implement it by hand when the derive does not fit: the required methods say which
/// type and version each value is and how its data is encoded.
pub trait DomainEvent: Sized {
    /// The stable type name of this event, stored as [`NewEvent::event_type`].
    fn event_type(&self) -> &'static str;

    /// The schema version this code writes for this event's type.
    fn schema_version(&self) -> u32;

    /// Every type name this enum decodes, with the schema version the code expects.
    fn event_types() -> &'static [(&'static str, u32)];

    /// The event's tags, for Dynamic Consistency Boundary queries (see [`crate::dcb`]).
    fn tags(&self) -> Vec<String> {
        Vec::new()
    }

    /// The event's data, JSON.
    fn encode_data(&self) -> Result<Vec<u8>, serde_json::Error>;

    /// Decodes data of `event_type` at the current schema version.
    fn decode_data(event_type: &str, data: &[u8]) -> Result<Self, DecodeError>;

    /// The schema version the code expects for `event_type`, if it knows the type.
    fn current_version(event_type: &str) -> Option<u32> {
        Self::event_types()
            .iter()
            .find(|(name, _)| *name == event_type)
            .map(|(_, v)| *v)
    }

    /// The event as a [`NewEvent`]: type, JSON data, [`SCHEMA_VERSION`] in the
    /// metadata, tags. The id is a fresh UUIDv7; the command handler sets ids and
    /// correlation metadata itself.
    fn to_new_event(&self) -> Result<NewEvent, EncodeError> {
        let data = self.encode_data().map_err(|source| EncodeError {
            event_type: self.event_type(),
            source,
        })?;
        Ok(NewEvent::raw(self.event_type(), data, JSON)
            .with_metadata(Metadata::new().with(SCHEMA_VERSION, self.schema_version()))
            .with_tags(self.tags()))
    }

    /// Decodes a stored event whose schema version is the current one. Events of an
    /// older version need an upcaster: use [`crate::upcast::Upcasters::decode`].
    fn from_recorded(event: &RecordedEvent) -> Result<Self, DecodeError> {
        crate::upcast::Upcasters::new().decode(event)
    }
}

/// The schema version stored in an event's metadata (1 when absent).
pub fn stored_version(event_type: &str, metadata: &Metadata) -> Result<u32, DecodeError> {
    // Fast path: most metadata is small and parsing it is the main cost of a read.
    if !metadata.as_str().contains(SCHEMA_VERSION) {
        return Ok(1);
    }
    match metadata.get(SCHEMA_VERSION) {
        None => Ok(1),
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| DecodeError::InvalidVersion {
                event_type: event_type.to_owned(),
                value: v.to_string(),
            }),
    }
}

/// An event that could not be serialized.
#[derive(Debug, thiserror::Error)]
#[error(
    "event {event_type} could not be serialized to JSON: {source}; check its Serialize implementation"
)]
pub struct EncodeError {
    /// The event's type.
    pub event_type: &'static str,
    /// The serializer's error.
    #[source]
    pub source: serde_json::Error,
}

/// Why a stored event could not be turned into a domain event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The event type is not one of the enum's. Callers that read streams holding
    /// other events may skip these (see [`DecodeError::is_unknown_type`]).
    #[error(
        "event type {event_type:?} is not one this code knows: add a variant for it, rename it with an upcaster, or skip unknown types"
    )]
    UnknownType {
        /// The stored type.
        event_type: String,
    },
    /// The event's content type is not JSON.
    #[error("event {event_type} has content type {content_type:?}; domain events are JSON")]
    NotJson {
        /// The stored type.
        event_type: String,
        /// Its content type.
        content_type: String,
    },
    /// The stored schema version is not the one the code expects, and no upcaster
    /// brings it there.
    #[error(
        "event {event_type} is stored at schema version {stored} but the code reads version {current}: {hint}",
        hint = if stored < current { "register an upcaster for the missing versions" } else { "this event was written by newer code; upgrade" }
    )]
    VersionMismatch {
        /// The type (after upcasting).
        event_type: String,
        /// The version reached.
        stored: u32,
        /// The version the code expects.
        current: u32,
    },
    /// The metadata's schema version was not a number.
    #[error(
        "event {event_type} has schema version {value} in its metadata; it must be a positive integer"
    )]
    InvalidVersion {
        /// The stored type.
        event_type: String,
        /// The stored value.
        value: String,
    },
    /// The data did not match the variant.
    #[error(
        "event {event_type} (schema version {version}) does not decode: {source}; if its shape changed, raise its version and register an upcaster"
    )]
    Data {
        /// The type.
        event_type: String,
        /// The version.
        version: u32,
        /// The deserializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// An upcaster failed.
    #[error("upcasting event {event_type} from schema version {from_version} failed: {message}")]
    Upcast {
        /// The type being upcast.
        event_type: String,
        /// The version it was at.
        from_version: u32,
        /// What the upcaster said.
        message: String,
    },
}

impl DecodeError {
    /// Whether the event's type is unknown to the code (safe to skip in a reader
    /// that only cares about some types).
    pub fn is_unknown_type(&self) -> bool {
        matches!(self, DecodeError::UnknownType { .. })
    }
}

#[doc(hidden)]
pub mod __private {
    //! Used by `#[derive(DomainEvent)]`; not a public API.
    use serde::{Serialize, de::DeserializeOwned};

    pub use serde_json::Error as JsonError;

    use super::DecodeError;

    /// Serializes `value` (an externally tagged enum) and keeps only the variant's
    /// content: `{"Name":{..}}` becomes `{..}`, a unit variant `"Name"` becomes `null`.
    pub fn encode_variant<T: Serialize>(value: &T, serde_name: &str) -> Result<Vec<u8>, JsonError> {
        let mut bytes = serde_json::to_vec(value)?;
        let unit = format!("\"{serde_name}\"");
        if bytes == unit.as_bytes() {
            return Ok(b"null".to_vec());
        }
        let prefix = format!("{{\"{serde_name}\":");
        if bytes.starts_with(prefix.as_bytes()) && bytes.ends_with(b"}") {
            bytes.truncate(bytes.len() - 1);
            bytes.drain(..prefix.len());
            return Ok(bytes);
        }
        Err(<JsonError as serde::ser::Error>::custom(format!(
            "variant {serde_name} did not serialize as {prefix}...}}: DomainEvent needs serde's externally tagged enum representation"
        )))
    }

    /// Decodes a variant's content by wrapping it as `{"Name": data}`.
    pub fn decode_variant<T: DeserializeOwned>(
        serde_name: &str,
        event_type: &str,
        version: u32,
        data: &[u8],
    ) -> Result<T, DecodeError> {
        let mut buf = Vec::with_capacity(data.len() + serde_name.len() + 5);
        buf.extend_from_slice(b"{\"");
        buf.extend_from_slice(serde_name.as_bytes());
        buf.extend_from_slice(b"\":");
        buf.extend_from_slice(data);
        buf.push(b'}');
        serde_json::from_slice(&buf).map_err(|source| DecodeError::Data {
            event_type: event_type.to_owned(),
            version,
            source,
        })
    }
}
