//! Event metadata: a JSON object with correlation and causation ids and user keys.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The metadata key holding the correlation id.
pub const CORRELATION_ID: &str = "correlation_id";
/// The metadata key holding the causation id.
pub const CAUSATION_ID: &str = "causation_id";

/// Event metadata: always a JSON object, kept as its serialized text so that reading
/// events never pays for parsing it.
///
/// ```
/// use foldstore_core::Metadata;
/// use uuid::Uuid;
///
/// let correlation = Uuid::now_v7();
/// let m = Metadata::new()
///     .with_correlation_id(correlation)
///     .with("tenant", "acme");
/// assert_eq!(m.correlation_id(), Some(correlation));
/// assert_eq!(m.get("tenant").unwrap(), "acme");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Metadata(Cow<'static, str>);

/// The text of empty metadata, shared rather than allocated: most events have none.
const EMPTY: &str = "{}";

/// Metadata that was not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event metadata must be a JSON object such as {{\"correlation_id\": \"...\"}}: {0}")]
pub struct InvalidMetadata(pub String);

impl Metadata {
    /// Empty metadata: `{}`.
    pub fn new() -> Self {
        Self(Cow::Borrowed(EMPTY))
    }

    /// Metadata from a JSON object.
    pub fn from_map(map: Map<String, Value>) -> Self {
        if map.is_empty() {
            return Self::new();
        }
        Self(Cow::Owned(Value::Object(map).to_string()))
    }

    /// Parses and checks metadata text; it must be a JSON object.
    pub fn from_json(text: &str) -> Result<Self, InvalidMetadata> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(_)) => Ok(Self::from_trusted_str(text)),
            Ok(other) => Err(InvalidMetadata(format!("got {}", kind(&other)))),
            Err(e) => Err(InvalidMetadata(e.to_string())),
        }
    }

    /// Wraps text the store itself wrote and checked on append.
    ///
    /// Backends use this on read; it does not parse.
    pub fn from_trusted_json(text: String) -> Self {
        if text == EMPTY {
            return Self::new();
        }
        Self(Cow::Owned(text))
    }

    /// Like [`Metadata::from_trusted_json`], from borrowed text: allocates nothing for
    /// empty metadata (`{}`), the common case on read.
    ///
    /// ```
    /// use foldstore_core::Metadata;
    ///
    /// assert_eq!(Metadata::from_trusted_str("{}"), Metadata::new());
    /// assert_eq!(Metadata::from_trusted_str(r#"{"a":1}"#).as_str(), r#"{"a":1}"#);
    /// ```
    pub fn from_trusted_str(text: &str) -> Self {
        if text == EMPTY {
            return Self::new();
        }
        Self(Cow::Owned(text.to_owned()))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the empty object.
    pub fn is_empty(&self) -> bool {
        self.0 == EMPTY || self.to_map().is_empty()
    }

    /// The metadata as a JSON object.
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::from_str::<Value>(&self.0) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    /// One key's value.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.to_map().remove(key)
    }

    /// Sets one key, replacing an earlier value.
    pub fn with(self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        let mut map = self.to_map();
        map.insert(key.into(), value.into());
        Self::from_map(map)
    }

    /// Sets the correlation id: the id shared by everything one request caused.
    pub fn with_correlation_id(self, id: Uuid) -> Self {
        self.with(CORRELATION_ID, id.to_string())
    }

    /// Sets the causation id: the id of the message that caused this event.
    pub fn with_causation_id(self, id: Uuid) -> Self {
        self.with(CAUSATION_ID, id.to_string())
    }

    /// The correlation id, when present and a UUID.
    pub fn correlation_id(&self) -> Option<Uuid> {
        self.uuid(CORRELATION_ID)
    }

    /// The causation id, when present and a UUID.
    pub fn causation_id(&self) -> Option<Uuid> {
        self.uuid(CAUSATION_ID)
    }

    fn uuid(&self, key: &str) -> Option<Uuid> {
        self.get(key)?.as_str()?.parse().ok()
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Default for Metadata {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&serde_json::value::RawValue>(&self.0) {
            Ok(raw) => raw.serialize(serializer),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = Map::<String, Value>::deserialize(deserializer)?;
        Ok(Self::from_map(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_objects() {
        assert!(Metadata::from_json("[1]").is_err());
        assert!(Metadata::from_json("nope").is_err());
        assert!(Metadata::from_json("{\"a\":1}").is_ok());
    }

    #[test]
    fn serde_is_an_object() {
        let m = Metadata::new().with("k", 1);
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(s, "{\"k\":1}");
        let back: Metadata = serde_json::from_str(&s).unwrap();
        assert_eq!(back.get("k").unwrap(), 1);
    }
}
