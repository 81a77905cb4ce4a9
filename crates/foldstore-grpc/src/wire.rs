//! Conversions between KurrentDB's wire types and foldstore's model: event ids,
//! positions, stream names, event metadata and custom metadata.

use ::uuid::Uuid;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use foldstore_core::{EventStore, Metadata, Position, RecordedEvent, StreamName};
use tonic::Status;

use crate::error::invalid_argument;
use crate::event_message::EventMessage;
use crate::parked;
use crate::proto::event_store::client::streams::read_resp::{ReadEvent, read_event};
use crate::proto::event_store::client::uuid as wire_id;
use crate::proto::event_store::client::{StreamIdentifier, Uuid as WireUuid};

/// The metadata key under which custom metadata that is not a JSON object is kept, as
/// base64: our event metadata is always a JSON object.
pub(crate) const WRAPPED_CUSTOM_METADATA: &str = "$grpc_custom_metadata_base64";

/// The (commit, prepare) pair a position is written as.
///
/// A position that fits in 64 bits (SQLite, the in-memory store) is both commit and
/// prepare. A wider one (PostgreSQL packs a transaction id and a sequence number into
/// 128 bits) is split: the high half is the commit position, the low half the prepare
/// position, which orders pairs as the positions are ordered.
pub(crate) fn wire_position(position: Position) -> (u64, u64) {
    let raw = position.as_u128();
    match u64::try_from(raw) {
        Ok(narrow) => (narrow, narrow),
        Err(_) => ((raw >> 64) as u64, raw as u64),
    }
}

/// The position a client's (commit, prepare) pair stands for: the inverse of
/// [`wire_position`]. Whether the store's positions are wide is read from its head.
pub(crate) async fn store_position(
    store: &dyn EventStore,
    commit: u64,
    prepare: u64,
) -> Result<Position, Status> {
    let head = store.head_position().await.map_err(crate::error::read)?;
    let wide = head.is_some_and(|h| h.as_u128() > u128::from(u64::MAX));
    Ok(if wide {
        Position::new((u128::from(commit) << 64) | u128::from(prepare))
    } else {
        Position::new(u128::from(commit))
    })
}

/// An event id from the wire, in either of its two forms.
pub(crate) fn event_id(id: Option<WireUuid>) -> Result<Uuid, Status> {
    match id.and_then(|id| id.value) {
        Some(wire_id::Value::Structured(s)) => {
            let high = u128::from(s.most_significant_bits as u64);
            let low = u128::from(s.least_significant_bits as u64);
            Ok(Uuid::from_u128((high << 64) | low))
        }
        Some(wire_id::Value::String(s)) => s.parse().map_err(|_| {
            invalid_argument(format!(
                "event id {s:?} is not a UUID: send ids as UUID strings or msb/lsb pairs"
            ))
        }),
        None => Err(invalid_argument(
            "an event has no id: give every proposed message a UUID",
        )),
    }
}

/// An event id in the form the client asked for.
pub(crate) fn wire_uuid(id: Uuid, structured: bool) -> WireUuid {
    let value = if structured {
        let raw = id.as_u128();
        wire_id::Value::Structured(wire_id::Structured {
            most_significant_bits: (raw >> 64) as u64 as i64,
            least_significant_bits: raw as u64 as i64,
        })
    } else {
        wire_id::Value::String(id.hyphenated().to_string())
    };
    WireUuid { value: Some(value) }
}

/// A stream name from the wire. `$`-prefixed names are reserved by our store.
pub(crate) fn stream_name(identifier: Option<&StreamIdentifier>) -> Result<StreamName, Status> {
    let Some(identifier) = identifier else {
        return Err(invalid_argument("the request names no stream"));
    };
    let name = std::str::from_utf8(&identifier.stream_name)
        .map_err(|_| invalid_argument("the stream name is not UTF-8"))?;
    StreamName::new(name).map_err(|e| invalid_argument(e.to_string()))
}

/// A stream name from the wire for a read, a subscription or metadata: also accepts
/// the `$persistentsubscription-…-parked` name of a parked stream (see
/// [`crate::parked`]).
pub(crate) fn readable_stream_name(
    identifier: Option<&StreamIdentifier>,
) -> Result<StreamName, Status> {
    if let Some(stream) = identifier
        .and_then(|i| std::str::from_utf8(&i.stream_name).ok())
        .and_then(parked::stored)
    {
        return Ok(stream);
    }
    stream_name(identifier)
}

/// The identifier of a stream, as responses carry it (a parked stream under its `$`
/// name).
pub(crate) fn stream_identifier(stream: &StreamName) -> StreamIdentifier {
    StreamIdentifier {
        stream_name: Bytes::copy_from_slice(parked::wire_name(stream).as_bytes()),
    }
}

/// Our metadata for a proposed message's `custom_metadata` bytes, chosen so that the
/// bytes come back exactly: none is `{}`; a JSON object (other than `{}` itself) is
/// kept as its text; anything else is kept as base64 under
/// [`WRAPPED_CUSTOM_METADATA`].
pub(crate) fn metadata_from_custom(custom: &[u8]) -> Metadata {
    if custom.is_empty() {
        return Metadata::new();
    }
    if custom != b"{}"
        && let Ok(text) = std::str::from_utf8(custom)
        && unwrap_custom(text).is_none()
        && let Ok(metadata) = Metadata::from_json(text)
    {
        return metadata;
    }
    let mut map = serde_json::Map::new();
    map.insert(
        WRAPPED_CUSTOM_METADATA.to_owned(),
        serde_json::Value::String(STANDARD.encode(custom)),
    );
    Metadata::from_map(map)
}

/// The `custom_metadata` bytes for our metadata: the inverse of
/// [`metadata_from_custom`]. Metadata written through our own API comes back as its
/// JSON text (`{}` as none).
pub(crate) fn custom_from_metadata(metadata: &Metadata) -> Bytes {
    let text = metadata.as_str();
    if text == "{}" {
        return Bytes::new();
    }
    match unwrap_custom(text) {
        Some(bytes) => Bytes::from(bytes),
        None => Bytes::copy_from_slice(text.as_bytes()),
    }
}

/// The bytes kept in wrapped custom metadata, if `text` is exactly that.
fn unwrap_custom(text: &str) -> Option<Vec<u8>> {
    let prefix = format!("{{\"{WRAPPED_CUSTOM_METADATA}\":");
    if !text.starts_with(&prefix) {
        return None;
    }
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    if map.len() != 1 {
        return None;
    }
    STANDARD
        .decode(map.get(WRAPPED_CUSTOM_METADATA)?.as_str()?)
        .ok()
}

/// 100-nanosecond ticks since the Unix epoch, as the `created` metadata key carries
/// them.
pub(crate) fn ticks(at: DateTime<Utc>) -> i64 {
    at.timestamp() * 10_000_000 + i64::from(at.timestamp_subsec_nanos() / 100)
}

/// A protobuf timestamp.
pub(crate) fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// A stored event as a read or a subscription sends it.
pub(crate) fn read_event(event: RecordedEvent, structured_ids: bool) -> ReadEvent {
    let message = EventMessage::of(event, structured_ids);
    let commit = message.commit_position;
    ReadEvent {
        event: Some(message),
        link: None,
        position: Some(read_event::Position::CommitPosition(commit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_metadata_round_trips_byte_for_byte() {
        let cases: [&[u8]; 8] = [
            b"",
            b"{}",
            b"{\"a\":1}",
            b"{ \"spaced\" : [1, 2] }",
            b"[1,2]",
            b"not json",
            &[0xff, 0x00, 0x7f],
            b"{\"$grpc_custom_metadata_base64\":\"eA==\"}",
        ];
        for case in cases {
            let metadata = metadata_from_custom(case);
            assert_eq!(custom_from_metadata(&metadata).as_ref(), case, "{case:?}");
        }
    }

    #[test]
    fn json_object_custom_metadata_is_kept_as_our_metadata() {
        let metadata = metadata_from_custom(br#"{"correlation_id":"c-1"}"#);
        assert_eq!(metadata.get("correlation_id").unwrap(), "c-1");
    }

    #[test]
    fn ids_convert_both_ways_in_both_forms() {
        let id = Uuid::new_v4();
        for structured in [true, false] {
            assert_eq!(event_id(Some(wire_uuid(id, structured))).unwrap(), id);
        }
    }

    #[test]
    fn narrow_positions_are_commit_and_prepare_wide_ones_split() {
        assert_eq!(wire_position(Position::new(42)), (42, 42));
        let wide = Position::new((7u128 << 64) | 9);
        assert_eq!(wire_position(wide), (7, 9));
        assert!(wire_position(wide) < wire_position(Position::new((7u128 << 64) | 10)));
    }
}
