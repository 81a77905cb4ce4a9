//! Upcasting: bringing stored events of an old schema version up to the version the
//! code reads, on read, before decoding. Stored events are never rewritten.
//!
//! An [`Upcasters`] registry holds one step per `(event type, from version)`: a
//! function on the JSON data that produces version `from + 1`, optionally under a new
//! type name. Steps chain, so an event stored at v1 goes v1 → v2 → v3.
//!
//! ```
//! use foldstore_core::DomainEvent;
//! use foldstore_core::upcast::Upcasters;
//! use serde::{Deserialize, Serialize};
//! use serde_json::json;
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize, DomainEvent)]
//! enum AccountEvent {
//!     // v1 was {"amount": 5} (whole euros), v2 {"cents": 500}, v3 adds a currency.
//!     #[event(version = 3)]
//!     Deposited { cents: u64, currency: String },
//! }
//!
//! let upcasters = Upcasters::new()
//!     .add("Deposited", 1, |v| Ok(json!({ "cents": v["amount"].as_u64().unwrap_or(0) * 100 })))
//!     .add("Deposited", 2, |mut v| { v["currency"] = json!("EUR"); Ok(v) });
//!
//! let up = upcasters.upcast("Deposited", 1, br#"{"amount": 5}"#).unwrap();
//! assert_eq!(up.version, 3);
//! let event = AccountEvent::decode_data(&up.event_type, &up.data).unwrap();
//! assert_eq!(event, AccountEvent::Deposited { cents: 500, currency: "EUR".into() });
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::domain_event::stored_version;
use crate::rules::is_json;
use crate::{DecodeError, DomainEvent, RecordedEvent};

type StepFn = dyn Fn(Value) -> Result<Value, String> + Send + Sync;

#[derive(Clone)]
struct Step {
    to_type: Option<String>,
    f: Arc<StepFn>,
}

/// A registry of upcasting steps. Cheap to clone.
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<String, HashMap<u32, Step>>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut steps: Vec<(&str, u32)> = self
            .steps
            .iter()
            .flat_map(|(t, m)| m.keys().map(move |v| (t.as_str(), *v)))
            .collect();
        steps.sort_unstable();
        f.debug_struct("Upcasters").field("steps", &steps).finish()
    }
}

/// An event's type, version and data after upcasting.
#[derive(Debug, Clone, PartialEq)]
pub struct Upcast<'a> {
    /// The type name (changed if a step renamed it).
    pub event_type: Cow<'a, str>,
    /// The schema version reached.
    pub version: u32,
    /// The data at that version.
    pub data: Cow<'a, [u8]>,
}

impl Upcasters {
    /// An empty registry: events decode only at their current version.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the step from `from_version` to `from_version + 1` of `event_type`.
    /// A later step for the same key replaces an earlier one.
    pub fn add<F>(self, event_type: impl Into<String>, from_version: u32, f: F) -> Self
    where
        F: Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.insert(event_type.into(), from_version, None, Arc::new(f))
    }

    /// Adds a step that also renames the type: `event_type` at `from_version` becomes
    /// `new_type` at `from_version + 1`.
    pub fn add_rename<F>(
        self,
        event_type: impl Into<String>,
        from_version: u32,
        new_type: impl Into<String>,
        f: F,
    ) -> Self
    where
        F: Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.insert(
            event_type.into(),
            from_version,
            Some(new_type.into()),
            Arc::new(f),
        )
    }

    fn insert(mut self, ty: String, from: u32, to_type: Option<String>, f: Arc<StepFn>) -> Self {
        self.steps
            .entry(ty)
            .or_default()
            .insert(from, Step { to_type, f });
        self
    }

    /// Whether no step is registered.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Applies every step that matches, in a chain, starting from `event_type` at
    /// `version`. Data is parsed only when a step applies.
    pub fn upcast<'a>(
        &self,
        event_type: &'a str,
        version: u32,
        data: &'a [u8],
    ) -> Result<Upcast<'a>, DecodeError> {
        let mut out = Upcast {
            event_type: Cow::Borrowed(event_type),
            version,
            data: Cow::Borrowed(data),
        };
        let mut value: Option<Value> = None;
        while let Some(step) = self
            .steps
            .get(out.event_type.as_ref())
            .and_then(|m| m.get(&out.version))
        {
            let fail = |message: String| DecodeError::Upcast {
                event_type: event_type.to_owned(),
                from_version: version,
                message,
            };
            let current = match value.take() {
                Some(v) => v,
                None => serde_json::from_slice(&out.data).map_err(|e| fail(e.to_string()))?,
            };
            value = Some((step.f)(current).map_err(fail)?);
            if let Some(t) = &step.to_type {
                out.event_type = Cow::Owned(t.clone());
            }
            out.version += 1;
        }
        if let Some(v) = value {
            out.data = Cow::Owned(v.to_string().into_bytes());
        }
        Ok(out)
    }

    /// Upcasts a stored event and decodes it as `E`.
    ///
    /// Fails with [`DecodeError::UnknownType`] when `E` has no variant for the
    /// (upcast) type, and [`DecodeError::VersionMismatch`] when the steps do not reach
    /// the version `E` reads.
    pub fn decode<E: DomainEvent>(&self, event: &RecordedEvent) -> Result<E, DecodeError> {
        self.decode_parts(
            &event.event_type,
            &event.content_type,
            &event.metadata,
            &event.data,
        )
    }

    fn decode_parts<E: DomainEvent>(
        &self,
        event_type: &str,
        content_type: &str,
        metadata: &crate::Metadata,
        data: &[u8],
    ) -> Result<E, DecodeError> {
        if !is_json(content_type) {
            return Err(match E::current_version(event_type) {
                None => DecodeError::UnknownType {
                    event_type: event_type.to_owned(),
                },
                Some(_) => DecodeError::NotJson {
                    event_type: event_type.to_owned(),
                    content_type: content_type.to_owned(),
                },
            });
        }
        let version = stored_version(event_type, metadata)?;
        let up = self.upcast(event_type, version, data)?;
        let Some(current) = E::current_version(&up.event_type) else {
            return Err(DecodeError::UnknownType {
                event_type: up.event_type.into_owned(),
            });
        };
        if up.version != current {
            return Err(DecodeError::VersionMismatch {
                event_type: up.event_type.into_owned(),
                stored: up.version,
                current,
            });
        }
        E::decode_data(&up.event_type, &up.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chain_with_rename_reaches_the_last_version() {
        let u = Upcasters::new()
            .add("A", 1, |v| Ok(json!({ "x": v["x"], "y": 0 })))
            .add_rename("A", 2, "B", |mut v| {
                v["z"] = json!(true);
                Ok(v)
            });
        let up = u.upcast("A", 1, br#"{"x":1}"#).unwrap();
        assert_eq!(up.event_type, "B");
        assert_eq!(up.version, 3);
        let v: Value = serde_json::from_slice(&up.data).unwrap();
        assert_eq!(v, json!({"x": 1, "y": 0, "z": true}));
        // Already current: untouched, borrowed.
        let up = u.upcast("B", 3, b"{}").unwrap();
        assert!(matches!(up.data, Cow::Borrowed(_)));
    }

    #[test]
    fn a_failing_step_names_the_event() {
        let u = Upcasters::new().add("A", 1, |_| Err("no x".into()));
        let err = u.upcast("A", 1, b"{}").unwrap_err();
        assert!(
            err.to_string()
                .contains("upcasting event A from schema version 1")
        );
    }
}
