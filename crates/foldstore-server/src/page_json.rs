//! Pages of recorded events written straight into the response body.
//!
//! A page has the shape of [`WirePage`](crate::wire::WirePage) (the type the API
//! description shows), but is written by hand rather than through `serde`: JSON data
//! and metadata go into the body as the bytes the store holds. The store checked them
//! on append (JSON data must parse, metadata is a JSON object; see
//! `foldstore_core::rules`), so a read neither parses nor re-serializes them, which on
//! a page of a thousand small events was most of the cost of the read. Stored JSON is
//! therefore sent as it was stored: its key order and spacing are the writer's.
//!
//! Everything else is written without intermediate strings: the id straight from its
//! bytes, numbers through `serde_json`'s integer writer, strings through its escaper
//! and `recorded_at` digit by digit, as chrono's `serde` form spells it.

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use foldstore_core::RecordedEvent;
use foldstore_core::rules::is_json;
use serde::Serialize;
use serde_json::Value;

/// A page of events as a finished JSON body, sent as `application/json`.
#[derive(Debug)]
pub(crate) struct PageJson(Bytes);

impl IntoResponse for PageJson {
    fn into_response(self) -> Response {
        ([(CONTENT_TYPE, "application/json")], self.0).into_response()
    }
}

/// The bytes a small event takes beside its data and metadata, to size the buffer.
const EVENT_OVERHEAD: usize = 200;

/// A page of `events`; `next` is the `from` of the following page, absent at the end.
pub(crate) fn page_json(
    events: &[RecordedEvent],
    next: Option<&Value>,
) -> Result<PageJson, serde_json::Error> {
    let size: usize = events
        .iter()
        .map(|e| e.size() + e.stream.as_str().len() + e.event_type.len() + EVENT_OVERHEAD)
        .sum();
    let mut out = Vec::with_capacity(size + 64);
    out.extend_from_slice(b"{\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_event(&mut out, e)?;
    }
    out.push(b']');
    if let Some(next) = next {
        out.extend_from_slice(b",\"next\":");
        serde_json::to_writer(&mut out, next)?;
    }
    out.push(b'}');
    Ok(PageJson(Bytes::from(out)))
}

/// Writes one event with the fields, names and order of `WireEvent`'s `serde` form.
fn write_event(out: &mut Vec<u8>, e: &RecordedEvent) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"{\"id\":\"");
    let mut id = uuid::Uuid::encode_buffer();
    out.extend_from_slice(e.id.hyphenated().encode_lower(&mut id).as_bytes());
    out.extend_from_slice(b"\",\"stream\":");
    write_str(out, e.stream.as_str())?;
    out.extend_from_slice(b",\"type\":");
    write_str(out, &e.event_type)?;
    out.extend_from_slice(b",\"revision\":");
    serde_json::to_writer(&mut *out, &e.revision)?;
    out.extend_from_slice(b",\"position\":\"");
    serde_json::to_writer(&mut *out, &e.position.as_u128())?;
    out.extend_from_slice(b"\",\"data\":");
    if is_json(&e.content_type) {
        out.extend_from_slice(&e.data);
    } else {
        out.push(b'"');
        out.extend_from_slice(BASE64.encode(&e.data).as_bytes());
        out.extend_from_slice(b"\",\"content_type\":");
        write_str(out, &e.content_type)?;
    }
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(e.metadata.as_str().as_bytes());
    out.extend_from_slice(b",\"recorded_at\":\"");
    write_timestamp(out, &e.recorded_at)?;
    out.extend_from_slice(b"\"}");
    Ok(())
}

/// A JSON string, escaped.
fn write_str(out: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    s.serialize(&mut serde_json::Serializer::new(out))
}

/// `recorded_at` as chrono's `serde` form writes it: RFC 3339 in UTC with `Z`, and
/// the fraction in 3, 6 or 9 digits, whichever is the shortest exact one (none when
/// zero). Years outside 0..=9999 and leap seconds, which a store does not record,
/// take chrono's own path.
fn write_timestamp(out: &mut Vec<u8>, t: &DateTime<Utc>) -> Result<(), serde_json::Error> {
    let year = t.year();
    let nano = t.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        let quoted = serde_json::to_vec(t)?;
        out.extend_from_slice(&quoted[1..quoted.len() - 1]);
        return Ok(());
    }
    let year = year.unsigned_abs();
    write_digits(out, year / 100);
    write_digits(out, year % 100);
    out.push(b'-');
    write_digits(out, t.month());
    out.push(b'-');
    write_digits(out, t.day());
    out.push(b'T');
    write_digits(out, t.hour());
    out.push(b':');
    write_digits(out, t.minute());
    out.push(b':');
    write_digits(out, t.second());
    let (value, digits) = if nano == 0 {
        (0, 0)
    } else if nano.is_multiple_of(1_000_000) {
        (nano / 1_000_000, 3)
    } else if nano.is_multiple_of(1_000) {
        (nano / 1_000, 6)
    } else {
        (nano, 9)
    };
    if digits > 0 {
        out.push(b'.');
        let start = out.len();
        out.resize(start + digits, b'0');
        let mut rest = value;
        for slot in out[start..].iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
    }
    out.push(b'Z');
    Ok(())
}

/// Two decimal digits of `n` (below 100).
fn write_digits(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::WirePage;
    use bytes::Bytes as B;
    use chrono::TimeZone;
    use foldstore_core::{Metadata, Position, StreamName};
    use serde_json::json;

    fn event(i: u64, data: &[u8], content_type: &str, at: DateTime<Utc>) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::from_u128(u128::from(i) * 0x0123_4567_89ab_cdef_0fed_cba9),
            stream: StreamName::new(format!("order-{i}\"q\\")).unwrap(),
            event_type: format!("Placed\u{e9}{i}"),
            revision: i,
            position: Position::new(u128::from(i) * 7 + 1),
            data: B::copy_from_slice(data),
            content_type: content_type.to_owned(),
            metadata: if i.is_multiple_of(2) {
                Metadata::new()
            } else {
                Metadata::from_json(r#"{"a":1,"b":"x"}"#).unwrap()
            },
            recorded_at: at,
            tags: Vec::new(),
        }
    }

    fn serde_page(events: &[RecordedEvent], next: Option<Value>) -> Vec<u8> {
        serde_json::to_vec(&WirePage::of(events, next)).unwrap()
    }

    fn hand_page(events: &[RecordedEvent], next: Option<Value>) -> Vec<u8> {
        page_json(events, next.as_ref()).unwrap().0.to_vec()
    }

    /// Stored JSON that is compact with sorted keys (what `serde_json` writes) comes
    /// out byte for byte as the `serde` form of `WirePage` does.
    #[test]
    fn a_page_is_byte_for_byte_the_serde_form() {
        let base = Utc.with_ymd_and_hms(2026, 12, 7, 20, 52, 25).unwrap();
        let fractions = [0, 123_000_000, 123_456_000, 123_456_789, 1, 999_999_999];
        let events: Vec<_> = (0..12u64)
            .map(|i| {
                let at = base
                    + chrono::Duration::days(i64::try_from(i).unwrap() * 400)
                    + chrono::Duration::nanoseconds(fractions[i as usize % fractions.len()]);
                match i % 3 {
                    0 => event(
                        i,
                        br#"{"amount":12.5,"n":[1,2,{"z":null}]}"#,
                        "application/json",
                        at,
                    ),
                    1 => event(i, &[0, 159, 146, 150, 255], "application/octet-stream", at),
                    _ => event(i, b"\"text\"", "application/cloudevents+json", at),
                }
            })
            .collect();
        for next in [None, Some(json!("85")), Some(json!(12))] {
            assert_eq!(
                String::from_utf8(hand_page(&events, next.clone())).unwrap(),
                String::from_utf8(serde_page(&events, next)).unwrap()
            );
        }
        assert_eq!(hand_page(&[], None), serde_page(&[], None));
    }

    /// Stored JSON goes out as stored: its spacing and key order are kept, and the
    /// page is still the same JSON value as the `serde` form.
    #[test]
    fn stored_json_passes_through_as_stored() {
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let stored = b"{ \"b\": 1,\n  \"a\": [true, 18446744073709551615] }";
        let events = [event(1, stored, "application/json", at)];
        let body = hand_page(&events, None);
        assert!(
            body.windows(stored.len()).any(|w| w == stored),
            "the stored bytes are in the body"
        );
        let hand: Value = serde_json::from_slice(&body).unwrap();
        let serde: Value = serde_json::from_slice(&serde_page(&events, None)).unwrap();
        assert_eq!(hand, serde);
    }

    /// Timestamps match chrono's `serde` form over many instants and fractions.
    #[test]
    fn timestamps_match_chrono() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let secs = i64::try_from(state % 253_402_300_799).unwrap();
            let nanos = match state % 4 {
                0 => 0,
                1 => (state >> 20) as u32 % 1000 * 1_000_000,
                2 => (state >> 20) as u32 % 1_000_000 * 1000,
                _ => (state >> 20) as u32 % 1_000_000_000,
            };
            let t = DateTime::from_timestamp(secs, nanos).unwrap();
            let mut out = Vec::new();
            write_timestamp(&mut out, &t).unwrap();
            let expected = serde_json::to_string(&t).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected.trim_matches('"'));
        }
    }
}
