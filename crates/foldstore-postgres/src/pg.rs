//! PostgreSQL values: transaction ids, positions, rows.

use std::error::Error;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use foldstore_core::{
    BackendError, BackendErrorKind, Metadata, Position, RecordedEvent, StreamName,
};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use uuid::Uuid;

/// A PostgreSQL `xid8`: a 64-bit transaction id (epoch and xid), which never wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Xid8(pub(crate) u64);

impl<'a> FromSql<'a> for Xid8 {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("an xid8 has 8 bytes, got {}", raw.len()))?;
        Ok(Self(u64::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::XID8
    }
}

impl ToSql for Xid8 {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(&self.0.to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::XID8
    }

    to_sql_checked!();
}

/// The position of the event written by transaction `tx` with sequence number `seq`:
/// `tx` in the high 64 bits, `seq` in the low 64 bits, so positions order like the
/// pair `(tx, seq)`.
pub(crate) fn position(tx: Xid8, seq: i64) -> Position {
    // Sequence values are positive (the sequence starts at 1).
    Position::new((u128::from(tx.0) << 64) | u128::from(seq.max(0).unsigned_abs()))
}

/// The `(tx, seq)` pair of a position, for `(tx, seq) >= (..)` bounds. Positions that
/// no event can have (a sequence part above `i64::MAX`) are moved to the next valid
/// pair when `round_up`, else to the previous one, which selects the same events.
pub(crate) fn split(p: Position, round_up: bool) -> (Xid8, i64) {
    let raw = p.as_u128();
    let tx = u64::try_from(raw >> 64).unwrap_or(u64::MAX);
    let seq = raw as u64;
    match i64::try_from(seq) {
        Ok(seq) => (Xid8(tx), seq),
        Err(_) if round_up => match tx.checked_add(1) {
            Some(tx) => (Xid8(tx), 0),
            None => (Xid8(u64::MAX), i64::MAX),
        },
        Err(_) => (Xid8(tx), i64::MAX),
    }
}

/// The transaction part of a position.
pub(crate) fn tx_of(p: Position) -> u64 {
    u64::try_from(p.as_u128() >> 64).unwrap_or(u64::MAX)
}

/// A revision or count as a PostgreSQL `bigint`, saturating.
pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A `bigint` read back as a revision.
pub(crate) fn to_u64(n: i64, what: &str) -> Result<u64, BackendError> {
    u64::try_from(n).map_err(|_| {
        BackendError::new(
            BackendErrorKind::Incompatible,
            format!(
                "the stored {what} is negative ({n}); the schema was changed outside foldstore"
            ),
        )
    })
}

/// A stored stream name, checked again on the way out.
pub(crate) fn stream_name(name: String) -> Result<StreamName, BackendError> {
    StreamName::new(name).map_err(|e| {
        BackendError::new(
            BackendErrorKind::Incompatible,
            "a stored stream name is not valid; the data was changed outside foldstore",
        )
        .with_source(e)
    })
}

/// The columns every event query selects from `events e`, in this order. The stream
/// is selected by id (names are resolved through the store's name cache, which saves a
/// join per event).
pub(crate) const EVENT_COLUMNS: &str = "e.tx, e.seq, e.id, e.stream_id, e.event_type, e.revision, \
     e.data, e.content_type, e.metadata, e.recorded_at, e.tags";

fn column<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, BackendError> {
    row.try_get(index).map_err(|e| {
        BackendError::new(
            BackendErrorKind::Incompatible,
            format!("column {index} of an event row could not be read"),
        )
        .with_source(e)
    })
}

/// The stream id of a row selected with [`EVENT_COLUMNS`].
pub(crate) fn stream_id_of(row: &Row) -> Result<i64, BackendError> {
    column(row, 3)
}

/// An event from a row selected with [`EVENT_COLUMNS`], whose stream is `stream`.
pub(crate) fn event_from_row(row: &Row, stream: StreamName) -> Result<RecordedEvent, BackendError> {
    let tx: Xid8 = column(row, 0)?;
    let seq: i64 = column(row, 1)?;
    let id: Uuid = column(row, 2)?;
    let event_type: String = column(row, 4)?;
    let revision: i64 = column(row, 5)?;
    let data: Vec<u8> = column(row, 6)?;
    let content_type: String = column(row, 7)?;
    let metadata: &str = column(row, 8)?;
    let recorded_at: DateTime<Utc> = column(row, 9)?;
    let tags: Option<Vec<String>> = column(row, 10)?;
    Ok(RecordedEvent {
        id,
        stream,
        event_type,
        revision: to_u64(revision, "revision")?,
        position: position(tx, seq),
        data: Bytes::from(data),
        content_type,
        metadata: Metadata::from_trusted_str(metadata),
        recorded_at,
        tags: tags.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_like_pairs() {
        let a = position(Xid8(5), 900);
        let b = position(Xid8(6), 1);
        assert!(a < b);
        assert_eq!(split(a, true), (Xid8(5), 900));
        assert_eq!(split(a.next(), true), (Xid8(5), 901));
        assert_eq!(tx_of(b), 6);
    }

    #[test]
    fn impossible_positions_select_the_same_events() {
        let p = Position::new((5u128 << 64) | u128::from(u64::MAX));
        assert_eq!(split(p, true), (Xid8(6), 0));
        assert_eq!(split(p, false), (Xid8(5), i64::MAX));
    }
}
