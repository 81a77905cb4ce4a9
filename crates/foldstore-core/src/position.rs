//! Global positions and stream revisions.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The place of an event in the global order (`$all`).
///
/// Positions are unique and totally ordered: an event committed later never gets a
/// lower position than one a reader has already seen. They are opaque tokens: do not
/// assume they are dense or start at a given value. A backend may pack two numbers into
/// one position (the PostgreSQL backend packs a transaction id and a sequence number).
///
/// On the wire a position is a decimal string, because it may exceed what JSON numbers
/// carry safely.
///
/// ```
/// use foldstore_core::Position;
///
/// let p = Position::new(41);
/// assert!(p < p.next());
/// assert_eq!(p.to_string(), "41");
/// assert_eq!("41".parse::<Position>().unwrap(), p);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position(u128);

impl Position {
    /// The lowest position: every event is at or after it.
    pub const ZERO: Position = Position(0);

    /// Wraps a raw value. Backends call this; applications only pass positions back.
    pub const fn new(raw: u128) -> Self {
        Self(raw)
    }

    /// The raw value.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// The raw value when it fits in a signed 64-bit integer (SQLite row ids).
    pub fn to_i64(self) -> Option<i64> {
        i64::try_from(self.0).ok()
    }

    /// The smallest position after this one.
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }

    /// The greatest position before this one.
    pub const fn prev(self) -> Self {
        Self(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A position string that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a position: a position is the decimal string a read or a subscription returned"
)]
pub struct InvalidPosition(pub String);

impl std::str::FromStr for Position {
    type Err = InvalidPosition;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<u128>()
            .map(Position)
            .map_err(|_| InvalidPosition(s.to_owned()))
    }
}

impl Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Position;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a position as a decimal string or a non-negative integer")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Position, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Position, E> {
                Ok(Position(u128::from(v)))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// What an append expects the stream's current revision to be.
///
/// ```
/// use foldstore_core::{CurrentRevision, ExpectedRevision};
///
/// assert!(ExpectedRevision::NoStream.matches(CurrentRevision::NoStream));
/// assert!(ExpectedRevision::Exact(3).matches(CurrentRevision::Current(3)));
/// assert!(!ExpectedRevision::StreamExists.matches(CurrentRevision::NoStream));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedRevision {
    /// Append whatever the stream's state.
    Any,
    /// The stream must not exist (never written, or soft-deleted since its last event).
    NoStream,
    /// The stream must exist.
    StreamExists,
    /// The stream's last revision must be exactly this one.
    Exact(u64),
}

impl ExpectedRevision {
    /// Whether a stream in state `current` satisfies this expectation.
    pub fn matches(self, current: CurrentRevision) -> bool {
        match (self, current) {
            (ExpectedRevision::Any, _) => true,
            (ExpectedRevision::NoStream, CurrentRevision::NoStream) => true,
            (ExpectedRevision::StreamExists, CurrentRevision::Current(_)) => true,
            (ExpectedRevision::Exact(e), CurrentRevision::Current(c)) => e == c,
            _ => false,
        }
    }
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any"),
            ExpectedRevision::NoStream => f.write_str("no stream"),
            ExpectedRevision::StreamExists => f.write_str("stream exists"),
            ExpectedRevision::Exact(n) => write!(f, "revision {n}"),
        }
    }
}

/// The state of a stream as an append sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurrentRevision {
    /// The stream has no visible events: never written, or soft-deleted.
    NoStream,
    /// The revision of the stream's last event.
    Current(u64),
}

impl fmt::Display for CurrentRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CurrentRevision::NoStream => f.write_str("no stream"),
            CurrentRevision::Current(n) => write!(f, "revision {n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_serde_roundtrip() {
        let p = Position::new(u128::from(u64::MAX) + 7);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, format!("\"{}\"", u128::from(u64::MAX) + 7));
        assert_eq!(serde_json::from_str::<Position>(&json).unwrap(), p);
        assert_eq!(
            serde_json::from_str::<Position>("12").unwrap(),
            Position::new(12)
        );
        assert!(serde_json::from_str::<Position>("\"x\"").is_err());
    }

    #[test]
    fn expected_revision_json() {
        assert_eq!(
            serde_json::to_string(&ExpectedRevision::NoStream).unwrap(),
            "\"no_stream\""
        );
        assert_eq!(
            serde_json::to_string(&ExpectedRevision::Exact(4)).unwrap(),
            "{\"exact\":4}"
        );
    }
}
