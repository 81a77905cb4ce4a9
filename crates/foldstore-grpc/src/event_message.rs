//! The `ReadResp.ReadEvent.RecordedEvent` message, encoded by hand.
//!
//! Reads and subscriptions send one of these per event, so its encoding is the
//! server's inner loop. prost's generated type would hold the system metadata as a
//! `HashMap<String, String>` (a table, six strings and the hashing of three keys per
//! event) and the id and stream name as freshly allocated strings. This type holds the
//! stored event's own fields instead (its type, content type, data and stream name are
//! moved or shared, not copied) and writes the map entries, the id and the `created`
//! ticks straight into the response buffer, so encoding an event allocates nothing.
//! The bytes are those prost writes for the generated type with a `BTreeMap` (fields
//! in tag order, map entries in key order, proto3 defaults left out), and the client
//! decodes them with its generated type.
//!
//! `build.rs` maps the message to this type (`extern_path`). Decoding (which the
//! server never does) reads every field back; metadata keys other than the three
//! system keys are kept in [`EventMessage::other_metadata`].

use bytes::{Buf, BufMut, Bytes};
use foldstore_core::{RecordedEvent, StreamName};
use prost::DecodeError;
use prost::encoding::{
    DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len,
};
use uuid::Uuid;

use crate::proto::event_store::client::{StreamIdentifier, Uuid as WireUuid, uuid as wire_id};
use crate::wire;

/// The stream an event message names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StreamId {
    /// A stream of the store.
    Stream(StreamName),
    /// The metastream `$$<stream>` of a stream of the store.
    Metastream(StreamName),
    /// A name as it was decoded.
    Raw(Bytes),
}

impl Default for StreamId {
    fn default() -> Self {
        StreamId::Raw(Bytes::new())
    }
}

impl StreamId {
    const METASTREAM_PREFIX: &'static [u8] = b"$$";

    fn parts(&self) -> (&'static [u8], &[u8]) {
        match self {
            // A parked stream under the `$` name clients know (see `crate::parked`).
            StreamId::Stream(s) => (
                crate::parked::wire_prefix(s.as_str()).as_bytes(),
                s.as_str().as_bytes(),
            ),
            StreamId::Metastream(s) => (Self::METASTREAM_PREFIX, s.as_str().as_bytes()),
            StreamId::Raw(b) => (b"", b),
        }
    }

    fn len(&self) -> usize {
        let (prefix, name) = self.parts();
        prefix.len() + name.len()
    }
}

/// One recorded event as reads and subscriptions send it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EventMessage {
    /// The event id.
    pub(crate) id: Uuid,
    /// Whether the id is sent as two 64-bit halves rather than as a string.
    pub(crate) structured_id: bool,
    /// The stream.
    pub(crate) stream: StreamId,
    pub(crate) stream_revision: u64,
    pub(crate) prepare_position: u64,
    pub(crate) commit_position: u64,
    /// The metadata key `type`.
    pub(crate) event_type: String,
    /// The metadata key `content-type`.
    pub(crate) content_type: String,
    /// The metadata key `created`: 100-nanosecond ticks since the Unix epoch.
    pub(crate) created: i64,
    /// Other metadata keys, as a decoded message holds them; none when we send.
    pub(crate) other_metadata: Vec<(String, String)>,
    pub(crate) custom_metadata: Bytes,
    pub(crate) data: Bytes,
}

/// Field numbers, from `proto/streams.proto`.
mod tag {
    pub(super) const ID: u32 = 1;
    pub(super) const STREAM_IDENTIFIER: u32 = 2;
    pub(super) const STREAM_REVISION: u32 = 3;
    pub(super) const PREPARE_POSITION: u32 = 4;
    pub(super) const COMMIT_POSITION: u32 = 5;
    pub(super) const METADATA: u32 = 6;
    pub(super) const CUSTOM_METADATA: u32 = 7;
    pub(super) const DATA: u32 = 8;
    /// In `StreamIdentifier`.
    pub(super) const STREAM_NAME: u32 = 3;
    /// In `UUID`.
    pub(super) const UUID_STRUCTURED: u32 = 1;
    pub(super) const UUID_STRING: u32 = 2;
    /// In `UUID.Structured`.
    pub(super) const MOST_SIGNIFICANT: u32 = 1;
    pub(super) const LEAST_SIGNIFICANT: u32 = 2;
    /// In a map entry.
    pub(super) const KEY: u32 = 1;
    pub(super) const VALUE: u32 = 2;
}

/// The length of a hyphenated UUID.
const UUID_TEXT: usize = 36;

impl EventMessage {
    /// `event` as a read sends it, with its id as a string or (`structured_id`) as two
    /// 64-bit halves.
    pub(crate) fn of(event: RecordedEvent, structured_id: bool) -> Self {
        let (commit_position, prepare_position) = wire::wire_position(event.position);
        EventMessage {
            id: event.id,
            structured_id,
            custom_metadata: wire::custom_from_metadata(&event.metadata),
            stream: StreamId::Stream(event.stream),
            stream_revision: event.revision,
            prepare_position,
            commit_position,
            event_type: event.event_type,
            content_type: event.content_type,
            created: wire::ticks(event.recorded_at),
            other_metadata: Vec::new(),
            data: event.data,
        }
    }

    fn id_halves(&self) -> (i64, i64) {
        let raw = self.id.as_u128();
        ((raw >> 64) as u64 as i64, raw as u64 as i64)
    }

    /// The length of the `UUID` message.
    fn id_len(&self) -> usize {
        if self.structured_id {
            let (most, least) = self.id_halves();
            nested_len(
                tag::UUID_STRUCTURED,
                varint_field_len(tag::MOST_SIGNIFICANT, most as u64)
                    + varint_field_len(tag::LEAST_SIGNIFICANT, least as u64),
            )
        } else {
            nested_len(tag::UUID_STRING, UUID_TEXT)
        }
    }

    fn metadata_entries(&self) -> impl Iterator<Item = (&str, Value<'_>)> {
        // In key order, as prost writes a `BTreeMap`.
        [
            ("content-type", Value::Text(&self.content_type)),
            ("created", Value::Number(self.created)),
            ("type", Value::Text(&self.event_type)),
        ]
        .into_iter()
        .chain(
            self.other_metadata
                .iter()
                .map(|(k, v)| (k.as_str(), Value::Text(v))),
        )
    }

    fn merge_metadata_entry(&mut self, key: String, value: String) -> Result<(), DecodeError> {
        match key.as_str() {
            "type" => self.event_type = value,
            "content-type" => self.content_type = value,
            "created" => {
                self.created = value
                    .parse()
                    .map_err(|_| DecodeError::new("the metadata key `created` is not a number"))?;
            }
            _ => self.other_metadata.push((key, value)),
        }
        Ok(())
    }
}

/// A metadata value: text, or the `created` ticks written as decimal text.
enum Value<'a> {
    Text(&'a str),
    Number(i64),
}

impl Value<'_> {
    fn len(&self) -> usize {
        match self {
            Value::Text(text) => text.len(),
            Value::Number(n) => {
                let digits = n
                    .unsigned_abs()
                    .checked_ilog10()
                    .map_or(1, |d| d as usize + 1);
                digits + usize::from(*n < 0)
            }
        }
    }

    fn with_bytes<T>(&self, f: impl FnOnce(&[u8]) -> T) -> T {
        match self {
            Value::Text(text) => f(text.as_bytes()),
            Value::Number(n) => {
                let mut digits = [0u8; 20];
                f(decimal(*n, &mut digits))
            }
        }
    }
}

/// `n` in decimal, written at the end of `out`.
fn decimal(n: i64, out: &mut [u8; 20]) -> &[u8] {
    let mut rest = n.unsigned_abs();
    let mut start = out.len();
    loop {
        start -= 1;
        out[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        start -= 1;
        out[start] = b'-';
    }
    &out[start..]
}

/// The length of a length-delimited field holding `len` bytes.
fn nested_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The length of a varint field, left out (proto3) when zero.
fn varint_field_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

/// The length of a bytes or string field, left out (proto3) when empty.
fn bytes_field_len(tag: u32, len: usize) -> usize {
    if len == 0 { 0 } else { nested_len(tag, len) }
}

fn put_header(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_varint_field(tag: u32, value: u64, buf: &mut impl BufMut) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

fn put_bytes_field(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    if !bytes.is_empty() {
        put_header(tag, bytes.len(), buf);
        buf.put_slice(bytes);
    }
}

/// The length of one map entry's message.
fn entry_len(key: &str, value: &Value<'_>) -> usize {
    bytes_field_len(tag::KEY, key.len()) + bytes_field_len(tag::VALUE, value.len())
}

impl prost::Message for EventMessage {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_header(tag::ID, self.id_len(), buf);
        if self.structured_id {
            let (most, least) = self.id_halves();
            let len = varint_field_len(tag::MOST_SIGNIFICANT, most as u64)
                + varint_field_len(tag::LEAST_SIGNIFICANT, least as u64);
            put_header(tag::UUID_STRUCTURED, len, buf);
            put_varint_field(tag::MOST_SIGNIFICANT, most as u64, buf);
            put_varint_field(tag::LEAST_SIGNIFICANT, least as u64, buf);
        } else {
            let mut text = [0u8; UUID_TEXT];
            let text = self.id.hyphenated().encode_lower(&mut text);
            put_bytes_field(tag::UUID_STRING, text.as_bytes(), buf);
        }
        put_header(
            tag::STREAM_IDENTIFIER,
            bytes_field_len(tag::STREAM_NAME, self.stream.len()),
            buf,
        );
        if self.stream.len() > 0 {
            let (prefix, name) = self.stream.parts();
            put_header(tag::STREAM_NAME, prefix.len() + name.len(), buf);
            buf.put_slice(prefix);
            buf.put_slice(name);
        }
        put_varint_field(tag::STREAM_REVISION, self.stream_revision, buf);
        put_varint_field(tag::PREPARE_POSITION, self.prepare_position, buf);
        put_varint_field(tag::COMMIT_POSITION, self.commit_position, buf);
        for (key, value) in self.metadata_entries() {
            put_header(tag::METADATA, entry_len(key, &value), buf);
            put_bytes_field(tag::KEY, key.as_bytes(), buf);
            value.with_bytes(|v| put_bytes_field(tag::VALUE, v, buf));
        }
        put_bytes_field(tag::CUSTOM_METADATA, &self.custom_metadata, buf);
        put_bytes_field(tag::DATA, &self.data, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        use prost::encoding::{bytes, message, skip_field, uint64};
        match tag {
            tag::ID => {
                let mut id = WireUuid::default();
                message::merge(wire_type, &mut id, buf, ctx)?;
                (self.id, self.structured_id) = match id.value {
                    Some(wire_id::Value::Structured(s)) => {
                        let high = u128::from(s.most_significant_bits as u64);
                        let low = u128::from(s.least_significant_bits as u64);
                        (Uuid::from_u128((high << 64) | low), true)
                    }
                    Some(wire_id::Value::String(s)) => (
                        s.parse()
                            .map_err(|_| DecodeError::new("the event id is not a UUID"))?,
                        false,
                    ),
                    None => (Uuid::nil(), false),
                };
                Ok(())
            }
            tag::STREAM_IDENTIFIER => {
                let mut identifier = StreamIdentifier::default();
                message::merge(wire_type, &mut identifier, buf, ctx)?;
                self.stream = StreamId::Raw(identifier.stream_name);
                Ok(())
            }
            tag::STREAM_REVISION => uint64::merge(wire_type, &mut self.stream_revision, buf, ctx),
            tag::PREPARE_POSITION => uint64::merge(wire_type, &mut self.prepare_position, buf, ctx),
            tag::COMMIT_POSITION => uint64::merge(wire_type, &mut self.commit_position, buf, ctx),
            tag::METADATA => {
                let mut entry = std::collections::BTreeMap::new();
                prost::encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
                prost::encoding::btree_map::merge(
                    prost::encoding::string::merge,
                    prost::encoding::string::merge,
                    &mut entry,
                    buf,
                    ctx,
                )?;
                for (key, value) in entry {
                    self.merge_metadata_entry(key, value)?;
                }
                Ok(())
            }
            tag::CUSTOM_METADATA => bytes::merge(wire_type, &mut self.custom_metadata, buf, ctx),
            tag::DATA => bytes::merge(wire_type, &mut self.data, buf, ctx),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let metadata: usize = self
            .metadata_entries()
            .map(|(key, value)| nested_len(tag::METADATA, entry_len(key, &value)))
            .sum();
        nested_len(tag::ID, self.id_len())
            + nested_len(
                tag::STREAM_IDENTIFIER,
                bytes_field_len(tag::STREAM_NAME, self.stream.len()),
            )
            + varint_field_len(tag::STREAM_REVISION, self.stream_revision)
            + varint_field_len(tag::PREPARE_POSITION, self.prepare_position)
            + varint_field_len(tag::COMMIT_POSITION, self.commit_position)
            + metadata
            + bytes_field_len(tag::CUSTOM_METADATA, self.custom_metadata.len())
            + bytes_field_len(tag::DATA, self.data.len())
    }

    fn clear(&mut self) {
        *self = EventMessage::default();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost::Message;

    use super::*;

    /// The message as prost generates it from `proto/streams.proto`, with a `BTreeMap`
    /// for the map so that its encoding is deterministic.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(message, optional, tag = "1")]
        id: Option<WireUuid>,
        #[prost(message, optional, tag = "2")]
        stream_identifier: Option<StreamIdentifier>,
        #[prost(uint64, tag = "3")]
        stream_revision: u64,
        #[prost(uint64, tag = "4")]
        prepare_position: u64,
        #[prost(uint64, tag = "5")]
        commit_position: u64,
        #[prost(btree_map = "string, string", tag = "6")]
        metadata: BTreeMap<String, String>,
        #[prost(bytes = "bytes", tag = "7")]
        custom_metadata: Bytes,
        #[prost(bytes = "bytes", tag = "8")]
        data: Bytes,
    }

    fn sample(structured_id: bool) -> EventMessage {
        EventMessage {
            id: Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210),
            structured_id,
            stream: StreamId::Stream(StreamName::new("cart-42").unwrap()),
            stream_revision: 7,
            prepare_position: 1 << 40,
            commit_position: 1 << 40,
            event_type: "ItemAdded".into(),
            content_type: "application/json".into(),
            created: 17_000_000_000_123_456,
            other_metadata: Vec::new(),
            custom_metadata: Bytes::from_static(b"{\"correlation\":\"c-1\"}"),
            data: Bytes::from_static(b"{\"sku\":\"abc\",\"qty\":2}"),
        }
    }

    fn generated(message: &EventMessage) -> Generated {
        let (most, least) = message.id_halves();
        let value = if message.structured_id {
            wire_id::Value::Structured(wire_id::Structured {
                most_significant_bits: most,
                least_significant_bits: least,
            })
        } else {
            wire_id::Value::String(message.id.hyphenated().to_string())
        };
        let (prefix, name) = message.stream.parts();
        let mut metadata = BTreeMap::from([
            ("type".to_owned(), message.event_type.clone()),
            ("content-type".to_owned(), message.content_type.clone()),
            ("created".to_owned(), message.created.to_string()),
        ]);
        metadata.extend(message.other_metadata.iter().cloned());
        Generated {
            id: Some(WireUuid { value: Some(value) }),
            stream_identifier: Some(StreamIdentifier {
                stream_name: Bytes::from([prefix, name].concat()),
            }),
            stream_revision: message.stream_revision,
            prepare_position: message.prepare_position,
            commit_position: message.commit_position,
            metadata,
            custom_metadata: message.custom_metadata.clone(),
            data: message.data.clone(),
        }
    }

    fn cases() -> Vec<EventMessage> {
        let mut cases = vec![sample(false), sample(true)];
        let mut metastream = sample(false);
        metastream.stream = StreamId::Metastream(StreamName::new("cart-42").unwrap());
        cases.push(metastream);
        // Zeros and empties, which proto3 leaves out, and a negative `created`.
        let mut sparse = sample(true);
        sparse.id = Uuid::nil();
        sparse.stream_revision = 0;
        sparse.prepare_position = 0;
        sparse.commit_position = 0;
        sparse.content_type = String::new();
        sparse.created = -1_234;
        sparse.custom_metadata = Bytes::new();
        sparse.data = Bytes::new();
        cases.push(sparse);
        let mut extra = sample(false);
        extra.other_metadata = vec![("$causation".into(), "x".into())];
        extra.created = i64::MIN;
        cases.push(extra);
        cases
    }

    #[test]
    fn the_generated_type_decodes_what_we_encode() {
        for case in cases() {
            let bytes = case.encode_to_vec();
            assert_eq!(bytes.len(), case.encoded_len(), "{case:?}");
            let decoded = Generated::decode(bytes.as_slice()).unwrap();
            assert_eq!(decoded, generated(&case), "{case:?}");
        }
    }

    #[test]
    fn we_encode_the_bytes_the_generated_type_does() {
        for case in cases().into_iter().filter(|c| c.other_metadata.is_empty()) {
            assert_eq!(
                case.encode_to_vec(),
                generated(&case).encode_to_vec(),
                "{case:?}"
            );
        }
    }

    #[test]
    fn what_we_encode_decodes_back_to_the_same_message() {
        for case in cases() {
            let decoded = EventMessage::decode(case.encode_to_vec().as_slice()).unwrap();
            let (prefix, name) = case.stream.parts();
            let expected = EventMessage {
                stream: StreamId::Raw(Bytes::from([prefix, name].concat())),
                ..case
            };
            assert_eq!(decoded, expected);
        }
    }

    #[test]
    fn the_generated_encoding_decodes_into_ours() {
        for case in cases() {
            let decoded =
                EventMessage::decode(generated(&case).encode_to_vec().as_slice()).unwrap();
            assert_eq!(decoded.encode_to_vec().len(), case.encoded_len());
            assert_eq!(decoded.id, case.id);
            assert_eq!(decoded.data, case.data);
            assert_eq!(decoded.created, case.created);
        }
    }

    #[test]
    fn decimal_writes_and_measures_every_i64() {
        let mut out = [0u8; 20];
        for n in [0, 7, -7, 9, 10, -10, 99, 100, 1_234_567, i64::MAX, i64::MIN] {
            assert_eq!(decimal(n, &mut out), n.to_string().as_bytes());
            assert_eq!(Value::Number(n).len(), n.to_string().len(), "{n}");
        }
    }
}
