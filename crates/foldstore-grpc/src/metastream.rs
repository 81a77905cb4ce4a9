//! Stream metadata the way KurrentDB's clients read and write it: as the JSON event
//! (type `$metadata`) of the metastream `$$<stream>`, mapped onto our stream metadata.
//!
//! | metastream key | our metadata |
//! |---|---|
//! | `$maxAge` (seconds) | `max_age_secs` |
//! | `$maxCount` | `max_count` |
//! | `$tb` | `truncate_before` |
//! | `$cacheControl`, `$acl`, user keys | `custom`, under the same keys |
//!
//! The metastream holds one event, the latest metadata, at the revision that counts
//! the writes (kept in our metadata under [`REVISION_KEY`], with the last write's
//! event id under [`EVENT_ID_KEY`], so that repeating a write is idempotent); an
//! append's expected revision is checked against it, and the writes of this process
//! take turns ([`WRITES`]) so that the check and the write act as one step. `$acl` is
//! stored and returned but not enforced: tokens decide who may do what (see the
//! crate's README), and a write that sets it says so in the log.

use std::sync::Arc;

use bytes::Bytes;
use foldstore_core::{
    CurrentRevision, EventStore, ExpectedRevision, MetadataError, NewEvent, StreamMetadata,
    StreamName,
};
use serde_json::{Map, Value};
use tonic::Status;

use crate::error::{self, invalid_argument};
use crate::event_message::{EventMessage, StreamId};
use crate::proto::event_store::client::StreamIdentifier;
use crate::proto::event_store::client::streams::AppendResp;
use crate::proto::event_store::client::streams::read_resp::{ReadEvent, read_event};
use crate::wire;

/// The prefix of a metastream's name.
const PREFIX: &str = "$$";

/// The custom key holding the metastream's revision.
pub(crate) const REVISION_KEY: &str = "$grpc_metastream_revision";

/// The custom key holding the event id of the last metadata write.
pub(crate) const EVENT_ID_KEY: &str = "$grpc_metastream_event_id";

/// Metastream writes in this process, one at a time: each reads the metastream's
/// revision, checks the expected revision against it and writes the next one, and two
/// writes interleaving there would both succeed at the same revision. Metadata writes
/// are rare, so one lock for all of them costs nothing that matters. (Servers that
/// share one PostgreSQL database do not share this lock: between them, the later of
/// two concurrent writes wins.)
static WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The stream whose metastream `identifier` names, if it names one.
pub(crate) fn target(identifier: Option<&StreamIdentifier>) -> Result<Option<StreamName>, Status> {
    let Some(name) = identifier.and_then(|i| i.stream_name.strip_prefix(PREFIX.as_bytes())) else {
        return Ok(None);
    };
    let identifier = StreamIdentifier {
        stream_name: Bytes::copy_from_slice(name),
    };
    wire::readable_stream_name(Some(&identifier)).map(Some)
}

/// The metastream's identifier.
pub(crate) fn identifier(stream: &StreamName) -> StreamIdentifier {
    StreamIdentifier {
        stream_name: Bytes::from(format!("{PREFIX}{}", crate::parked::wire_name(stream))),
    }
}

fn metadata_error(error: MetadataError) -> Status {
    match error {
        MetadataError::StreamTombstoned { stream } => error::stream_deleted(&stream),
        other => Status::internal(other.to_string()),
    }
}

/// The metastream's one event, or `None` when the stream has no metadata.
pub(crate) async fn read(
    store: &dyn EventStore,
    stream: &StreamName,
    structured: bool,
) -> Result<Option<ReadEvent>, Status> {
    let Some(metadata) = store
        .stream_metadata(stream)
        .await
        .map_err(metadata_error)?
    else {
        return Ok(None);
    };
    let revision = metadata
        .custom
        .get(REVISION_KEY)
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let id = metadata
        .custom
        .get(EVENT_ID_KEY)
        .and_then(Value::as_str)
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .unwrap_or_else(uuid::Uuid::nil);
    let data =
        serde_json::to_vec(&to_json(&metadata)).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Some(ReadEvent {
        event: Some(EventMessage {
            id,
            structured_id: structured,
            stream: StreamId::Metastream(stream.clone()),
            stream_revision: revision,
            prepare_position: 0,
            commit_position: 0,
            event_type: "$metadata".to_owned(),
            content_type: "application/json".to_owned(),
            created: wire::ticks(chrono::Utc::now()),
            other_metadata: Vec::new(),
            custom_metadata: Bytes::new(),
            data: Bytes::from(data),
        }),
        link: None,
        position: Some(read_event::Position::CommitPosition(0)),
    }))
}

/// Writes the last of `events` as the stream's metadata, if `expected` matches the
/// metastream's revision.
pub(crate) async fn append(
    store: Arc<dyn EventStore>,
    stream: &StreamName,
    expected: ExpectedRevision,
    events: Vec<NewEvent>,
) -> Result<AppendResp, Status> {
    let _turn = WRITES.lock().await;
    let current = store
        .stream_metadata(stream)
        .await
        .map_err(metadata_error)?;
    let current_revision = match &current {
        Some(m) => CurrentRevision::Current(
            m.custom
                .get(REVISION_KEY)
                .and_then(Value::as_u64)
                .unwrap_or(0),
        ),
        None => CurrentRevision::NoStream,
    };
    let Some(event) = events.last() else {
        return Ok(if expected.matches(current_revision) {
            crate::streams::success(current_revision, None)
        } else {
            crate::streams::wrong_expected_version(expected, current_revision)
        });
    };
    let id = event.id.to_string();
    // A repeated write (a client's retry) answers as the first one did.
    if let (Some(m), CurrentRevision::Current(_)) = (&current, current_revision)
        && m.custom.get(EVENT_ID_KEY).and_then(Value::as_str) == Some(id.as_str())
    {
        return Ok(crate::streams::success(current_revision, None));
    }
    if !expected.matches(current_revision) {
        return Ok(crate::streams::wrong_expected_version(
            expected,
            current_revision,
        ));
    }
    let json: Value = serde_json::from_slice(&event.data).map_err(|e| {
        invalid_argument(format!("stream metadata is a JSON object ($maxAge, $maxCount, $tb, $cacheControl, $acl and your keys): {e}"))
    })?;
    let Value::Object(json) = json else {
        return Err(invalid_argument("stream metadata is a JSON object"));
    };
    let mut metadata = from_json(json)?;
    if metadata.custom.contains_key("$acl") {
        tracing::warn!(
            stream = %stream,
            "stream metadata sets $acl, which foldstore stores but does not enforce: \
             limit access with tokens (scopes and stream prefixes, --tokens-file) instead"
        );
    }
    let next = match current_revision {
        CurrentRevision::Current(n) => n + 1,
        CurrentRevision::NoStream => 0,
    };
    metadata
        .custom
        .insert(REVISION_KEY.to_owned(), Value::from(next));
    metadata
        .custom
        .insert(EVENT_ID_KEY.to_owned(), Value::from(id));
    store
        .set_stream_metadata(stream, metadata)
        .await
        .map_err(metadata_error)?;
    Ok(crate::streams::success(
        CurrentRevision::Current(next),
        None,
    ))
}

/// Our metadata from the metastream's JSON.
fn from_json(mut json: Map<String, Value>) -> Result<StreamMetadata, Status> {
    let mut number = |key: &str| -> Result<Option<u64>, Status> {
        match json.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                invalid_argument(format!("{key} in stream metadata is a whole number ≥ 0"))
            }),
        }
    };
    let max_age_secs = number("$maxAge")?;
    let max_count = number("$maxCount")?;
    let truncate_before = number("$tb")?;
    json.remove(REVISION_KEY);
    json.remove(EVENT_ID_KEY);
    Ok(StreamMetadata {
        max_count,
        max_age_secs,
        truncate_before,
        custom: json,
    })
}

/// The metastream's JSON from our metadata.
fn to_json(metadata: &StreamMetadata) -> Value {
    let mut json = Map::new();
    if let Some(n) = metadata.max_age_secs {
        json.insert("$maxAge".to_owned(), Value::from(n));
    }
    if let Some(n) = metadata.max_count {
        json.insert("$maxCount".to_owned(), Value::from(n));
    }
    if let Some(n) = metadata.truncate_before {
        json.insert("$tb".to_owned(), Value::from(n));
    }
    for (key, value) in &metadata.custom {
        if key != REVISION_KEY && key != EVENT_ID_KEY {
            json.insert(key.clone(), value.clone());
        }
    }
    Value::Object(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metastream_json_maps_onto_our_metadata_and_back() {
        let json = serde_json::json!({
            "$maxAge": 60, "$maxCount": 5, "$tb": 2, "$cacheControl": 10,
            "$acl": { "$r": ["ops"] }, "owner": "billing"
        });
        let Value::Object(map) = json.clone() else {
            unreachable!()
        };
        let metadata = from_json(map).unwrap();
        assert_eq!(metadata.max_age_secs, Some(60));
        assert_eq!(metadata.max_count, Some(5));
        assert_eq!(metadata.truncate_before, Some(2));
        assert_eq!(metadata.custom["owner"], "billing");
        assert_eq!(to_json(&metadata), json);
    }
}
