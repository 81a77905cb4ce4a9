//! What a data command talks to: a store opened in this process, or a running server
//! (`--server`). Both answer with the core's types, so the commands print the same
//! lines either way.

use foldstore_core::{
    AppendError, AppendResult, CurrentRevision, Direction, EventFilter, ExpectedRevision, NewEvent,
    Position, ReadAllOptions, ReadStreamOptions, RecordedEvent, StreamName, SubscribeFrom,
    SubscribeStreamFrom,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;

use crate::backend::{self, Store};
use crate::cli::{RemoteArgs, StoreArgs};
use crate::commands::{Access, open_store};
use crate::error::CliError;
use crate::remote::{self, Remote};

/// A store in this process, or a server.
pub(crate) enum Endpoint {
    /// The store the global options point at, opened here.
    Local(Store),
    /// A running `foldstore serve`.
    Remote(Remote),
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StartAt {
    /// The first event.
    Start,
    /// Only events appended from now on.
    End,
    /// At this position (`$all`) or revision (a stream), inclusive.
    At(u128),
}

impl Endpoint {
    /// The server when `--server` is given, else the local store.
    pub(crate) async fn open(
        store: &StoreArgs,
        remote: &RemoteArgs,
        access: Access,
    ) -> Result<Self, CliError> {
        match &remote.server {
            Some(url) => Ok(Endpoint::Remote(Remote::new(
                url,
                remote.token.clone(),
                remote.ca_cert.as_deref(),
            )?)),
            None => Ok(Endpoint::Local(open_store(store, access).await?)),
        }
    }

    /// Closes a local store (finishing queued writes); nothing for a server.
    pub(crate) async fn close(self) -> Result<(), CliError> {
        match self {
            Endpoint::Local(store) => backend::close(store).await,
            Endpoint::Remote(_) => Ok(()),
        }
    }

    /// Appends `events`.
    pub(crate) async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, CliError> {
        match self {
            Endpoint::Local(store) => Ok(store.append(stream, expected, events).await?),
            Endpoint::Remote(r) => r.append(stream, expected, &events).await,
        }
    }

    /// One page of a stream.
    pub(crate) async fn read_stream(
        &self,
        stream: &StreamName,
        from: Option<u64>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, CliError> {
        match self {
            Endpoint::Local(store) => {
                let mut opts = ReadStreamOptions::forwards().max_count(limit);
                opts.direction = direction;
                opts.from = from;
                Ok(store.read_stream(stream, opts).await?)
            }
            Endpoint::Remote(r) => r.read_stream(stream, from, direction, limit).await,
        }
    }

    /// One page of `$all`.
    pub(crate) async fn read_all(
        &self,
        from: Option<Position>,
        direction: Direction,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, CliError> {
        match self {
            Endpoint::Local(store) => {
                let mut opts = ReadAllOptions::forwards()
                    .max_count(limit)
                    .filter(filter.clone());
                opts.direction = direction;
                opts.from = from;
                Ok(store.read_all(opts).await?)
            }
            Endpoint::Remote(r) => r.read_all(from, direction, limit, filter).await,
        }
    }

    /// The position of the last event in the store.
    pub(crate) async fn head_position(&self) -> Result<Option<Position>, CliError> {
        match self {
            Endpoint::Local(store) => Ok(store.head_position().await?),
            Endpoint::Remote(r) => r.head_position().await,
        }
    }

    /// Soft-deletes or tombstones a stream.
    pub(crate) async fn delete(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        tombstone: bool,
    ) -> Result<(), CliError> {
        match self {
            Endpoint::Local(store) => store.delete(stream, expected, tombstone).await,
            Endpoint::Remote(r) => r.delete(stream, expected, tombstone).await,
        }
    }

    /// Follows `$all` (with `filter`) or one stream, live.
    pub(crate) async fn subscribe(
        &self,
        stream: Option<&StreamName>,
        from: StartAt,
        filter: &EventFilter,
    ) -> Result<BoxStream<'static, Result<RecordedEvent, CliError>>, CliError> {
        match self {
            Endpoint::Local(store) => {
                let subscription = match stream {
                    None => {
                        let from = match from {
                            StartAt::Start | StartAt::At(0) => SubscribeFrom::Start,
                            StartAt::End => SubscribeFrom::End,
                            StartAt::At(p) => SubscribeFrom::After(Position::new(p - 1)),
                        };
                        store.subscribe_to_all(from, filter.clone()).await?
                    }
                    Some(s) => {
                        let from = match from {
                            StartAt::Start | StartAt::At(0) => SubscribeStreamFrom::Start,
                            StartAt::End => SubscribeStreamFrom::End,
                            StartAt::At(r) => {
                                let r = u64::try_from(r).map_err(|_| {
                                    CliError::Usage(format!("--from {r} is not a revision"))
                                })?;
                                SubscribeStreamFrom::After(r - 1)
                            }
                        };
                        store.subscribe_to_stream(s, from).await?
                    }
                };
                Ok(subscription.map(|e| e.map_err(CliError::from)).boxed())
            }
            Endpoint::Remote(r) => {
                let from = match from {
                    StartAt::Start => "start".to_owned(),
                    // `$all` from the current head, as a position: should the first
                    // connection drop before any event arrives, the reconnect then
                    // resumes from the same place instead of from a later "end".
                    StartAt::End if stream.is_none() => match r.head_position().await? {
                        Some(head) => head.next().to_string(),
                        None => "start".to_owned(),
                    },
                    StartAt::End => "end".to_owned(),
                    StartAt::At(n) => n.to_string(),
                };
                let path = match stream {
                    None => "/all/subscribe".to_owned(),
                    Some(s) => format!("/streams/{}/subscribe", remote::segment(s.as_str())),
                };
                Ok(r.subscribe(path, from, filter))
            }
        }
    }
}

/// The stream's revision named by a wrong-expected-revision refusal, local or remote:
/// `Some(None)` when the stream does not exist, `None` for any other error.
pub(crate) fn actual_revision(error: &CliError) -> Option<Option<u64>> {
    match error {
        CliError::Append(AppendError::WrongExpectedRevision { actual, .. }) => Some(match actual {
            CurrentRevision::NoStream => None,
            CurrentRevision::Current(n) => Some(*n),
        }),
        CliError::Remote { code, body, .. } if code == "wrong_expected_revision" => {
            match &body["actual"] {
                Value::Number(n) => n.as_u64().map(Some),
                _ => Some(None),
            }
        }
        _ => None,
    }
}

/// Whether `error` is a duplicate-event-id refusal (ids stored elsewhere or in part).
pub(crate) fn is_duplicate_id(error: &CliError) -> bool {
    match error {
        CliError::Append(AppendError::DuplicateEventId { .. }) => true,
        CliError::Remote { code, .. } => code == "duplicate_event_id",
        _ => false,
    }
}
