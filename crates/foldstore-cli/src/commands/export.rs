//! `foldstore export`: `$all` or one stream as NDJSON, resumable.
//!
//! Each line is one event with every field an import needs to recreate it exactly:
//! `position`, `stream`, `revision`, `id`, `type`, `recorded_at`, `content_type`,
//! `metadata`, and the data, as `data` (the stored JSON text itself, byte for byte)
//! or as `data_base64` (other content types, and JSON whose text has line breaks or
//! surrounding spaces, which one NDJSON line cannot hold unchanged). Through a server
//! the data is the server's JSON rendering (equal as JSON, compact, keys sorted).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use foldstore_core::rules::is_json;
use foldstore_core::{Direction, EventFilter, Position, RecordedEvent, StreamName};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Access;
use super::read::ALL;
use crate::cli::{RemoteArgs, StoreArgs};
use crate::endpoint::Endpoint;
use crate::error::CliError;

/// Examples in `foldstore export --help`.
pub(crate) const EXAMPLES: &str = "Examples:
  foldstore export --output backup.ndjson
  foldstore export account-42 > account-42.ndjson
  foldstore export --output backup.ndjson --resume
  foldstore export --from 50000 --output tail.ndjson
  foldstore --server https://events.example.com export --output backup.ndjson

One event per line (the fields of `read`, with the data kept byte for byte when the
store is opened directly). --resume continues an interrupted export: it keeps the
file's complete lines, drops a cut-off last line, and appends what follows the last
event in it. --from starts at a position ($all) or revision (a stream), inclusive.
`foldstore import` reads the file back.";

/// Events per page read.
const PAGE: usize = 1000;

/// Options of `foldstore export`.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// `$all` (the default) or one stream.
    #[arg(value_name = "STREAM|$all", default_value = ALL)]
    pub(crate) stream: String,
    /// Write to this file instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Start at this position ($all) or revision (a stream), inclusive.
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub(crate) from: Option<u128>,
    /// Continue the export in --output after its last complete line.
    #[arg(long, requires = "output")]
    pub(crate) resume: bool,
}

/// One exported event; [`super::import`] reads it back.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ExportLine {
    /// Place in `$all` of the source store.
    pub(crate) position: Position,
    /// The stream.
    pub(crate) stream: String,
    /// The revision in the stream.
    pub(crate) revision: u64,
    /// The event id.
    pub(crate) id: uuid::Uuid,
    /// The event type.
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    /// When the source store recorded it.
    pub(crate) recorded_at: String,
    /// The data's media type.
    pub(crate) content_type: String,
    /// The metadata object, as stored.
    pub(crate) metadata: Box<RawValue>,
    /// JSON data, as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<Box<RawValue>>,
    /// Any other data, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) data_base64: Option<String>,
}

/// `text` as a raw JSON value that one line holds unchanged, if it is one.
fn raw_on_one_line(bytes: &[u8]) -> Option<Box<RawValue>> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.contains(['\n', '\r']) || text.trim() != text {
        return None;
    }
    RawValue::from_string(text.to_owned()).ok()
}

impl ExportLine {
    /// The line of `e`.
    pub(crate) fn new(e: &RecordedEvent) -> Result<Self, CliError> {
        use base64::Engine;
        let data = if is_json(&e.content_type) {
            raw_on_one_line(&e.data)
        } else {
            None
        };
        let data_base64 = data
            .is_none()
            .then(|| base64::engine::general_purpose::STANDARD.encode(&e.data));
        let metadata = match raw_on_one_line(e.metadata.as_str().as_bytes()) {
            Some(m) => m,
            None => {
                let value: serde_json::Value =
                    serde_json::from_str(e.metadata.as_str()).map_err(|err| {
                        CliError::Protocol(format!("event {}: metadata: {err}", e.id))
                    })?;
                RawValue::from_string(value.to_string())
                    .map_err(|err| CliError::Protocol(err.to_string()))?
            }
        };
        Ok(Self {
            position: e.position,
            stream: e.stream.as_str().to_owned(),
            revision: e.revision,
            id: e.id,
            event_type: e.event_type.clone(),
            recorded_at: e.recorded_at.to_rfc3339(),
            content_type: e.content_type.clone(),
            metadata,
            data,
            data_base64,
        })
    }
}

/// The end of the last complete line of `path`, and that line's event.
fn last_complete_line(path: &Path) -> Result<(u64, Option<ExportLine>), CliError> {
    let file = File::open(path)
        .map_err(|e| CliError::io(format!("could not open {} to resume", path.display()), e))?;
    let mut reader = BufReader::new(file);
    let (mut offset, mut good_end, mut last) = (0u64, 0u64, None);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| CliError::io(format!("could not read {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        offset += n as u64;
        if line.last() != Some(&b'\n') {
            break; // cut off mid-line
        }
        match serde_json::from_slice::<ExportLine>(&line) {
            Ok(parsed) => {
                good_end = offset;
                last = Some(parsed);
            }
            Err(_) => break,
        }
    }
    Ok((good_end, last))
}

/// Runs `foldstore export`.
pub(crate) async fn run(
    store_args: &StoreArgs,
    remote: &RemoteArgs,
    args: ExportArgs,
) -> Result<(), CliError> {
    let stream = if args.stream == ALL {
        None
    } else {
        Some(StreamName::new(args.stream.as_str())?)
    };
    let mut from = args.from;
    let out: Box<dyn Write> = match &args.output {
        Some(path) if args.resume && path.exists() => {
            let (end, last) = last_complete_line(path)?;
            if let Some(last) = last {
                from = Some(match stream {
                    None => last.position.as_u128() + 1,
                    Some(_) => u128::from(last.revision) + 1,
                });
            }
            let mut file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| CliError::io(format!("could not open {}", path.display()), e))?;
            file.set_len(end)
                .and_then(|()| file.seek(SeekFrom::Start(end)).map(|_| ()))
                .map_err(|e| CliError::io(format!("could not truncate {}", path.display()), e))?;
            eprintln!(
                "export: resuming {} after {} bytes{}",
                path.display(),
                end,
                from.map(|f| format!(", from {f}")).unwrap_or_default()
            );
            Box::new(BufWriter::with_capacity(1 << 20, file))
        }
        Some(path) => Box::new(BufWriter::with_capacity(
            1 << 20,
            File::create(path)
                .map_err(|e| CliError::io(format!("could not create {}", path.display()), e))?,
        )),
        None => Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout().lock())),
    };
    let endpoint = Endpoint::open(store_args, remote, Access::Existing).await?;
    let result = export(&endpoint, stream.as_ref(), from, out).await;
    endpoint.close().await?;
    let (count, last) = result?;
    eprintln!(
        "export: {count} events written{}",
        last.map(|l| format!(", the last at position {l}"))
            .unwrap_or_default()
    );
    Ok(())
}

async fn export(
    endpoint: &Endpoint,
    stream: Option<&StreamName>,
    mut from: Option<u128>,
    mut out: Box<dyn Write>,
) -> Result<(u64, Option<Position>), CliError> {
    let progress = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} exported {human_pos} events ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let (mut count, mut last) = (0u64, None);
    loop {
        let page = match stream {
            None => {
                endpoint
                    .read_all(
                        from.map(Position::new),
                        Direction::Forwards,
                        PAGE,
                        &EventFilter::all(),
                    )
                    .await?
            }
            Some(s) => {
                let from = from
                    .map(|f| {
                        u64::try_from(f)
                            .map_err(|_| CliError::Usage(format!("--from {f} is not a revision")))
                    })
                    .transpose()?;
                endpoint
                    .read_stream(s, from, Direction::Forwards, PAGE)
                    .await?
            }
        };
        let Some(tail) = page.last() else { break };
        from = Some(match stream {
            None => tail.position.as_u128() + 1,
            Some(_) => u128::from(tail.revision) + 1,
        });
        last = Some(tail.position);
        let mut buffer = Vec::with_capacity(page.len() * 256);
        for event in &page {
            serde_json::to_writer(&mut buffer, &ExportLine::new(event)?)
                .map_err(|e| CliError::io("could not format an event", std::io::Error::other(e)))?;
            buffer.push(b'\n');
        }
        match out.write_all(&buffer) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok((count, last)),
            Err(e) => return Err(CliError::io("could not write the export", e)),
        }
        count += page.len() as u64;
        progress.set_position(count);
        if page.len() < PAGE {
            break;
        }
    }
    out.flush()
        .map_err(|e| CliError::io("could not write the export", e))?;
    progress.finish_and_clear();
    Ok((count, last))
}
