//! Dynamic Consistency Boundary (dcb.events): tags, queries and append conditions.
//!
//! Events may carry **tags** (opaque strings, usually `key:value` such as
//! `account:42`). A [`Query`] is an OR of [`QueryItem`]s; an item matches an event whose
//! type is any of the item's `types` (or any type when `types` is empty) **and** which
//! carries all of the item's `tags`. [`Query::all`] (no items) matches every event.
//!
//! An [`AppendCondition`] makes an append fail with
//! [`crate::AppendError::ConditionFailed`] if any event matching its query exists at a
//! position after `after` (every position when `after` is `None`). A decision model is
//! built by [`crate::EventStore::read_query`]; the position of the last event the model
//! saw becomes `after` (when it read nothing: `None`, or a head position read *before*
//! the query; a head read after it may include a matching event the model never saw).
//!
//! ```
//! use foldstore_core::dcb::{Query, QueryItem};
//!
//! let q = Query::from_items([
//!     QueryItem::new().types(["Deposited", "Withdrawn"]).tags(["account:1"]),
//! ]);
//! assert!(q.matches("Deposited", &["account:1".into(), "bank:x".into()]));
//! assert!(!q.matches("Deposited", &["account:2".into()]));
//! assert!(!q.matches("Opened", &["account:1".into()]));
//! assert!(Query::all().matches("Anything", &[]));
//! ```

use serde::{Deserialize, Serialize};

use crate::Position;

/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 200;
/// Most tags on one event.
pub const MAX_TAGS_PER_EVENT: usize = 64;

/// Why a tag was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTag {
    /// The tag was empty.
    #[error("a tag is empty: give each tag a value such as `account:42`")]
    Empty,
    /// The tag was longer than [`MAX_TAG_BYTES`].
    #[error("tag {tag:?}... is {len} bytes: tags hold at most {MAX_TAG_BYTES} bytes")]
    TooLong {
        /// The first bytes of the tag.
        tag: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The tag held a control character.
    #[error("tag {0:?} holds a control character: tags are printable text")]
    ControlCharacter(String),
    /// An event carried more than [`MAX_TAGS_PER_EVENT`] tags.
    #[error("an event carries {0} tags: at most {MAX_TAGS_PER_EVENT} are allowed")]
    TooMany(usize),
}

/// Checks one tag.
///
/// ```
/// assert!(foldstore_core::dcb::validate_tag("account:42").is_ok());
/// assert!(foldstore_core::dcb::validate_tag("").is_err());
/// ```
pub fn validate_tag(tag: &str) -> Result<(), InvalidTag> {
    if tag.is_empty() {
        return Err(InvalidTag::Empty);
    }
    if tag.len() > MAX_TAG_BYTES {
        let mut end = 40;
        while !tag.is_char_boundary(end) {
            end -= 1;
        }
        return Err(InvalidTag::TooLong {
            tag: tag[..end].to_owned(),
            len: tag.len(),
        });
    }
    if tag.chars().any(char::is_control) {
        return Err(InvalidTag::ControlCharacter(tag.to_owned()));
    }
    Ok(())
}

/// Checks an event's tag list.
pub fn validate_tags(tags: &[String]) -> Result<(), InvalidTag> {
    if tags.len() > MAX_TAGS_PER_EVENT {
        return Err(InvalidTag::TooMany(tags.len()));
    }
    tags.iter().try_for_each(|t| validate_tag(t))
}

/// One alternative of a [`Query`]: events of any of `types` (any type when empty) that
/// carry all of `tags`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueryItem {
    /// Event types, OR-combined; empty means any type.
    #[serde(default)]
    pub types: Vec<String>,
    /// Tags, AND-combined; empty means no tag is required.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl QueryItem {
    /// An item matching every event (add types and tags to narrow it).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds event types (OR).
    pub fn types<I, T>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.types.extend(types.into_iter().map(Into::into));
        self
    }

    /// Adds required tags (AND).
    pub fn tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Whether an event of `event_type` with `tags` matches this item.
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && self.tags.iter().all(|t| tags.contains(t))
    }
}

/// An OR of [`QueryItem`]s. No items: every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Query {
    /// The alternatives; empty matches every event.
    #[serde(default)]
    pub items: Vec<QueryItem>,
}

impl Query {
    /// The query that matches every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// A query from its items.
    pub fn from_items(items: impl IntoIterator<Item = QueryItem>) -> Self {
        Self {
            items: items.into_iter().collect(),
        }
    }

    /// Adds one item (OR).
    pub fn or(mut self, item: QueryItem) -> Self {
        self.items.push(item);
        self
    }

    /// Whether the query matches every event.
    pub fn is_all(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether an event of `event_type` with `tags` matches.
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        self.is_all() || self.items.iter().any(|i| i.matches(event_type, tags))
    }

    /// Checks every tag in the query.
    pub fn validate(&self) -> Result<(), InvalidTag> {
        self.items
            .iter()
            .flat_map(|i| i.tags.iter())
            .try_for_each(|t| validate_tag(t))
    }
}

/// "Fail if any event matching `fail_if_events_match` exists after `after`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendCondition {
    /// The query; usually the one the decision model was built from.
    pub fail_if_events_match: Query,
    /// Only events at positions strictly after this one count. `None`: every event
    /// counts (a uniqueness check).
    pub after: Option<Position>,
}

impl AppendCondition {
    /// A condition over `query`, ignoring events at or before `after`.
    pub fn new(query: Query, after: Option<Position>) -> Self {
        Self {
            fail_if_events_match: query,
            after,
        }
    }
}

/// Options of [`crate::EventStore::read_query`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadQueryOptions {
    /// Only events strictly after this position. `None`: from the start.
    pub after: Option<Position>,
    /// At most this many events (`None`: all).
    pub limit: Option<usize>,
}

impl ReadQueryOptions {
    /// Every matching event, oldest first.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only events strictly after `position`.
    pub fn after(mut self, position: Position) -> Self {
        self.after = Some(position);
        self
    }

    /// At most `n` events.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }
}
