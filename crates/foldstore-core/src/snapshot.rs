//! Snapshots: a stream's folded state at a revision, stored by the backend next to the
//! events so loading a long stream reads one snapshot plus the events after it.
//!
//! A snapshot is keyed by stream and `state_type` (the name of the state it holds, so
//! two models of one stream keep separate snapshots). `schema_version` is the version
//! of the state's encoding: a loader whose code expects another version ignores the
//! snapshot and replays the stream instead, then saves a fresh one.
//!
//! ```
//! use foldstore_core::{InMemoryStore, Snapshot, SnapshotStore, StreamName};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = InMemoryStore::new();
//! let stream = StreamName::new("account-1")?;
//! store.save_snapshot(Snapshot::new(stream.clone(), "Balance", 1, 99, b"{\"cents\":5}".to_vec())).await?;
//! let snap = store.load_snapshot(&stream, "Balance").await?.unwrap();
//! assert_eq!(snap.revision, 99);
//! # Ok(())
//! # }
//! ```

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{BackendError, StreamName};

/// A stream's state as of `revision` (the last event folded into it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The stream whose events were folded.
    pub stream: StreamName,
    /// Which state this is (a stream may have several models).
    pub state_type: String,
    /// The version of the state's encoding.
    pub schema_version: u32,
    /// The revision of the last event folded into the state.
    pub revision: u64,
    /// The encoded state (JSON by convention).
    pub data: Bytes,
    /// When it was saved.
    pub recorded_at: DateTime<Utc>,
}

impl Snapshot {
    /// A snapshot taken now.
    pub fn new(
        stream: StreamName,
        state_type: impl Into<String>,
        schema_version: u32,
        revision: u64,
        data: impl Into<Bytes>,
    ) -> Self {
        Self {
            stream,
            state_type: state_type.into(),
            schema_version,
            revision,
            data: data.into(),
            recorded_at: Utc::now(),
        }
    }
}

/// Why a snapshot could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The state type was empty or longer than 200 bytes.
    #[error("snapshot state type {0:?} is invalid: use a non-empty name of at most 200 bytes")]
    InvalidStateType(String),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Checks a snapshot's state type.
pub fn validate_state_type(state_type: &str) -> Result<(), SnapshotError> {
    if state_type.is_empty() || state_type.len() > 200 {
        return Err(SnapshotError::InvalidStateType(state_type.to_owned()));
    }
    Ok(())
}

/// Where snapshots live. Every backend implements it next to its events.
///
/// Saving replaces the stream's snapshot of that state type, unless the stored one
/// is at a later revision with the same schema version (an older writer never wins).
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Saves `snapshot`, replacing the previous one of its stream and state type.
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), SnapshotError>;

    /// The latest snapshot of `stream` for `state_type`, if any.
    async fn load_snapshot(
        &self,
        stream: &StreamName,
        state_type: &str,
    ) -> Result<Option<Snapshot>, SnapshotError>;
}

/// Whether `new` should replace `old` (see [`SnapshotStore`]).
pub fn should_replace(old: &Snapshot, new: &Snapshot) -> bool {
    old.schema_version != new.schema_version || new.revision >= old.revision
}
