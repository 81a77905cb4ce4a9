//! The in-memory store: for tests and examples. It keeps the whole contract, but
//! nothing survives the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::Utc;
use uuid::Uuid;

use crate::dcb::{Query, ReadQueryOptions};
use crate::rules::{
    StoredId, StreamState, TransactionPlan, Visibility, check_delete, check_tracking,
    plan_transaction, validate_transaction,
};
use crate::snapshot::{
    Snapshot, SnapshotError, SnapshotStore, should_replace, validate_state_type,
};
use crate::subscription::{CommitNotifier, subscribe_all, subscribe_stream};
use crate::transaction::{
    AppendTransaction, StreamRevision, TransactionResult, validate_tracking_source,
};
use crate::{
    AppendError, DeleteError, Direction, EventFilter, EventStore, EventSubscription,
    ExpectedRevision, Limits, MetadataError, NewEvent, Position, ReadAllOptions, ReadError,
    ReadStreamOptions, RecordedEvent, StreamMetadata, StreamName, SubscribeFrom,
    SubscribeStreamFrom,
};

#[derive(Default)]
struct Stream {
    state: StreamState,
    /// Indexes into `State::events`, by revision.
    events: Vec<usize>,
    metadata: Option<StreamMetadata>,
}

#[derive(Default)]
struct State {
    /// `$all`; the event at index `i` has position `i + 1`.
    events: Vec<RecordedEvent>,
    streams: HashMap<StreamName, Stream>,
    ids: HashMap<Uuid, usize>,
    snapshots: HashMap<(StreamName, String), Snapshot>,
    /// Tracking positions by source.
    tracking: HashMap<String, Position>,
}

/// An event store in memory.
///
/// Cloning it gives another handle to the same store.
///
/// ```
/// use foldstore_core::{EventStore, InMemoryStore, ReadAllOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = InMemoryStore::new();
/// assert!(store.read_all(ReadAllOptions::forwards()).await.unwrap().is_empty());
/// # }
/// ```
#[derive(Clone, Default)]
pub struct InMemoryStore {
    state: Arc<Mutex<State>>,
    commits: CommitNotifier,
    limits: Limits,
}

impl std::fmt::Debug for InMemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryStore").finish_non_exhaustive()
    }
}

fn position_of(index: usize) -> Position {
    Position::new(index as u128 + 1)
}

impl InMemoryStore {
    /// An empty store with default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied append: appends
        // mutate only after every check passed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn stream_state(state: &State, stream: &StreamName) -> StreamState {
    state
        .streams
        .get(stream)
        .map(|s| s.state)
        .unwrap_or_default()
}

impl InMemoryStore {
    fn stored_ids(st: &State, events: &[NewEvent]) -> Vec<Option<StoredId>> {
        events
            .iter()
            .map(|e| {
                st.ids.get(&e.id).map(|&i| {
                    let r = &st.events[i];
                    StoredId {
                        stream: r.stream.clone(),
                        revision: r.revision,
                        position: r.position,
                    }
                })
            })
            .collect()
    }

    fn commit(&self, tx: AppendTransaction) -> Result<TransactionResult, AppendError> {
        validate_transaction(&tx, &self.limits)?;
        let result = {
            let mut st = self.lock();
            let states: Vec<StreamState> = tx
                .parts
                .iter()
                .map(|p| stream_state(&st, &p.stream))
                .collect();
            let stored: Vec<Vec<Option<StoredId>>> = tx
                .parts
                .iter()
                .map(|p| Self::stored_ids(&st, &p.events))
                .collect();
            let first_revisions = match plan_transaction(&tx.parts, &states, &stored)? {
                TransactionPlan::AlreadyStored(result) => return Ok(result),
                TransactionPlan::Write { first_revisions } => first_revisions,
            };
            if let Some(t) = &tx.tracking {
                check_tracking(t, st.tracking.get(&t.source).copied())?;
            }
            if let Some(c) = &tx.condition {
                let start = c
                    .after
                    .map_or(0, |p| usize::try_from(p.as_u128()).unwrap_or(usize::MAX));
                if let Some(hit) = st
                    .events
                    .iter()
                    .skip(start)
                    .find(|e| c.fail_if_events_match.matches(&e.event_type, &e.tags))
                {
                    return Err(AppendError::ConditionFailed {
                        position: hit.position,
                    });
                }
            }
            let now = Utc::now();
            let first_index = st.events.len();
            let mut streams = Vec::with_capacity(tx.parts.len());
            for (part, first_revision) in tx.parts.into_iter().zip(first_revisions) {
                let mut revision = first_revision;
                let mut indexes = Vec::with_capacity(part.events.len());
                for e in part.events {
                    let index = st.events.len();
                    st.ids.insert(e.id, index);
                    st.events.push(RecordedEvent {
                        id: e.id,
                        stream: part.stream.clone(),
                        event_type: e.event_type,
                        revision,
                        position: position_of(index),
                        data: e.data,
                        content_type: e.content_type,
                        metadata: e.metadata,
                        recorded_at: now,
                        tags: e.tags,
                    });
                    indexes.push(index);
                    revision += 1;
                }
                let entry = st.streams.entry(part.stream.clone()).or_default();
                entry.events.extend(indexes);
                entry.state.last_revision = Some(revision - 1);
                streams.push(StreamRevision {
                    stream: part.stream,
                    next_expected_revision: revision - 1,
                });
            }
            if let Some(t) = tx.tracking {
                st.tracking.insert(t.source, t.position);
            }
            let written = first_index..st.events.len();
            TransactionResult {
                streams,
                first_position: (!written.is_empty()).then(|| position_of(written.start)),
                last_position: written.last().map(position_of),
            }
        };
        self.commits.notify();
        Ok(result)
    }
}

#[async_trait]
impl EventStore for InMemoryStore {
    async fn append_transaction(
        &self,
        transaction: AppendTransaction,
    ) -> Result<TransactionResult, AppendError> {
        self.commit(transaction)
    }

    async fn tracking(&self, source: &str) -> Result<Option<Position>, ReadError> {
        validate_tracking_source(source)?;
        Ok(self.lock().tracking.get(source).copied())
    }

    async fn read_query(
        &self,
        query: &Query,
        options: ReadQueryOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        query.validate()?;
        let st = self.lock();
        let start = options
            .after
            .map_or(0, |p| usize::try_from(p.as_u128()).unwrap_or(usize::MAX));
        Ok(st
            .events
            .iter()
            .skip(start)
            .filter(|e| query.matches(&e.event_type, &e.tags))
            .take(options.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let st = self.lock();
        let Some(s) = st.streams.get(stream) else {
            return Err(ReadError::StreamNotFound {
                stream: stream.clone(),
            });
        };
        if s.state.tombstoned {
            return Err(ReadError::StreamTombstoned {
                stream: stream.clone(),
            });
        }
        if !s.state.exists() {
            return Err(ReadError::StreamNotFound {
                stream: stream.clone(),
            });
        }
        let vis = Visibility::of(&s.state, s.metadata.as_ref(), Utc::now());
        let visible = |&&i: &&usize| {
            let e = &st.events[i];
            vis.shows(e.revision, e.recorded_at)
        };
        let out: Vec<RecordedEvent> = match options.direction {
            Direction::Forwards => {
                let from = options.from.unwrap_or(0);
                s.events
                    .iter()
                    .skip(usize::try_from(from).unwrap_or(usize::MAX))
                    .filter(visible)
                    .take(options.max_count)
                    .map(|&i| st.events[i].clone())
                    .collect()
            }
            Direction::Backwards => {
                let end = options
                    .from
                    .map_or(s.events.len(), |f| {
                        usize::try_from(f).unwrap_or(usize::MAX).saturating_add(1)
                    })
                    .min(s.events.len());
                s.events[..end]
                    .iter()
                    .rev()
                    .filter(visible)
                    .take(options.max_count)
                    .map(|&i| st.events[i].clone())
                    .collect()
            }
        };
        Ok(out)
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError> {
        options.filter.validate()?;
        let st = self.lock();
        let matches = |e: &&RecordedEvent| options.filter.matches(e.stream.as_str(), &e.event_type);
        let index_of = |p: Position| usize::try_from(p.as_u128()).unwrap_or(usize::MAX);
        let out = match options.direction {
            Direction::Forwards => {
                let start = options.from.map_or(0, |p| index_of(p).saturating_sub(1));
                st.events
                    .iter()
                    .skip(start)
                    .filter(matches)
                    .take(options.max_count)
                    .cloned()
                    .collect()
            }
            Direction::Backwards => {
                let end = options
                    .from
                    .map_or(st.events.len(), index_of)
                    .min(st.events.len());
                st.events[..end]
                    .iter()
                    .rev()
                    .filter(matches)
                    .take(options.max_count)
                    .cloned()
                    .collect()
            }
        };
        Ok(out)
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError> {
        self.delete(stream, expected, false)
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError> {
        self.delete(stream, expected, true)
    }

    async fn stream_metadata(
        &self,
        stream: &StreamName,
    ) -> Result<Option<StreamMetadata>, MetadataError> {
        let st = self.lock();
        match st.streams.get(stream) {
            Some(s) if s.state.tombstoned => Err(MetadataError::StreamTombstoned {
                stream: stream.clone(),
            }),
            Some(s) => Ok(s.metadata.clone()),
            None => Ok(None),
        }
    }

    async fn set_stream_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<(), MetadataError> {
        {
            let mut st = self.lock();
            let s = st.streams.entry(stream.clone()).or_default();
            if s.state.tombstoned {
                return Err(MetadataError::StreamTombstoned {
                    stream: stream.clone(),
                });
            }
            s.metadata = Some(metadata);
        }
        self.commits.notify();
        Ok(())
    }

    async fn head_position(&self) -> Result<Option<Position>, ReadError> {
        let st = self.lock();
        Ok(st.events.last().map(|e| e.position))
    }

    async fn subscribe_to_all(
        &self,
        from: SubscribeFrom,
        filter: EventFilter,
    ) -> Result<EventSubscription, ReadError> {
        filter.validate()?;
        subscribe_all(self.clone(), &self.commits, from, filter).await
    }

    async fn subscribe_to_stream(
        &self,
        stream: &StreamName,
        from: SubscribeStreamFrom,
    ) -> Result<EventSubscription, ReadError> {
        subscribe_stream(self.clone(), &self.commits, stream.clone(), from).await
    }
}

impl InMemoryStore {
    fn delete(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        tombstone: bool,
    ) -> Result<(), DeleteError> {
        {
            let mut st = self.lock();
            check_delete(stream, expected, &stream_state(&st, stream))?;
            let s = st.streams.entry(stream.clone()).or_default();
            if tombstone {
                s.state.tombstoned = true;
            } else {
                s.state.deleted_before = s.state.next_revision();
            }
        }
        self.commits.notify();
        Ok(())
    }
}

#[async_trait]
impl SnapshotStore for InMemoryStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), SnapshotError> {
        validate_state_type(&snapshot.state_type)?;
        let mut st = self.lock();
        let key = (snapshot.stream.clone(), snapshot.state_type.clone());
        match st.snapshots.get(&key) {
            Some(old) if !should_replace(old, &snapshot) => {}
            _ => {
                st.snapshots.insert(key, snapshot);
            }
        }
        Ok(())
    }

    async fn load_snapshot(
        &self,
        stream: &StreamName,
        state_type: &str,
    ) -> Result<Option<Snapshot>, SnapshotError> {
        validate_state_type(state_type)?;
        let st = self.lock();
        Ok(st
            .snapshots
            .get(&(stream.clone(), state_type.to_owned()))
            .cloned())
    }
}
