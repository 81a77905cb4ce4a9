//! The `Streams` service: appends, deletes and tombstones here, reads and
//! subscriptions in [`crate::read`].

use std::sync::Arc;

use foldstore_core::{
    AppendError, CurrentRevision, EventStore, ExpectedRevision, NewEvent, ReadError,
    ReadStreamOptions, StreamName,
};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Caller, Need};
use crate::batch;
use crate::error::{self, invalid_argument};
use crate::metastream;
use crate::proto::event_store::client::Empty;
use crate::proto::event_store::client::streams::streams_server::Streams;
use crate::proto::event_store::client::streams::{
    AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, DeleteReq, DeleteResp, ReadReq,
    TombstoneReq, TombstoneResp, append_req, append_resp, delete_req, delete_resp, tombstone_req,
    tombstone_resp,
};
use crate::read::{self, ReadStream};
use crate::wire;

/// Our expected revision from a request's `expected_stream_revision`: each request has
/// its own generated enum of the same shape (`exact` names its revision variant); none
/// means any.
macro_rules! expected_revision {
    ($value:expr, $E:ident :: $exact:ident) => {
        match $value {
            Some($E::$exact(n)) => ExpectedRevision::Exact(n),
            Some($E::NoStream(_)) => ExpectedRevision::NoStream,
            Some($E::StreamExists(_)) => ExpectedRevision::StreamExists,
            Some($E::Any(_)) | None => ExpectedRevision::Any,
        }
    };
}
pub(crate) use expected_revision;

/// The streams service over one store.
#[derive(Clone)]
pub(crate) struct StreamsService {
    store: Arc<dyn EventStore>,
}

impl StreamsService {
    pub(crate) fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl Streams for StreamsService {
    type ReadStream = ReadStream;
    type BatchAppendStream = futures::stream::BoxStream<'static, Result<BatchAppendResp, Status>>;

    async fn read(&self, request: Request<ReadReq>) -> Result<Response<ReadStream>, Status> {
        let caller = Caller::of(&request)?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| invalid_argument("a read request needs options"))?;
        Ok(Response::new(
            read::read(self.store.clone(), options, caller).await?,
        ))
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendReq>>,
    ) -> Result<Response<AppendResp>, Status> {
        let caller = Caller::of(&request)?;
        let mut messages = request.into_inner();
        let Some(append_req::Content::Options(options)) =
            messages.message().await?.and_then(|m| m.content)
        else {
            return Err(invalid_argument(
                "an append starts with its options (stream and expected revision)",
            ));
        };
        let metastream = metastream::target(options.stream_identifier.as_ref())?;
        let stream = match &metastream {
            Some(stream) => {
                caller.check(Need::Admin, Some(stream))?;
                stream.clone()
            }
            None => {
                let stream = wire::stream_name(options.stream_identifier.as_ref())?;
                caller.check(Need::Write, Some(&stream))?;
                stream
            }
        };
        use append_req::options::ExpectedStreamRevision as E;
        let expected = expected_revision!(options.expected_stream_revision, E::Revision);
        let mut events = Vec::new();
        while let Some(message) = messages.message().await? {
            match message.content {
                Some(append_req::Content::ProposedMessage(m)) => {
                    let proposed = Proposed {
                        id: m.id,
                        metadata: m.metadata,
                        custom_metadata: m.custom_metadata,
                        data: m.data,
                    };
                    events.push(new_event(events.len(), proposed)?);
                }
                _ => {
                    return Err(invalid_argument(
                        "an append sends its options once, then only proposed messages",
                    ));
                }
            }
        }
        if metastream.is_some() {
            return Ok(Response::new(
                metastream::append(self.store.clone(), &stream, expected, events).await?,
            ));
        }
        if events.is_empty() {
            let current = current_revision(&*self.store, &stream).await?;
            return Ok(Response::new(if expected.matches(current) {
                success(current, None)
            } else {
                wrong_expected_version(expected, current)
            }));
        }
        let result = match self.store.append(&stream, expected, events).await {
            Ok(r) => success(
                CurrentRevision::Current(r.next_expected_revision),
                Some(r.position),
            ),
            Err(AppendError::WrongExpectedRevision {
                expected, actual, ..
            }) => wrong_expected_version(expected, actual),
            Err(e) => return Err(error::append(e)),
        };
        Ok(Response::new(result))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        let caller = Caller::of(&request)?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| invalid_argument("a delete request needs options"))?;
        let stream = wire::stream_name(options.stream_identifier.as_ref())?;
        caller.check(Need::Admin, Some(&stream))?;
        use delete_req::options::ExpectedStreamRevision as E;
        let expected = expected_revision!(options.expected_stream_revision, E::Revision);
        self.store
            .delete_stream(&stream, expected)
            .await
            .map_err(error::delete)?;
        Ok(Response::new(DeleteResp {
            position_option: Some(delete_resp::PositionOption::NoPosition(Empty {})),
        }))
    }

    async fn tombstone(
        &self,
        request: Request<TombstoneReq>,
    ) -> Result<Response<TombstoneResp>, Status> {
        let caller = Caller::of(&request)?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| invalid_argument("a tombstone request needs options"))?;
        let stream = wire::stream_name(options.stream_identifier.as_ref())?;
        caller.check(Need::Admin, Some(&stream))?;
        use tombstone_req::options::ExpectedStreamRevision as E;
        let expected = expected_revision!(options.expected_stream_revision, E::Revision);
        self.store
            .tombstone_stream(&stream, expected)
            .await
            .map_err(error::delete)?;
        Ok(Response::new(TombstoneResp {
            position_option: Some(tombstone_resp::PositionOption::NoPosition(Empty {})),
        }))
    }

    async fn batch_append(
        &self,
        request: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(batch::serve(
            self.store.clone(),
            caller,
            request.into_inner(),
        )))
    }
}

/// A proposed message of `Append` or `BatchAppend` (the same fields in two types).
pub(crate) struct Proposed {
    pub(crate) id: Option<crate::proto::event_store::client::Uuid>,
    pub(crate) metadata: std::collections::BTreeMap<String, String>,
    pub(crate) custom_metadata: bytes::Bytes,
    pub(crate) data: bytes::Bytes,
}

/// A proposed message as our event: `type` and `content-type` are required metadata;
/// `application/json` data must be JSON, any other content type is kept as bytes.
pub(crate) fn new_event(index: usize, message: Proposed) -> Result<NewEvent, Status> {
    let id = wire::event_id(message.id)?;
    let mut metadata = message.metadata;
    let (Some(event_type), Some(content_type)) =
        (metadata.remove("type"), metadata.remove("content-type"))
    else {
        let mut status = invalid_argument(format!(
            "event {index} of the append lacks the metadata key `type` or `content-type`: send both"
        ));
        status.metadata_mut().insert(
            "exception",
            tonic::metadata::MetadataValue::from_static("missing-required-metadata-property"),
        );
        return Err(status);
    };
    Ok(NewEvent::raw(event_type, message.data, content_type)
        .with_id(id)
        .with_metadata(wire::metadata_from_custom(&message.custom_metadata)))
}

/// The stream's current revision, as an append would see it.
async fn current_revision(
    store: &dyn EventStore,
    stream: &StreamName,
) -> Result<CurrentRevision, Status> {
    match store
        .read_stream(stream, ReadStreamOptions::backwards().max_count(1))
        .await
    {
        Ok(events) => Ok(events.first().map_or(CurrentRevision::NoStream, |e| {
            CurrentRevision::Current(e.revision)
        })),
        Err(ReadError::StreamNotFound { .. }) => Ok(CurrentRevision::NoStream),
        Err(e) => Err(error::read(e)),
    }
}

pub(crate) fn success(
    current: CurrentRevision,
    position: Option<foldstore_core::Position>,
) -> AppendResp {
    use append_resp::success::{CurrentRevisionOption, PositionOption};
    let current_revision_option = Some(match current {
        CurrentRevision::Current(n) => CurrentRevisionOption::CurrentRevision(n),
        CurrentRevision::NoStream => CurrentRevisionOption::NoStream(Empty {}),
    });
    let position_option = Some(match position {
        Some(p) => {
            let (commit_position, prepare_position) = wire::wire_position(p);
            PositionOption::Position(append_resp::Position {
                commit_position,
                prepare_position,
            })
        }
        None => PositionOption::NoPosition(Empty {}),
    });
    AppendResp {
        result: Some(append_resp::Result::Success(append_resp::Success {
            current_revision_option,
            position_option,
        })),
    }
}

/// A wrong expected revision is a result of the append, not an error.
pub(crate) fn wrong_expected_version(
    expected: ExpectedRevision,
    actual: CurrentRevision,
) -> AppendResp {
    use append_resp::wrong_expected_version::{
        CurrentRevisionOption as Current, CurrentRevisionOption2060 as Current2060,
        ExpectedRevisionOption as Expected, ExpectedRevisionOption2060 as Expected2060,
    };
    let (current, current_2060) = match actual {
        CurrentRevision::Current(n) => (
            Current::CurrentRevision(n),
            Current2060::CurrentRevision2060(n),
        ),
        CurrentRevision::NoStream => (
            Current::CurrentNoStream(Empty {}),
            Current2060::NoStream2060(Empty {}),
        ),
    };
    let (expected_now, expected_2060) = match expected {
        ExpectedRevision::Exact(n) => (
            Expected::ExpectedRevision(n),
            Some(Expected2060::ExpectedRevision2060(n)),
        ),
        ExpectedRevision::Any => (
            Expected::ExpectedAny(Empty {}),
            Some(Expected2060::Any2060(Empty {})),
        ),
        ExpectedRevision::StreamExists => (
            Expected::ExpectedStreamExists(Empty {}),
            Some(Expected2060::StreamExists2060(Empty {})),
        ),
        ExpectedRevision::NoStream => (Expected::ExpectedNoStream(Empty {}), None),
    };
    AppendResp {
        result: Some(append_resp::Result::WrongExpectedVersion(
            append_resp::WrongExpectedVersion {
                current_revision_option_20_6_0: Some(current_2060),
                expected_revision_option_20_6_0: expected_2060,
                current_revision_option: Some(current),
                expected_revision_option: Some(expected_now),
            },
        )),
    }
}
