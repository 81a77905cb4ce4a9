//! `foldstore append`: one event, result printed as JSON.

use std::io::{IsTerminal, Read};

use foldstore_core::{Metadata, NewEvent, StreamName};

use super::Access;
use crate::cli::{AppendArgs, RemoteArgs, StoreArgs};
use crate::endpoint::Endpoint;
use crate::error::CliError;

/// Runs `foldstore append`.
pub(crate) async fn run(
    store_args: &StoreArgs,
    remote: &RemoteArgs,
    args: AppendArgs,
) -> Result<(), CliError> {
    let stream = StreamName::new(args.stream.as_str())?;
    let data = event_data(&args)?;
    let mut event = NewEvent::raw(args.event_type, data, args.content_type);
    if let Some(id) = args.id {
        event = event.with_id(id);
    }
    if let Some(metadata) = &args.metadata {
        event = event.with_metadata(Metadata::from_json(metadata)?);
    }
    let endpoint = Endpoint::open(store_args, remote, Access::Create).await?;
    let result = endpoint
        .append(&stream, args.expected_revision, vec![event])
        .await;
    endpoint.close().await?;
    let result = result?;
    let json = serde_json::to_string(&result)
        .map_err(|e| CliError::io("could not print the result", std::io::Error::other(e)))?;
    println!("{json}");
    Ok(())
}

/// The data from `--data`, `--data-file` or standard input.
fn event_data(args: &AppendArgs) -> Result<Vec<u8>, CliError> {
    if let Some(data) = &args.data {
        return Ok(data.clone().into_bytes());
    }
    if let Some(file) = &args.data_file {
        return std::fs::read(file)
            .map_err(|e| CliError::io(format!("could not read {}", file.display()), e));
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(CliError::Usage(
            "no event data: pass --data '<JSON>', --data-file FILE, or pipe the data on standard input".to_owned(),
        ));
    }
    let mut data = Vec::new();
    stdin
        .lock()
        .read_to_end(&mut data)
        .map_err(|e| CliError::io("could not read standard input", e))?;
    if data.is_empty() {
        return Err(CliError::Usage(
            "standard input was empty: pass --data '<JSON>', --data-file FILE, or pipe the event data in".to_owned(),
        ));
    }
    Ok(data)
}
