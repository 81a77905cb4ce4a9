//! Our errors as gRPC statuses, with the `exception` trailer KurrentDB's clients read.

use foldstore_core::persistent::{PersistentError, Target};
use foldstore_core::{
    AppendError, BackendError, BackendErrorKind, CurrentRevision, DeleteError, ExpectedRevision,
    ReadError, StreamName, SubscriptionError,
};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// What this crate implements, named in every `Unimplemented` answer.
pub(crate) const SUPPORTED: &str = "foldstore speaks KurrentDB's gRPC protocol for \
    Gossip.Read, ServerFeatures.GetSupportedMethods and Streams.Read (streams and $all, \
    reads and catch-up subscriptions), Streams.Append, Streams.BatchAppend, \
    Streams.Delete and Streams.Tombstone, and for PersistentSubscriptions (Create, \
    Update, Delete, Read, GetInfo, ReplayParked, List, RestartSubsystem) when the server \
    serves them, as `foldstore serve` does; it also has an HTTP/JSON API on the same port";

/// A status with the `exception` trailer and extra trailers.
fn with_exception(
    code: Code,
    message: String,
    exception: &str,
    extra: &[(&str, String)],
) -> Status {
    let mut status = Status::new(code, message);
    let metadata = status.metadata_mut();
    if let Ok(value) = MetadataValue::try_from(exception) {
        metadata.insert("exception", value);
    }
    for (key, value) in extra {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            metadata.insert(key, value);
        }
    }
    status
}

/// `InvalidArgument` with our message.
pub(crate) fn invalid_argument(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

/// `Unimplemented`, naming what is and what we support.
pub(crate) fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not implemented. {SUPPORTED}."))
}

/// The answer to a read or write of a tombstoned stream.
pub(crate) fn stream_deleted(stream: &StreamName) -> Status {
    with_exception(
        Code::FailedPrecondition,
        format!("stream {stream} is deleted (tombstoned): it can never be read or written again"),
        "stream-deleted",
        &[("stream-name", stream.to_string())],
    )
}

fn backend(error: BackendError) -> Status {
    let code = match error.kind {
        BackendErrorKind::Unavailable | BackendErrorKind::OutcomeUnknown => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(code, error.to_string())
}

/// KurrentDB's number for an expected revision (`-1` no stream, `-2` any, `-4` exists).
fn expected_version(expected: ExpectedRevision) -> String {
    match expected {
        ExpectedRevision::Any => "-2".to_owned(),
        ExpectedRevision::NoStream => "-1".to_owned(),
        ExpectedRevision::StreamExists => "-4".to_owned(),
        ExpectedRevision::Exact(n) => n.to_string(),
    }
}

/// KurrentDB's number for a stream's current revision (`-1`: no stream).
fn actual_version(actual: CurrentRevision) -> String {
    match actual {
        CurrentRevision::NoStream => "-1".to_owned(),
        CurrentRevision::Current(n) => n.to_string(),
    }
}

/// A failed read.
pub(crate) fn read(error: ReadError) -> Status {
    match error {
        ReadError::StreamTombstoned { stream } => stream_deleted(&stream),
        ReadError::StreamNotFound { stream } => {
            Status::not_found(format!("stream {stream} does not exist"))
        }
        ReadError::Backend(e) => backend(e),
        other => invalid_argument(other.to_string()),
    }
}

/// A failed subscription.
pub(crate) fn subscription(error: SubscriptionError) -> Status {
    match error {
        SubscriptionError::StreamTombstoned { stream } => stream_deleted(&stream),
        SubscriptionError::Read { source, .. } => read(source),
        other => Status::internal(other.to_string()),
    }
}

/// A failed append other than a wrong expected revision (which is a result).
pub(crate) fn append(error: AppendError) -> Status {
    match error {
        AppendError::StreamTombstoned { stream } => stream_deleted(&stream),
        AppendError::TooLarge { .. } => with_exception(
            Code::InvalidArgument,
            error.to_string(),
            "maximum-append-size-exceeded",
            &[],
        ),
        AppendError::DuplicateEventId { .. } => Status::already_exists(error.to_string()),
        AppendError::Backend(e) => backend(e),
        other => invalid_argument(other.to_string()),
    }
}

/// A failed delete or tombstone.
pub(crate) fn delete(error: DeleteError) -> Status {
    match error {
        DeleteError::WrongExpectedRevision {
            stream,
            expected,
            actual,
        } => with_exception(
            Code::FailedPrecondition,
            format!(
                "stream {stream} is at {actual}, not at the expected {expected}: read it again and retry"
            ),
            "wrong-expected-version",
            &[
                ("stream-name", stream.to_string()),
                ("expected-version", expected_version(expected)),
                ("actual-version", actual_version(actual)),
            ],
        ),
        DeleteError::StreamTombstoned { stream } => stream_deleted(&stream),
        DeleteError::Backend(e) => backend(e),
        other => Status::internal(other.to_string()),
    }
}

/// The trailers KurrentDB's clients read to name a persistent subscription's group.
fn group_trailers(target: &str, group: &str) -> [(&'static str, String); 2] {
    [
        ("stream-name", target.to_owned()),
        ("group-name", group.to_owned()),
    ]
}

/// A failed persistent-subscription operation, with the codes, messages and
/// `exception` trailers the clients map to their own errors.
pub(crate) fn persistent(error: PersistentError) -> Status {
    match error {
        PersistentError::NotFound { target, group } => with_exception(
            Code::NotFound,
            format!(
                "Subscription group '{group}' on stream '{target}' does not exist: create it first"
            ),
            "persistent-subscription-does-not-exist",
            &group_trailers(&target, &group),
        ),
        PersistentError::AlreadyExists { target, group } => with_exception(
            Code::AlreadyExists,
            format!(
                "Subscription group '{group}' on stream '{target}' exists already: update or delete it"
            ),
            "persistent-subscription-exists",
            &group_trailers(&target, &group),
        ),
        // The Python client recognises this one by the start of its message.
        PersistentError::MaxSubscribers { target, group, max } => with_exception(
            Code::FailedPrecondition,
            format!(
                "Maximum subscriptions reached for subscription group '{group}' on stream '{target}' ({max}): disconnect a consumer, or update the group with a higher max subscriber count"
            ),
            "maximum-subscribers-reached",
            &group_trailers(&target, &group),
        ),
        PersistentError::InvalidName(message) | PersistentError::InvalidSettings(message) => {
            invalid_argument(message)
        }
        e @ (PersistentError::NotServing { .. } | PersistentError::Store(_)) => {
            Status::unavailable(e.to_string())
        }
        other => Status::internal(other.to_string()),
    }
}

/// The end of a consumer's call whose group dropped it.
pub(crate) fn persistent_dropped(target: &Target, group: &str) -> Status {
    let target = target.to_string();
    with_exception(
        Code::Cancelled,
        format!(
            "Subscription group '{group}' on stream '{target}' was dropped: the group was deleted or updated, the subsystem restarted, or this consumer nacked with stop; subscribe again if the group exists"
        ),
        "persistent-subscription-dropped",
        &group_trailers(&target, group),
    )
}
