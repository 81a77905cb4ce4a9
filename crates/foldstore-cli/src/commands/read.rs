//! `foldstore read`: a stream or `$all` as NDJSON, fetched page by page.

use std::io::Write;

use foldstore_core::rules::is_json;
use foldstore_core::{
    Direction, EventFilter, Position, RecordedEvent, StreamName, validate_category,
};
use serde::Serialize;
use serde_json::Value;

use super::Access;
use crate::cli::{ReadArgs, RemoteArgs, StoreArgs};
use crate::endpoint::Endpoint;
use crate::error::CliError;

/// The name that reads the global log.
pub(crate) const ALL: &str = "$all";

/// Events fetched per read.
const PAGE: usize = 1000;

/// Runs `foldstore read`.
pub(crate) async fn run(
    store_args: &StoreArgs,
    remote: &RemoteArgs,
    args: ReadArgs,
) -> Result<(), CliError> {
    let target = if args.stream == ALL {
        let mut filter = EventFilter::all().with_types(args.event_types.clone());
        if let Some(category) = &args.category {
            validate_category(category)?;
            filter.category = Some(category.clone());
        }
        Target::All(filter)
    } else {
        if args.category.is_some() {
            return Err(CliError::Usage(
                "--category filters `$all`: read '$all' --category C, or drop --category"
                    .to_owned(),
            ));
        }
        Target::Stream(StreamName::new(args.stream.as_str())?)
    };
    let endpoint = Endpoint::open(store_args, remote, Access::Existing).await?;
    let result = read(&endpoint, &target, &args).await;
    endpoint.close().await?;
    result
}

/// What `read` reads.
enum Target {
    /// The global log, filtered.
    All(EventFilter),
    /// One stream.
    Stream(StreamName),
}

async fn read(store: &Endpoint, target: &Target, args: &ReadArgs) -> Result<(), CliError> {
    let direction = if args.backwards {
        Direction::Backwards
    } else {
        Direction::Forwards
    };
    let mut left = args.limit.unwrap_or(usize::MAX);
    let mut from = args.from;
    while left > 0 {
        let page_size = left.min(PAGE);
        let page = match target {
            Target::All(filter) => {
                store
                    .read_all(from.map(Position::new), direction, page_size, filter)
                    .await?
            }
            Target::Stream(stream) => {
                let from = match from {
                    Some(f) => Some(u64::try_from(f).map_err(|_| {
                        CliError::Usage(format!("--from {f} is not a stream revision"))
                    })?),
                    None => None,
                };
                store
                    .read_stream(stream, from, direction, page_size)
                    .await?
            }
        };
        let Some(last) = page.last() else { break };
        let full = page.len() == page_size;
        let last_key = match target {
            Target::All(_) => last.position.as_u128(),
            Target::Stream(_) => u128::from(last.revision),
        };
        from = match direction {
            Direction::Forwards => last_key.checked_add(1),
            Direction::Backwards => last_key.checked_sub(1),
        };
        let mut out = Vec::with_capacity(page.len() * 256);
        for event in &page {
            let stream_type_filtered = matches!(target, Target::Stream(_))
                && !args.event_types.is_empty()
                && !args.event_types.contains(&event.event_type);
            if stream_type_filtered {
                continue;
            }
            serde_json::to_writer(&mut out, &EventLine::new(event))
                .map_err(|e| CliError::io("could not format an event", std::io::Error::other(e)))?;
            out.push(b'\n');
            left -= 1;
        }
        if !write_stdout(&out)? || !full || from.is_none() {
            break;
        }
    }
    Ok(())
}

/// Writes to stdout; `Ok(false)` when the reader went away (`| head`).
pub(crate) fn write_stdout(bytes: &[u8]) -> Result<bool, CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CliError::io("could not write to standard output", e)),
    }
}

/// One NDJSON line.
#[derive(Serialize)]
pub(crate) struct EventLine<'a> {
    position: Position,
    stream: &'a str,
    revision: u64,
    id: uuid::Uuid,
    #[serde(rename = "type")]
    event_type: &'a str,
    recorded_at: String,
    content_type: &'a str,
    metadata: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    data_bytes: usize,
}

impl<'a> EventLine<'a> {
    /// The line of `e`.
    pub(crate) fn new(e: &'a RecordedEvent) -> Self {
        // JSON is re-serialized rather than copied so that a pretty-printed payload
        // cannot break the one-event-per-line format.
        let data = if is_json(&e.content_type) {
            serde_json::from_slice::<Value>(&e.data).ok()
        } else {
            None
        };
        let data_base64 = data.is_none().then(|| base64(&e.data));
        Self {
            position: e.position,
            stream: e.stream.as_str(),
            revision: e.revision,
            id: e.id,
            event_type: &e.event_type,
            recorded_at: e.recorded_at.to_rfc3339(),
            content_type: &e.content_type,
            metadata: serde_json::from_str(e.metadata.as_str())
                .unwrap_or_else(|_| Value::String(e.metadata.as_str().to_owned())),
            data,
            data_base64,
            data_bytes: e.data.len(),
        }
    }
}

/// Standard base64 (RFC 4648, with padding).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[*s as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }
}
