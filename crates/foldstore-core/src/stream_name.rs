//! Stream and category names.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The longest stream or category name, in UTF-8 bytes.
pub const MAX_STREAM_NAME_BYTES: usize = 200;

/// Why a stream or category name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidStreamName {
    /// The name was empty.
    #[error("a stream name must not be empty: use `category-id`, for example `account-42`")]
    Empty,
    /// The name was longer than [`MAX_STREAM_NAME_BYTES`].
    #[error("stream name is {len} bytes long; the limit is {max} bytes: shorten the id part")]
    TooLong {
        /// Length of the name, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The name contained a control character (newline, tab, NUL, ...).
    #[error("stream name {name:?} contains a control character: use printable characters only")]
    ControlCharacter {
        /// The name as given.
        name: String,
    },
    /// The name started with `$`, which is reserved for the store's own streams.
    #[error(
        "stream name {name:?} starts with `$`, which is reserved for the store: choose a name without the leading `$`"
    )]
    Reserved {
        /// The name as given.
        name: String,
    },
    /// A category name contained `-` (the category is the part before the first `-`).
    #[error(
        "category {name:?} contains `-`: a category is the part of a stream name before the first `-`"
    )]
    DashInCategory {
        /// The name as given.
        name: String,
    },
}

fn check_common(name: &str) -> Result<(), InvalidStreamName> {
    if name.is_empty() {
        return Err(InvalidStreamName::Empty);
    }
    if name.len() > MAX_STREAM_NAME_BYTES {
        return Err(InvalidStreamName::TooLong {
            len: name.len(),
            max: MAX_STREAM_NAME_BYTES,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(InvalidStreamName::ControlCharacter {
            name: name.to_owned(),
        });
    }
    if name.starts_with('$') {
        return Err(InvalidStreamName::Reserved {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// A validated stream name such as `account-42`.
///
/// Names are non-empty UTF-8 of at most 200 bytes without control characters. The
/// *category* is the part before the first `-`; the *id* is the part after it.
/// Names starting with `$` are reserved for the store.
///
/// ```
/// use foldstore_core::StreamName;
///
/// let name = StreamName::new("account-42").unwrap();
/// assert_eq!(name.category(), "account");
/// assert_eq!(name.id(), "42");
/// assert!(StreamName::new("$all").is_err());
/// ```
///
/// A name is shared, not copied, when cloned: every event read from a stream carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(Arc<str>);

impl StreamName {
    /// Validates `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidStreamName> {
        let name = name.into();
        check_common(&name)?;
        Ok(Self(name.into()))
    }

    /// A name the crate built from valid parts (such as `dcb-<uuid>`): not checked
    /// again in release builds.
    pub(crate) fn trusted(name: String) -> Self {
        debug_assert!(check_common(&name).is_ok(), "{name:?} is not a valid name");
        Self(name.into())
    }

    /// The whole name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `-`, or the whole name when it has none.
    pub fn category(&self) -> &str {
        category_of(&self.0)
    }

    /// The part after the first `-`, or the whole name when it has none.
    ///
    /// Consumer groups hash this part (see [`crate::ConsumerGroup`]).
    pub fn id(&self) -> &str {
        match self.0.split_once('-') {
            Some((_, id)) => id,
            None => &self.0,
        }
    }
}

/// The category of a stream name: the part before the first `-`.
pub fn category_of(name: &str) -> &str {
    match name.split_once('-') {
        Some((category, _)) => category,
        None => name,
    }
}

/// Checks a category name: the rules of a stream name, and no `-`.
///
/// ```
/// assert!(foldstore_core::validate_category("account").is_ok());
/// assert!(foldstore_core::validate_category("account-1").is_err());
/// ```
pub fn validate_category(category: &str) -> Result<(), InvalidStreamName> {
    check_common(category)?;
    if category.contains('-') {
        return Err(InvalidStreamName::DashInCategory {
            name: category.to_owned(),
        });
    }
    Ok(())
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StreamName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamName {
    type Error = InvalidStreamName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<&str> for StreamName {
    type Error = InvalidStreamName;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl std::str::FromStr for StreamName {
    type Err = InvalidStreamName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl From<StreamName> for String {
    fn from(value: StreamName) -> Self {
        value.0.as_ref().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_and_id() {
        let n = StreamName::new("order-1-2").unwrap();
        assert_eq!(n.category(), "order");
        assert_eq!(n.id(), "1-2");
        let n = StreamName::new("orders").unwrap();
        assert_eq!(n.category(), "orders");
        assert_eq!(n.id(), "orders");
    }

    #[test]
    fn limits() {
        assert_eq!(StreamName::new(""), Err(InvalidStreamName::Empty));
        assert!(StreamName::new("a".repeat(200)).is_ok());
        assert!(matches!(
            StreamName::new("a".repeat(201)),
            Err(InvalidStreamName::TooLong { len: 201, .. })
        ));
        assert!(matches!(
            StreamName::new("a\nb"),
            Err(InvalidStreamName::ControlCharacter { .. })
        ));
        assert!(matches!(
            StreamName::new("$x"),
            Err(InvalidStreamName::Reserved { .. })
        ));
        assert!(StreamName::new("ünïcode-ok").is_ok());
    }
}
