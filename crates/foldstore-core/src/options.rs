//! Options of reads and subscriptions.

use serde::{Deserialize, Serialize};

use crate::{Position, ReadError, category_of, validate_category};

/// Reading direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forwards,
    /// Newest first.
    Backwards,
}

/// Options of [`crate::EventStore::read_stream`].
///
/// ```
/// use foldstore_core::{Direction, ReadStreamOptions};
///
/// // The last 10 events, newest first.
/// let opts = ReadStreamOptions::backwards().max_count(10);
/// assert_eq!(opts.direction, Direction::Backwards);
/// assert_eq!(opts.from, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadStreamOptions {
    /// First revision to return (inclusive). `None`: the start when reading forwards,
    /// the end when reading backwards.
    pub from: Option<u64>,
    /// Reading direction.
    pub direction: Direction,
    /// At most this many events.
    pub max_count: usize,
}

impl Default for ReadStreamOptions {
    fn default() -> Self {
        Self::forwards()
    }
}

impl ReadStreamOptions {
    /// Every event, oldest first.
    pub fn forwards() -> Self {
        Self {
            from: None,
            direction: Direction::Forwards,
            max_count: usize::MAX,
        }
    }

    /// Every event, newest first.
    pub fn backwards() -> Self {
        Self {
            direction: Direction::Backwards,
            ..Self::forwards()
        }
    }

    /// Starts at `revision` (inclusive).
    pub fn from_revision(mut self, revision: u64) -> Self {
        self.from = Some(revision);
        self
    }

    /// Returns at most `n` events.
    pub fn max_count(mut self, n: usize) -> Self {
        self.max_count = n;
        self
    }
}

/// A consumer group: splits a category's streams among `size` consumers.
///
/// A stream belongs to member `group_hash(id) % size`, where `id` is the part of the
/// stream name after the first `-` (see [`group_hash`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConsumerGroup {
    /// This consumer's index, `0 <= member < size`.
    pub member: u32,
    /// How many consumers share the category.
    pub size: u32,
}

impl ConsumerGroup {
    /// A checked consumer group.
    pub fn new(member: u32, size: u32) -> Result<Self, ReadError> {
        if size == 0 || member >= size {
            return Err(ReadError::InvalidConsumerGroup { member, size });
        }
        Ok(Self { member, size })
    }

    /// Whether the stream named `stream` belongs to this member.
    pub fn contains(&self, stream: &str) -> bool {
        let id = match stream.split_once('-') {
            Some((_, id)) => id,
            None => stream,
        };
        group_hash(id) % u64::from(self.size) == u64::from(self.member)
    }
}

/// The consumer-group hash, fixed so that every backend and language agrees:
/// 64-bit FNV-1a over the UTF-8 bytes of the stream id, with the top bit cleared (so it
/// fits a signed 64-bit SQL integer).
///
/// FNV-1a: start with `0xcbf29ce484222325`; for each byte, XOR it in, then multiply by
/// `0x100000001b3` modulo 2^64.
///
/// ```
/// assert_eq!(foldstore_core::group_hash(""), 0xcbf29ce484222325 & 0x7fff_ffff_ffff_ffff);
/// assert_eq!(foldstore_core::group_hash("42"), 0x07ee7e07b4b19223);
/// ```
pub fn group_hash(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h & 0x7fff_ffff_ffff_ffff
}

/// Which events of `$all` a read or subscription returns. All set conditions must hold.
///
/// ```
/// use foldstore_core::EventFilter;
///
/// let f = EventFilter::category("account").unwrap().with_types(["Deposited"]);
/// assert!(f.matches("account-1", "Deposited"));
/// assert!(!f.matches("account-1", "Withdrawn"));
/// assert!(!f.matches("order-1", "Deposited"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EventFilter {
    /// Only streams whose name starts with this.
    pub stream_prefix: Option<String>,
    /// Only streams of this category.
    pub category: Option<String>,
    /// Only these event types (any of them); empty means every type.
    pub event_types: Vec<String>,
    /// Only streams of this consumer-group member.
    pub consumer_group: Option<ConsumerGroup>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Events of one category.
    pub fn category(category: impl Into<String>) -> Result<Self, ReadError> {
        let category = category.into();
        validate_category(&category)?;
        Ok(Self {
            category: Some(category),
            ..Self::default()
        })
    }

    /// Events of streams whose name starts with `prefix`.
    pub fn stream_prefix(prefix: impl Into<String>) -> Self {
        Self {
            stream_prefix: Some(prefix.into()),
            ..Self::default()
        }
    }

    /// Also requires one of these event types.
    pub fn with_types<I: IntoIterator<Item = S>, S: Into<String>>(mut self, types: I) -> Self {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Also requires the consumer-group member.
    pub fn with_consumer_group(mut self, group: ConsumerGroup) -> Self {
        self.consumer_group = Some(group);
        self
    }

    /// Checks the parts that can be wrong: the category name and the consumer group.
    ///
    /// ```
    /// use foldstore_core::{ConsumerGroup, EventFilter};
    ///
    /// assert!(EventFilter::all().validate().is_ok());
    /// let bad = EventFilter { category: Some("a-b".into()), ..EventFilter::all() };
    /// assert!(bad.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ReadError> {
        if let Some(c) = &self.category {
            validate_category(c)?;
        }
        if let Some(g) = self.consumer_group {
            ConsumerGroup::new(g.member, g.size)?;
        }
        Ok(())
    }

    /// Whether nothing is filtered out.
    pub fn is_all(&self) -> bool {
        self.stream_prefix.is_none()
            && self.category.is_none()
            && self.event_types.is_empty()
            && self.consumer_group.is_none()
    }

    /// Whether an event of `event_type` in `stream` passes.
    pub fn matches(&self, stream: &str, event_type: &str) -> bool {
        self.stream_prefix
            .as_deref()
            .is_none_or(|p| stream.starts_with(p))
            && self
                .category
                .as_deref()
                .is_none_or(|c| category_of(stream) == c)
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && self.consumer_group.is_none_or(|g| g.contains(stream))
    }
}

/// Options of [`crate::EventStore::read_all`].
///
/// ```
/// use foldstore_core::{EventFilter, Position, ReadAllOptions};
///
/// let opts = ReadAllOptions::forwards()
///     .from_position(Position::new(100))
///     .max_count(500)
///     .filter(EventFilter::stream_prefix("account-"));
/// assert_eq!(opts.max_count, 500);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAllOptions {
    /// First position to return (inclusive). `None`: the start when reading forwards,
    /// the end when reading backwards.
    pub from: Option<Position>,
    /// Reading direction.
    pub direction: Direction,
    /// At most this many events.
    pub max_count: usize,
    /// Which events to return.
    pub filter: EventFilter,
}

impl Default for ReadAllOptions {
    fn default() -> Self {
        Self::forwards()
    }
}

impl ReadAllOptions {
    /// Every event, oldest first.
    pub fn forwards() -> Self {
        Self {
            from: None,
            direction: Direction::Forwards,
            max_count: usize::MAX,
            filter: EventFilter::all(),
        }
    }

    /// Every event, newest first.
    pub fn backwards() -> Self {
        Self {
            direction: Direction::Backwards,
            ..Self::forwards()
        }
    }

    /// Starts at `position` (inclusive).
    pub fn from_position(mut self, position: Position) -> Self {
        self.from = Some(position);
        self
    }

    /// Returns at most `n` events.
    pub fn max_count(mut self, n: usize) -> Self {
        self.max_count = n;
        self
    }

    /// Returns only events that pass `filter`.
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }
}

/// Where a subscription to `$all` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscribeFrom {
    /// From the first event.
    #[default]
    Start,
    /// Only events committed after the subscription started.
    End,
    /// Events after this position (exclusive): pass the last position you processed.
    After(Position),
}

/// Where a subscription to one stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscribeStreamFrom {
    /// From the stream's first visible event.
    #[default]
    Start,
    /// Only events appended after the subscription started.
    End,
    /// Events after this revision (exclusive): pass the last revision you processed.
    After(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_hash_known_values() {
        // Reference values from the FNV specification's test vectors (64-bit FNV-1a),
        // with the top bit cleared.
        assert_eq!(group_hash("a"), 0xaf63dc4c8601ec8c & 0x7fff_ffff_ffff_ffff);
        assert_eq!(
            group_hash("foobar"),
            0x85944171f73967e8 & 0x7fff_ffff_ffff_ffff
        );
    }

    #[test]
    fn consumer_groups_partition_streams() {
        let size = 3;
        for i in 0..100 {
            let stream = format!("account-{i}");
            let owners = (0..size)
                .filter(|m| ConsumerGroup::new(*m, size).unwrap().contains(&stream))
                .count();
            assert_eq!(owners, 1);
        }
        assert!(ConsumerGroup::new(3, 3).is_err());
        assert!(ConsumerGroup::new(0, 0).is_err());
    }
}
