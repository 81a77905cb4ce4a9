//! `foldstore import`: append the events of an NDJSON export, idempotently and
//! resumably.
//!
//! Consecutive events of one stream go in one append (up to `--batch`), with the
//! expected revision the export says the stream was at (`NoStream` before revision
//! 0, `Exact(r - 1)` before revision `r`), so the target gets the same stream
//! revisions. Re-running an import (after an interruption, or twice) appends nothing
//! twice:
//!
//! - an append the store already holds (same ids, same place; for instance one whose
//!   answer was lost) is recognised by its event ids and answered without writing (the
//!   summary counts it as already present: its position is not after the store's head
//!   when the import started, nor after this run's previous append);
//! - a batch refused because the stream is already further along is checked against
//!   the stored events (their ids must be the export's, or the import stops: the target
//!   holds something else), and only what follows is appended.
//!
//! With `--any-revision` revisions are not checked (the events are appended after
//! whatever the target streams hold): then only the event ids keep a re-run from
//! duplicating, so a batch partly stored is retried one event at a time.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use clap::Args;
use foldstore_core::{Direction, ExpectedRevision, Metadata, NewEvent, Position, StreamName};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Access;
use crate::cli::{RemoteArgs, StoreArgs};
use crate::endpoint::{Endpoint, actual_revision, is_duplicate_id};
use crate::error::CliError;

/// Examples in `foldstore import --help`.
pub(crate) const EXAMPLES: &str = "Examples:
  foldstore --data-dir ./copy import backup.ndjson
  foldstore export | foldstore --data-dir ./copy import -
  foldstore --server http://127.0.0.1:2113 import backup.ndjson
  foldstore import merged.ndjson --any-revision

Reads the lines `foldstore export` (or `read`) writes and appends them with the same
ids, streams, revisions, types, data and metadata, showing a progress bar. It is safe
to run again: after an interruption it continues where it stopped, and it never
appends an event twice. A cut-off last line (an interrupted export) stops the import
after everything before it: finish the export with --resume and import again.
Prints a JSON summary: lines read, events appended, events already present.";

/// Options of `foldstore import`.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The NDJSON file; `-` (the default) reads standard input.
    #[arg(value_name = "FILE", default_value = "-")]
    pub(crate) input: PathBuf,
    /// Append after whatever the target streams hold, without checking revisions.
    #[arg(long)]
    pub(crate) any_revision: bool,
    /// Events per append, at most.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) batch: u32,
}

/// The fields of an export line an import uses; others are ignored.
#[derive(Debug, Deserialize)]
struct ImportLine {
    stream: String,
    #[serde(default)]
    revision: Option<u64>,
    id: uuid::Uuid,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    metadata: Option<Box<RawValue>>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    data_base64: Option<String>,
}

/// An event waiting to be appended, with its revision in the export.
struct Pending {
    event: NewEvent,
    revision: Option<u64>,
    line: u64,
}

fn parse_line(line_no: u64, text: &[u8]) -> Result<(String, Pending), CliError> {
    use base64::Engine;
    let bad = |what: String| CliError::Protocol(format!("line {line_no}: {what}"));
    let line: ImportLine =
        serde_json::from_slice(text).map_err(|e| bad(format!("not an exported event: {e}")))?;
    let data = match (&line.data, &line.data_base64) {
        (Some(raw), None) => raw.get().as_bytes().to_vec(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| bad(format!("data_base64 is not base64: {e}")))?,
        _ => return Err(bad("give exactly one of data and data_base64".to_owned())),
    };
    let content_type = line
        .content_type
        .unwrap_or_else(|| foldstore_core::JSON.to_owned());
    let mut event = NewEvent::raw(line.event_type, data, content_type).with_id(line.id);
    if let Some(m) = &line.metadata {
        event = event.with_metadata(Metadata::from_json(m.get()).map_err(|e| bad(e.to_string()))?);
    }
    Ok((
        line.stream,
        Pending {
            event,
            revision: line.revision,
            line: line_no,
        },
    ))
}

/// What the import did.
#[derive(Debug, Default, serde::Serialize)]
struct Summary {
    /// Lines read (events in the file).
    lines: u64,
    /// Events appended by this run.
    appended: u64,
    /// Events found already in the target and skipped.
    already_present: u64,
}

struct Importer<'a> {
    endpoint: &'a Endpoint,
    any_revision: bool,
    summary: Summary,
    /// The greatest position known to be stored before the next append: an append
    /// answered with a position at or below it wrote nothing (an idempotent retry).
    high_water: Option<Position>,
}

impl Importer<'_> {
    /// Counts an acknowledged append of `n` events answered with `position`.
    fn acknowledged(&mut self, n: usize, position: Position) {
        if self.high_water.is_some_and(|h| position <= h) {
            self.summary.already_present += n as u64;
        } else {
            self.summary.appended += n as u64;
            self.high_water = Some(position);
        }
    }
}

impl Importer<'_> {
    async fn flush(&mut self, stream: &str, mut batch: Vec<Pending>) -> Result<(), CliError> {
        if batch.is_empty() {
            return Ok(());
        }
        let name = StreamName::new(stream)?;
        if self.any_revision {
            return self.flush_any(&name, batch).await;
        }
        let Some(mut first) = batch[0].revision else {
            return Err(CliError::Protocol(format!(
                "line {}: no revision: pass --any-revision to import events without revisions",
                batch[0].line
            )));
        };
        loop {
            let expected = match first {
                0 => ExpectedRevision::NoStream,
                r => ExpectedRevision::Exact(r - 1),
            };
            let events = batch.iter().map(|p| p.event.clone()).collect();
            match self.endpoint.append(&name, expected, events).await {
                Ok(r) => {
                    self.acknowledged(batch.len(), r.position);
                    return Ok(());
                }
                Err(e) => {
                    let Some(actual) = actual_revision(&e) else {
                        return Err(e);
                    };
                    let next = actual.map_or(0, |a| a + 1);
                    if next <= first {
                        return Err(CliError::Protocol(format!(
                            "line {}: stream {stream} is at revision {} in the target, but the export continues at revision {first}: import the export from its start, or pass --any-revision",
                            batch[0].line,
                            actual.map_or("none (no stream)".to_owned(), |a| a.to_string()),
                        )));
                    }
                    let stored = usize::try_from(next - first)
                        .unwrap_or(usize::MAX)
                        .min(batch.len());
                    self.check_stored(&name, first, &batch[..stored]).await?;
                    self.summary.already_present += stored as u64;
                    batch.drain(..stored);
                    if batch.is_empty() {
                        return Ok(());
                    }
                    first += stored as u64;
                }
            }
        }
    }

    /// Checks that the target holds exactly `batch`'s events from revision `first`.
    async fn check_stored(
        &self,
        name: &StreamName,
        first: u64,
        batch: &[Pending],
    ) -> Result<(), CliError> {
        let stored = self
            .endpoint
            .read_stream(name, Some(first), Direction::Forwards, batch.len())
            .await?;
        for (p, s) in batch.iter().zip(&stored) {
            if p.event.id != s.id || Some(s.revision) != p.revision {
                return Err(CliError::Protocol(format!(
                    "line {}: stream {} already holds event {} at revision {}, not this export's {}: import into a fresh store, or pass --any-revision",
                    p.line,
                    name.as_str(),
                    s.id,
                    s.revision,
                    p.event.id
                )));
            }
        }
        if stored.len() < batch.len() {
            return Err(CliError::Protocol(format!(
                "line {}: stream {} is further along than its readable events (deleted or truncated?): import into a fresh store, or pass --any-revision",
                batch[0].line,
                name.as_str()
            )));
        }
        Ok(())
    }

    async fn flush_any(&mut self, name: &StreamName, batch: Vec<Pending>) -> Result<(), CliError> {
        let events: Vec<NewEvent> = batch.iter().map(|p| p.event.clone()).collect();
        match self
            .endpoint
            .append(name, ExpectedRevision::Any, events)
            .await
        {
            Ok(r) => {
                self.acknowledged(batch.len(), r.position);
                Ok(())
            }
            Err(e) if is_duplicate_id(&e) && batch.len() > 1 => {
                // Part of the batch is stored (an earlier run stopped in the middle of
                // what is one batch now): one event at a time, each a retry or new.
                for p in batch {
                    let r = self
                        .endpoint
                        .append(name, ExpectedRevision::Any, vec![p.event])
                        .await?;
                    self.acknowledged(1, r.position);
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Runs `foldstore import`.
pub(crate) async fn run(
    store_args: &StoreArgs,
    remote: &RemoteArgs,
    args: ImportArgs,
) -> Result<(), CliError> {
    let (reader, size): (Box<dyn Read>, Option<u64>) = if args.input.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let file = std::fs::File::open(&args.input)
            .map_err(|e| CliError::io(format!("could not open {}", args.input.display()), e))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let progress = match size {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg} ({eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} read {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    let endpoint = Endpoint::open(store_args, remote, Access::Create).await?;
    let high_water = match endpoint.head_position().await {
        Ok(head) => head,
        Err(e) => {
            endpoint.close().await?;
            return Err(e);
        }
    };
    let mut importer = Importer {
        endpoint: &endpoint,
        any_revision: args.any_revision,
        summary: Summary::default(),
        high_water,
    };
    let result = import(&mut importer, reader, args.batch as usize, &progress).await;
    let summary = std::mem::take(&mut importer.summary);
    progress.finish_and_clear();
    endpoint.close().await?;
    let summary_json = serde_json::to_string(&summary)
        .map_err(|e| CliError::io("could not print the summary", std::io::Error::other(e)))?;
    match result {
        Ok(()) => {
            println!("{summary_json}");
            Ok(())
        }
        Err(e) => {
            eprintln!("import: stopped after {summary_json}");
            Err(e)
        }
    }
}

/// Most bytes of event data in one append.
const BATCH_BYTES: usize = 4 << 20;

async fn import(
    importer: &mut Importer<'_>,
    reader: Box<dyn Read>,
    batch_size: usize,
    progress: &ProgressBar,
) -> Result<(), CliError> {
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let mut text = Vec::new();
    let mut line_no = 0u64;
    let mut stream = String::new();
    let mut batch: Vec<Pending> = Vec::new();
    let mut batch_bytes = 0usize;
    loop {
        text.clear();
        let n = reader
            .read_until(b'\n', &mut text)
            .map_err(|e| CliError::io("could not read the input", e))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        progress.inc(n as u64);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let complete = text.last() == Some(&b'\n');
        let parsed = parse_line(line_no, &text);
        let (line_stream, pending) = match parsed {
            Ok(p) => p,
            Err(e) => {
                // Import what came before, then say where the input broke off.
                importer.flush(&stream, std::mem::take(&mut batch)).await?;
                return Err(if complete {
                    e
                } else {
                    CliError::Protocol(format!(
                        "line {line_no} is cut off (an interrupted export?): everything before it was imported; complete the file (`foldstore export --resume`) and run the import again"
                    ))
                });
            }
        };
        importer.summary.lines += 1;
        let follows = batch.last().is_some_and(|last| {
            line_stream == stream
                && match (last.revision, pending.revision) {
                    (Some(a), Some(b)) => b == a + 1,
                    _ => importer.any_revision,
                }
        });
        let size = pending.event.data.len() + pending.event.metadata.as_str().len();
        if !follows || batch.len() >= batch_size || batch_bytes + size > BATCH_BYTES {
            importer.flush(&stream, std::mem::take(&mut batch)).await?;
            batch_bytes = 0;
            progress.set_message(format!(
                "{} appended, {} already present",
                importer.summary.appended, importer.summary.already_present
            ));
        }
        stream = line_stream;
        batch_bytes += size;
        batch.push(pending);
    }
    importer.flush(&stream, batch).await
}
