//! What the command handler needs to snapshot a state: its name, its schema version
//! and a policy saying how often.

use serde::{Serialize, de::DeserializeOwned};

/// A state that can be snapshotted.
///
/// `STATE_TYPE` names the state (a stream may have snapshots of several models);
/// `SCHEMA_VERSION` is the version of its encoding. Raise it whenever the state's shape
/// or meaning changes: a snapshot of another version is never used, the stream is
/// replayed from the start instead and the snapshot replaced.
///
/// ```
/// use foldstore_core::SnapshotState;
///
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct Balance { cents: i64 }
///
/// impl SnapshotState for Balance {
///     const STATE_TYPE: &'static str = "Balance";
///     const SCHEMA_VERSION: u32 = 1;
/// }
/// ```
pub trait SnapshotState: Serialize + DeserializeOwned {
    /// The state's name, stored with its snapshots.
    const STATE_TYPE: &'static str;
    /// The version of the state's encoding.
    const SCHEMA_VERSION: u32;
}

/// When the command handler saves a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    every: u64,
}

impl SnapshotPolicy {
    /// A snapshot once at least `n` events (at least 1) were folded on top of the last
    /// one, whether by a command or by a load.
    pub fn every(n: u64) -> Self {
        Self { every: n.max(1) }
    }

    /// The number of events between snapshots.
    pub fn interval(&self) -> u64 {
        self.every
    }

    /// Whether a state with `since` events folded on top of its snapshot is due.
    pub fn is_due(&self, since: u64) -> bool {
        since >= self.every
    }
}
