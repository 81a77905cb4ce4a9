//! `foldstore delete`: soft-delete or tombstone a stream.

use clap::Args;
use foldstore_core::{ExpectedRevision, StreamName};

use super::Access;
use crate::cli::{RemoteArgs, StoreArgs, parse_expected_revision};
use crate::endpoint::Endpoint;
use crate::error::CliError;

/// Examples in `foldstore delete --help`.
pub(crate) const EXAMPLES: &str = "Examples:
  foldstore delete account-42
  foldstore delete account-42 --expected-revision 7
  foldstore delete account-42 --tombstone
  foldstore --server http://127.0.0.1:2113 delete account-42

A soft delete hides the stream from reads; a later append starts again after its last
revision. --tombstone deletes it for good: every later append or read of it fails.
The events stay in $all either way. Over a server this needs a token with the admin
scope.";

/// Options of `foldstore delete`.
#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The stream to delete.
    #[arg(value_name = "STREAM")]
    pub(crate) stream: String,
    /// Tombstone: the stream can never be written or read again.
    #[arg(long)]
    pub(crate) tombstone: bool,
    /// What the stream must be at: `any`, `no_stream`, `stream_exists` or a revision.
    #[arg(long, default_value = "any", value_parser = parse_expected_revision, value_name = "REVISION")]
    pub(crate) expected_revision: ExpectedRevision,
}

/// Runs `foldstore delete`.
pub(crate) async fn run(
    store_args: &StoreArgs,
    remote: &RemoteArgs,
    args: DeleteArgs,
) -> Result<(), CliError> {
    let stream = StreamName::new(args.stream.as_str())?;
    let endpoint = Endpoint::open(store_args, remote, Access::Existing).await?;
    let result = endpoint
        .delete(&stream, args.expected_revision, args.tombstone)
        .await;
    endpoint.close().await?;
    result?;
    println!(
        "{}",
        serde_json::json!({"stream": stream.as_str(), "deleted": true, "tombstoned": args.tombstone})
    );
    Ok(())
}
