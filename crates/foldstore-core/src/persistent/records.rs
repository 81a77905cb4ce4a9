//! A group's settings, and its records in the event store: settings, checkpoints and
//! parked events, each in a stream of its own.
//!
//! Stream names may not start with `$` in foldstore, so KurrentDB's
//! `$persistentsubscription-<stream>::<group>-parked` is
//! `persistentsubscription-<stream>::<group>-parked` here (the same name without the
//! `$`); `<stream>` is `$all` for a group on `$all`. Settings live in
//! `persistentsubscription_config-<stream>::<group>` and checkpoints in
//! `persistentsubscription_checkpoint-<stream>::<group>`. Groups on `$all` never
//! receive events of these streams.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::persistent::{PatternFilter, PersistentError, Strategy};
use crate::{EventFilter, StreamName};

/// The category of parked-event streams.
pub const PARKED_CATEGORY: &str = "persistentsubscription";
/// The category of settings streams.
pub const CONFIG_CATEGORY: &str = "persistentsubscription_config";
/// The category of checkpoint streams.
pub const CHECKPOINT_CATEGORY: &str = "persistentsubscription_checkpoint";

/// Event types of the records.
pub(crate) const CREATED: &str = "PersistentSubscriptionCreated";
pub(crate) const UPDATED: &str = "PersistentSubscriptionUpdated";
pub(crate) const DELETED: &str = "PersistentSubscriptionDeleted";
pub(crate) const CHECKPOINT: &str = "PersistentSubscriptionCheckpoint";
pub(crate) const PARKED: &str = "PersistentSubscriptionParked";

/// Whether `category` holds persistent-subscription records.
pub(crate) fn is_bookkeeping(category: &str) -> bool {
    matches!(
        category,
        PARKED_CATEGORY | CONFIG_CATEGORY | CHECKPOINT_CATEGORY
    )
}

/// What a group reads: one stream, or `$all`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Target {
    /// One stream, by revision.
    Stream(StreamName),
    /// The global log, by position, through the group's [`PersistentSettings::filter`].
    All,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Stream(s) => f.write_str(s.as_str()),
            Target::All => f.write_str("$all"),
        }
    }
}

impl Target {
    /// `$all` or a stream name.
    pub fn parse(name: &str) -> Result<Self, PersistentError> {
        if name == "$all" {
            return Ok(Target::All);
        }
        StreamName::new(name)
            .map(Target::Stream)
            .map_err(|e| PersistentError::InvalidName(e.to_string()))
    }
}

/// Where a new group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StartFrom {
    /// The first event.
    #[default]
    Start,
    /// After the last event at creation time (resolved to `After` when created, so a
    /// restart before the first checkpoint loses nothing appended since).
    End,
    /// After this revision (stream group) or position (`$all` group).
    After(u128),
}

/// A group's settings (KurrentDB's names in parentheses where they differ).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PersistentSettings {
    /// Where the group starts when it has no checkpoint.
    pub start_from: StartFrom,
    /// Which events of `$all` the group receives (ignored by stream groups).
    pub filter: EventFilter,
    /// KurrentDB's filter of `$all` (prefixes or a regular expression), applied after
    /// `filter`; `None` for none (ignored by stream groups).
    pub pattern: Option<PatternFilter>,
    /// An event in flight longer than this is retried, in milliseconds.
    pub message_timeout_ms: u64,
    /// An event retried more often than this is parked.
    pub max_retry_count: u32,
    /// How many read, unfinished events the group holds at most (liveBufferSize).
    pub live_buffer_size: usize,
    /// The buffer size of a consumer that connects asking for 0 (bufferSize).
    pub consumer_buffer_size: usize,
    /// The longest a finished event waits to be checkpointed, in milliseconds, once at
    /// least `min_checkpoint_count` events finished (checkpointAfter).
    pub checkpoint_after_ms: u64,
    /// Fewer finished events than this are not checkpointed by time alone.
    pub min_checkpoint_count: u64,
    /// A checkpoint is written at the latest after this many finished events.
    pub max_checkpoint_count: u64,
    /// How consumers are chosen (namedConsumerStrategy).
    pub strategy: Strategy,
    /// The most consumers connected at once; 0 for no limit (maxSubscriberCount).
    pub max_subscriber_count: usize,
    /// Kept and reported only: foldstore has no link events to resolve
    /// (resolveLinktos).
    pub resolve_links: bool,
    /// Kept and reported only: no extra statistics are gathered (extraStatistics).
    pub extra_statistics: bool,
    /// Kept and reported only: the group reads through the store's subscription,
    /// which pages by itself (readBatchSize).
    pub read_batch_size: usize,
    /// Kept and reported only: `live_buffer_size` bounds what the group holds
    /// (historyBufferSize).
    pub history_buffer_size: usize,
}

impl Default for PersistentSettings {
    fn default() -> Self {
        Self {
            start_from: StartFrom::Start,
            filter: EventFilter::all(),
            pattern: None,
            message_timeout_ms: 30_000,
            max_retry_count: 10,
            live_buffer_size: 500,
            consumer_buffer_size: 10,
            checkpoint_after_ms: 2_000,
            min_checkpoint_count: 10,
            max_checkpoint_count: 1_000,
            strategy: Strategy::RoundRobin,
            max_subscriber_count: 0,
            resolve_links: false,
            extra_statistics: false,
            read_batch_size: 20,
            history_buffer_size: 500,
        }
    }
}

/// The data of a settings record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ConfigRecord {
    pub(crate) target: Target,
    pub(crate) group: String,
    pub(crate) settings: PersistentSettings,
}

/// The data of a checkpoint record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckpointRecord {
    pub(crate) checkpoint: u128,
}

/// The data of a parked-event record: a link to the event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ParkedRecord {
    pub(crate) stream: StreamName,
    pub(crate) revision: u64,
    pub(crate) position: u128,
    pub(crate) reason: String,
}

/// Checks a group name: non-empty, at most 100 bytes, no control characters.
pub(crate) fn validate_group(group: &str) -> Result<(), PersistentError> {
    if group.is_empty() || group.len() > 100 || group.chars().any(char::is_control) {
        return Err(PersistentError::InvalidName(format!(
            "group name {group:?} must be 1 to 100 bytes without control characters"
        )));
    }
    Ok(())
}

fn named(name: String) -> Result<StreamName, PersistentError> {
    StreamName::new(name).map_err(|e| PersistentError::InvalidName(e.to_string()))
}

/// The settings stream of a group.
pub(crate) fn config_stream(target: &Target, group: &str) -> Result<StreamName, PersistentError> {
    named(format!("{CONFIG_CATEGORY}-{target}::{group}"))
}

/// The checkpoint stream of a group.
pub(crate) fn checkpoint_stream(
    target: &Target,
    group: &str,
) -> Result<StreamName, PersistentError> {
    named(format!("{CHECKPOINT_CATEGORY}-{target}::{group}"))
}

/// The parked-event stream of a group: `persistentsubscription-<stream>::<group>-parked`.
///
/// ```
/// use foldstore_core::persistent::{Target, parked_stream};
///
/// let s = parked_stream(&Target::All, "billing").unwrap();
/// assert_eq!(s.as_str(), "persistentsubscription-$all::billing-parked");
/// ```
pub fn parked_stream(target: &Target, group: &str) -> Result<StreamName, PersistentError> {
    named(format!("{PARKED_CATEGORY}-{target}::{group}-parked"))
}
