//! `foldstore tail`: follow a stream or `$all` live, one JSON line per event.

use clap::Args;
use foldstore_core::{EventFilter, StreamName, validate_category};
use futures::StreamExt;

use super::Access;
use super::read::{ALL, EventLine, write_stdout};
use crate::cli::{RemoteArgs, StoreArgs};
use crate::endpoint::{Endpoint, StartAt};
use crate::error::CliError;

/// Examples in `foldstore tail --help`.
pub(crate) const EXAMPLES: &str = "Examples:
  foldstore tail '$all'
  foldstore tail '$all' --category account --type Deposited
  foldstore tail account-42 --from start
  foldstore --server http://127.0.0.1:2113 tail '$all' --from 1000 --count 10

Prints the same JSON lines as `read`. By default it starts with the next event
appended; --from start replays everything first, --from N starts at position N ($all)
or revision N (a stream). Against a server it reads server-sent events and, if the
connection drops, resumes after the last event received (no gap, no duplicate).
Ctrl-C stops it.";

/// Options of `foldstore tail`.
#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// The stream to follow, or `$all`.
    #[arg(value_name = "STREAM|$all", default_value = ALL)]
    pub(crate) stream: String,
    /// Where to start: `end` (new events only), `start`, or a position / revision.
    #[arg(long, default_value = "end", value_name = "end|start|N")]
    pub(crate) from: String,
    /// Only events of streams in this category (`$all` only).
    #[arg(long, value_name = "CATEGORY")]
    pub(crate) category: Option<String>,
    /// Only events of streams whose name starts with this (`$all` only).
    #[arg(long, value_name = "PREFIX")]
    pub(crate) prefix: Option<String>,
    /// Only events of this type; repeat for several.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) event_types: Vec<String>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub(crate) count: Option<u64>,
}

fn start_at(text: &str) -> Result<StartAt, CliError> {
    match text {
        "end" => Ok(StartAt::End),
        "start" => Ok(StartAt::Start),
        n => n.parse().map(StartAt::At).map_err(|_| {
            CliError::Usage(format!(
                "--from {n:?}: use end, start, or a position ($all) / revision (a stream)"
            ))
        }),
    }
}

/// Runs `foldstore tail`.
pub(crate) async fn run(
    store_args: &StoreArgs,
    remote: &RemoteArgs,
    args: TailArgs,
) -> Result<(), CliError> {
    let from = start_at(&args.from)?;
    let stream = if args.stream == ALL {
        None
    } else {
        if args.category.is_some() || args.prefix.is_some() {
            return Err(CliError::Usage(
                "--category and --prefix filter `$all`: tail '$all' --category C".to_owned(),
            ));
        }
        Some(StreamName::new(args.stream.as_str())?)
    };
    let mut filter = EventFilter::all().with_types(args.event_types.clone());
    if let Some(c) = &args.category {
        validate_category(c)?;
        filter.category = Some(c.clone());
    }
    filter.stream_prefix = args.prefix.clone();
    let endpoint = Endpoint::open(store_args, remote, Access::Create).await?;
    let result = follow(&endpoint, stream.as_ref(), from, &filter, &args).await;
    endpoint.close().await?;
    result
}

async fn follow(
    endpoint: &Endpoint,
    stream: Option<&StreamName>,
    from: StartAt,
    filter: &EventFilter,
    args: &TailArgs,
) -> Result<(), CliError> {
    let mut events = endpoint.subscribe(stream, from, filter).await?;
    let mut printed = 0u64;
    let limit = args.count.unwrap_or(u64::MAX);
    while printed < limit {
        let event = tokio::select! {
            next = events.next() => next,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(event) = event else { return Ok(()) };
        let event = event?;
        // A stream subscription has no server-side type filter.
        if stream.is_some()
            && !args.event_types.is_empty()
            && !args.event_types.contains(&event.event_type)
        {
            continue;
        }
        let mut line = serde_json::to_vec(&EventLine::new(&event))
            .map_err(|e| CliError::io("could not format an event", std::io::Error::other(e)))?;
        line.push(b'\n');
        if !write_stdout(&line)? {
            return Ok(());
        }
        printed += 1;
    }
    Ok(())
}
