//! `Streams.BatchAppend`: a bidirectional stream of appends, each named by a
//! correlation id and sent in one or more chunks (the first carries the options, the
//! last says `is_final`), each answered once, with its result or its error, as soon as
//! it is done. Appends of different correlation ids run concurrently.
//!
//! Deadlines: `deadline_21_10_0` is a point in time; `deadline` (listed as the
//! `deadline_duration` feature) is a duration from when the request arrives. The Rust
//! client sends its point in time in `deadline` as the duration since the Unix epoch,
//! so a duration longer than [`ABSOLUTE_AFTER`] is read as a point in time too. An
//! append not done by its deadline is answered `DeadlineExceeded` (it may still have
//! been written: repeating it with the same event ids is idempotent). Without a
//! deadline, an append has [`DEFAULT_DEADLINE`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use foldstore_core::{
    AppendError, CurrentRevision, EventStore, ExpectedRevision, NewEvent, StreamName,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Code, Status, Streaming};

use crate::auth::{Caller, Need};
use crate::error;
use crate::proto::event_store::client::streams::{
    BatchAppendReq, BatchAppendResp, batch_append_req, batch_append_resp,
};
use crate::proto::event_store::client::{
    AllStreamPosition, Empty, StreamDeleted, StreamIdentifier, Uuid, WrongExpectedVersion,
    wrong_expected_version,
};
use crate::proto::google::rpc;
use crate::streams::{Proposed, expected_revision, new_event};
use crate::wire;

/// A `deadline` duration longer than this is a point in time (since the Unix epoch).
const ABSOLUTE_AFTER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The deadline of an append whose options give none.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// How many answers wait for a client that does not read.
const ANSWERS: usize = 64;

/// One append being received.
struct Pending {
    correlation: Uuid,
    /// Whether the append writes the stream's metastream (`$$<stream>`).
    metastream: bool,
    stream: StreamName,
    expected: ExpectedRevision,
    deadline: Instant,
    events: Vec<NewEvent>,
}

/// The answers of one call.
type Answers = mpsc::Sender<Result<BatchAppendResp, Status>>;

/// Serves one `BatchAppend` call.
pub(crate) fn serve(
    store: Arc<dyn EventStore>,
    caller: Caller,
    mut requests: Streaming<BatchAppendReq>,
) -> futures::stream::BoxStream<'static, Result<BatchAppendResp, Status>> {
    let (tx, rx) = mpsc::channel(ANSWERS);
    tokio::spawn(async move {
        // Appends being received, and those refused before their last chunk (whose
        // further chunks are ignored: they were answered once already).
        let mut pending: HashMap<uuid::Uuid, Pending> = HashMap::new();
        let mut refused: HashSet<uuid::Uuid> = HashSet::new();
        loop {
            let request = tokio::select! {
                () = tx.closed() => return,
                request = requests.message() => request,
            };
            let request = match request {
                Ok(Some(request)) => request,
                // The client is done sending; appends in flight still answer.
                Ok(None) => return,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let Some(correlation) = request.correlation_id.clone() else {
                let status =
                    error::invalid_argument("every BatchAppend request carries a correlation id");
                let _ = tx.send(Err(status)).await;
                return;
            };
            let key = match wire::event_id(Some(correlation.clone())) {
                Ok(key) => key,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let is_final = request.is_final;
            if refused.contains(&key) {
                if is_final {
                    refused.remove(&key);
                }
                continue;
            }
            match receive(&mut pending, &caller, key, correlation.clone(), request) {
                Ok(()) if is_final => {
                    if let Some(append) = pending.remove(&key) {
                        tokio::spawn(run(store.clone(), append, tx.clone()));
                    }
                }
                Ok(()) => {}
                Err(status) => {
                    pending.remove(&key);
                    if !is_final {
                        refused.insert(key);
                    }
                    if tx.send(Ok(failure(correlation, &status))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) }).boxed()
}

/// Adds one request's chunk to its append.
fn receive(
    pending: &mut HashMap<uuid::Uuid, Pending>,
    caller: &Caller,
    key: uuid::Uuid,
    correlation: Uuid,
    request: BatchAppendReq,
) -> Result<(), Status> {
    if let Some(options) = request.options {
        if pending.contains_key(&key) {
            return Err(error::invalid_argument(
                "a BatchAppend sends its options in the first chunk of a correlation id only",
            ));
        }
        let meta = crate::metastream::target(options.stream_identifier.as_ref())?;
        let metastream = meta.is_some();
        let stream = match meta {
            Some(stream) => {
                caller.check(Need::Admin, Some(&stream))?;
                stream
            }
            None => {
                let stream = wire::stream_name(options.stream_identifier.as_ref())?;
                caller.check(Need::Write, Some(&stream))?;
                stream
            }
        };
        use batch_append_req::options::{DeadlineOption, ExpectedStreamPosition as E};
        let expected = expected_revision!(options.expected_stream_position, E::StreamPosition);
        let deadline = match options.deadline_option {
            Some(DeadlineOption::Deadline21100(at)) => at_time(at.seconds, at.nanos),
            Some(DeadlineOption::Deadline(d)) => {
                let since_epoch = Duration::new(
                    u64::try_from(d.seconds).unwrap_or(0),
                    u32::try_from(d.nanos).unwrap_or(0),
                );
                if since_epoch > ABSOLUTE_AFTER {
                    at_time(d.seconds, d.nanos)
                } else {
                    Instant::now() + since_epoch
                }
            }
            None => Instant::now() + DEFAULT_DEADLINE,
        };
        pending.insert(
            key,
            Pending {
                correlation,
                metastream,
                stream,
                expected,
                deadline,
                events: Vec::new(),
            },
        );
    }
    let Some(append) = pending.get_mut(&key) else {
        return Err(error::invalid_argument(
            "the first chunk of a BatchAppend correlation id carries its options (stream and expected position)",
        ));
    };
    for m in request.proposed_messages {
        let proposed = Proposed {
            id: m.id,
            metadata: m.metadata,
            custom_metadata: m.custom_metadata,
            data: m.data,
        };
        append
            .events
            .push(new_event(append.events.len(), proposed)?);
    }
    Ok(())
}

/// The instant of a point in time given as seconds and nanoseconds since the epoch.
fn at_time(seconds: i64, nanos: i32) -> Instant {
    let at = SystemTime::UNIX_EPOCH
        + Duration::new(
            u64::try_from(seconds).unwrap_or(0),
            u32::try_from(nanos).unwrap_or(0),
        );
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + left
}

/// Runs one append to its deadline and answers it.
async fn run(store: Arc<dyn EventStore>, append: Pending, tx: Answers) {
    let Pending {
        correlation,
        metastream,
        stream,
        expected,
        deadline,
        events,
    } = append;
    if metastream {
        let answer = meta_answer(&store, correlation, &stream, expected, events).await;
        let _ = tx.send(Ok(answer)).await;
        return;
    }
    let identifier = wire::stream_identifier(&stream);
    let answer = if Instant::now() >= deadline {
        failure(
            correlation,
            &Status::deadline_exceeded(
                "the append's deadline passed before it was received in full",
            ),
        )
    } else {
        match tokio::time::timeout_at(deadline, store.append(&stream, expected, events)).await {
            Err(_) => failure(
                correlation,
                &Status::deadline_exceeded(
                    "the append did not finish by its deadline; it may have been written: repeat it with the same event ids",
                ),
            ),
            Ok(Ok(result)) => {
                let (commit_position, prepare_position) = wire::wire_position(result.position);
                BatchAppendResp {
                    correlation_id: Some(correlation),
                    result: Some(batch_append_resp::Result::Success(
                        batch_append_resp::Success {
                            current_revision_option: Some(
                                batch_append_resp::success::CurrentRevisionOption::CurrentRevision(
                                    result.next_expected_revision,
                                ),
                            ),
                            position_option: Some(
                                batch_append_resp::success::PositionOption::Position(
                                    AllStreamPosition {
                                        commit_position,
                                        prepare_position,
                                    },
                                ),
                            ),
                        },
                    )),
                    stream_identifier: Some(identifier),
                    expected_stream_position: Some(expected_position(expected)),
                }
            }
            Ok(Err(AppendError::WrongExpectedRevision {
                expected, actual, ..
            })) => {
                let actual_revision = actual;
                let actual = match actual {
                    CurrentRevision::Current(n) => n.to_string(),
                    CurrentRevision::NoStream => "no stream".to_owned(),
                };
                let status = Status::new(
                    Code::AlreadyExists,
                    format!(
                        "wrong expected version: expected {expected:?}, the stream is at {actual}"
                    ),
                );
                use wrong_expected_version::{
                    CurrentStreamRevisionOption as C, ExpectedStreamPositionOption as E,
                };
                let detail = WrongExpectedVersion {
                    current_stream_revision_option: Some(match actual_revision {
                        CurrentRevision::Current(n) => C::CurrentStreamRevision(n),
                        CurrentRevision::NoStream => C::CurrentNoStream(Empty {}),
                    }),
                    expected_stream_position_option: Some(match expected {
                        ExpectedRevision::Exact(n) => E::ExpectedStreamPosition(n),
                        ExpectedRevision::Any => E::ExpectedAny(Empty {}),
                        ExpectedRevision::StreamExists => E::ExpectedStreamExists(Empty {}),
                        ExpectedRevision::NoStream => E::ExpectedNoStream(Empty {}),
                    }),
                };
                let mut answer = failure(correlation, &status);
                with_detail(&mut answer, "WrongExpectedVersion", &detail);
                answer.stream_identifier = Some(identifier);
                answer.expected_stream_position = Some(expected_position(expected));
                answer
            }
            Ok(Err(AppendError::StreamTombstoned { stream })) => {
                let mut answer = failure(correlation, &error::stream_deleted(&stream));
                let detail = StreamDeleted {
                    stream_identifier: Some(identifier.clone()),
                };
                with_detail(&mut answer, "StreamDeleted", &detail);
                answer.stream_identifier = Some(identifier);
                answer
            }
            Ok(Err(e)) => {
                let mut answer = failure(correlation, &error::append(e));
                answer.stream_identifier = Some(identifier);
                answer
            }
        }
    };
    let _ = tx.send(Ok(answer)).await;
}

fn expected_position(expected: ExpectedRevision) -> batch_append_resp::ExpectedStreamPosition {
    use batch_append_resp::ExpectedStreamPosition as E;
    match expected {
        ExpectedRevision::Exact(n) => E::StreamPosition(n),
        ExpectedRevision::NoStream => E::NoStream(Empty {}),
        ExpectedRevision::StreamExists => E::StreamExists(Empty {}),
        ExpectedRevision::Any => E::Any(Empty {}),
    }
}

/// An append's error as its answer.
fn failure(correlation: Uuid, status: &Status) -> BatchAppendResp {
    BatchAppendResp {
        correlation_id: Some(correlation),
        result: Some(batch_append_resp::Result::Error(rpc::Status {
            code: status.code() as i32,
            message: status.message().to_owned(),
            details: None,
        })),
        // The clients expect a stream identifier in every answer.
        stream_identifier: Some(StreamIdentifier::default()),
        expected_stream_position: None,
    }
}

/// Packs `detail` (`event_store.client.<name>`) into an error answer, where the clients
/// look for the kind of error.
fn with_detail(answer: &mut BatchAppendResp, name: &str, detail: &impl prost::Message) {
    if let Some(batch_append_resp::Result::Error(status)) = &mut answer.result {
        status.details = Some(prost_types::Any {
            type_url: format!("type.googleapis.com/event_store.client.{name}"),
            value: detail.encode_to_vec(),
        });
    }
}

/// A metastream write, answered as a batch append.
async fn meta_answer(
    store: &Arc<dyn EventStore>,
    correlation: Uuid,
    stream: &StreamName,
    expected: ExpectedRevision,
    events: Vec<NewEvent>,
) -> BatchAppendResp {
    use crate::proto::event_store::client::streams::append_resp;
    let identifier = crate::metastream::identifier(stream);
    let mut answer = match crate::metastream::append(store.clone(), stream, expected, events).await
    {
        Err(status) => failure(correlation, &status),
        Ok(response) => match response.result {
            Some(append_resp::Result::Success(success)) => {
                use append_resp::success::CurrentRevisionOption as C;
                use batch_append_resp::success::CurrentRevisionOption as B;
                BatchAppendResp {
                    correlation_id: Some(correlation),
                    result: Some(batch_append_resp::Result::Success(
                        batch_append_resp::Success {
                            current_revision_option: success.current_revision_option.map(
                                |c| match c {
                                    C::CurrentRevision(n) => B::CurrentRevision(n),
                                    C::NoStream(e) => B::NoStream(e),
                                },
                            ),
                            position_option: Some(
                                batch_append_resp::success::PositionOption::NoPosition(Empty {}),
                            ),
                        },
                    )),
                    stream_identifier: None,
                    expected_stream_position: None,
                }
            }
            _ => {
                let status = Status::new(
                    Code::AlreadyExists,
                    "wrong expected version of the metastream",
                );
                let mut answer = failure(correlation, &status);
                let detail = WrongExpectedVersion {
                    current_stream_revision_option: None,
                    expected_stream_position_option: None,
                };
                with_detail(&mut answer, "WrongExpectedVersion", &detail);
                answer
            }
        },
    };
    answer.stream_identifier = Some(identifier);
    answer.expected_stream_position = Some(expected_position(expected));
    answer
}
