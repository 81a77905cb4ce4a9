//! The command handler: load a stream's state, decide, append, retry on conflict.
//!
//! [`CommandHandler::handle`] does, for one stream:
//!
//! 1. **Load**: the latest usable snapshot (if snapshots are on), then the events after
//!    it, each upcast ([`crate::upcast`]), decoded and folded with the decider's
//!    `evolve`.
//! 2. **Decide** with the decider. A refusal is [`CommandError::Rejected`].
//! 3. **Append** the new events with `ExpectedRevision::Exact(last revision)` (or
//!    `NoStream`), with the [`CommandContext`]'s correlation and causation ids in their
//!    metadata.
//! 4. On `WrongExpectedRevision` (someone wrote in between), wait (see
//!    [`RetryPolicy`]) and start again at 1, up to the policy's attempts; then
//!    [`CommandError::Conflict`].
//!
//! With [`CommandContext::id_seed`], the i-th event's id is a UUIDv5 of the seed and
//! `i` ([`deterministic_event_id`]). A command handled again with the same seed (a saga
//! replaying after a restart) finds its events already stored and returns them
//! ([`CommandOutcome::already_applied`]) instead of appending again, even if the
//! decider would now refuse it.
//!
//! ```
//! use std::sync::Arc;
//! use foldstore_core::{CommandContext, CommandHandler, DomainEvent, InMemoryStore, StreamName};
//! use foldstore_core::decider::Decider;
//! use serde::{Deserialize, Serialize};
//! use uuid::Uuid;
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize, DomainEvent)]
//! enum Ev { Added { n: u32 } }
//! struct Counter;
//! impl Decider for Counter {
//!     type Command = u32;
//!     type Event = Ev;
//!     type State = u32;
//!     type Error = String;
//!     fn initial_state(&self) -> u32 { 0 }
//!     fn decide(&self, n: &u32, total: &u32) -> Result<Vec<Ev>, String> {
//!         if total + n > 10 { Err("over 10".into()) } else { Ok(vec![Ev::Added { n: *n }]) }
//!     }
//!     fn evolve(&self, total: u32, Ev::Added { n }: &Ev) -> u32 { total + n }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let handler = CommandHandler::new(Arc::new(InMemoryStore::new()), Counter);
//! let stream = StreamName::new("counter-1")?;
//! let correlation = Uuid::now_v7();
//! let ctx = CommandContext::new().correlation_id(correlation);
//! let outcome = handler.handle(&stream, &4, &ctx).await?;
//! assert_eq!(outcome.events, [Ev::Added { n: 4 }]);
//! assert_eq!(outcome.next_expected_revision, Some(0));
//! assert_eq!(handler.load(&stream).await?.state, 4);
//! assert!(handler.handle(&stream, &7, &ctx).await.unwrap_err().is_rejected());
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use uuid::Uuid;

use crate::decider::Decider;
use crate::snapshotting::{SnapshotPolicy, SnapshotState};
use crate::upcast::Upcasters;
use crate::{
    AppendError, CAUSATION_ID, CORRELATION_ID, DecodeError, DomainEvent, EncodeError, EventStore,
    ExpectedRevision, Metadata, NewEvent, Position, ReadError, ReadStreamOptions, RecordedEvent,
    RetryPolicy, Snapshot, SnapshotStore, StreamName,
};

/// Events read per page while loading a stream.
const PAGE: usize = 4096;

/// The id of the `index`-th event produced by a command with id seed `seed`: a UUIDv5
/// of the seed (as namespace) and the index as 8 big-endian bytes.
///
/// ```
/// use foldstore_core::deterministic_event_id;
/// use uuid::Uuid;
///
/// let seed = Uuid::from_u128(7);
/// assert_eq!(deterministic_event_id(seed, 0), deterministic_event_id(seed, 0));
/// assert_ne!(deterministic_event_id(seed, 0), deterministic_event_id(seed, 1));
/// assert_eq!(deterministic_event_id(seed, 0).get_version_num(), 5);
/// ```
pub fn deterministic_event_id(seed: Uuid, index: u64) -> Uuid {
    Uuid::new_v5(&seed, &index.to_be_bytes())
}

/// What travels with a command into the metadata of the events it produces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandContext {
    /// Stored under [`CORRELATION_ID`] in each event's metadata.
    pub correlation_id: Option<Uuid>,
    /// Stored under [`CAUSATION_ID`] in each event's metadata.
    pub causation_id: Option<Uuid>,
    /// Makes event ids deterministic (see [`deterministic_event_id`]), so handling the
    /// same command again appends nothing.
    pub id_seed: Option<Uuid>,
    /// More keys for each event's metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl CommandContext {
    /// No ids, random event ids.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets the id seed: use one per command instance (a saga uses the id of the
    /// event that caused the command).
    pub fn id_seed(mut self, seed: Uuid) -> Self {
        self.id_seed = Some(seed);
        self
    }

    /// Adds a metadata key.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The `index`-th event's id: deterministic with a seed, else a fresh UUIDv7.
    pub fn event_id(&self, index: u64) -> Uuid {
        match self.id_seed {
            Some(seed) => deterministic_event_id(seed, index),
            None => Uuid::now_v7(),
        }
    }

    /// Encodes `events` with ids and metadata from this context.
    pub fn encode<E: DomainEvent>(&self, events: &[E]) -> Result<Vec<NewEvent>, EncodeError> {
        events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let new = e.to_new_event()?;
                let mut map = new.metadata.to_map();
                if let Some(id) = self.correlation_id {
                    map.insert(CORRELATION_ID.into(), id.to_string().into());
                }
                if let Some(id) = self.causation_id {
                    map.insert(CAUSATION_ID.into(), id.to_string().into());
                }
                map.extend(self.metadata.clone());
                Ok(new
                    .with_id(self.event_id(i as u64))
                    .with_metadata(Metadata::from_map(map)))
            })
            .collect()
    }
}

/// What a handled command did.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome<E> {
    /// The events appended (or, when `already_applied`, found stored).
    pub events: Vec<E>,
    /// The stream's revision afterwards (`None`: the stream still has no events).
    /// Pass it as `Exact` to a later append.
    pub next_expected_revision: Option<u64>,
    /// The position of the last event appended; `None` when nothing was appended.
    pub position: Option<Position>,
    /// Whether the command's events (by their deterministic ids) were already stored,
    /// so nothing was appended.
    pub already_applied: bool,
    /// How many times the command was decided (1 without conflicts).
    pub attempts: u32,
}

/// Why a command failed. `E` is the decider's domain error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E> {
    /// The decider refused the command.
    #[error("the command was rejected: {0:?}")]
    Rejected(E),
    /// Every attempt lost a race with another writer.
    #[error(
        "stream {stream} kept changing during {attempts} attempts: the command was not applied; retry later or allow more attempts in the RetryPolicy"
    )]
    Conflict {
        /// The stream.
        stream: StreamName,
        /// Attempts made.
        attempts: u32,
    },
    /// Reading the stream failed.
    #[error("loading the stream failed: {0}")]
    Read(#[from] ReadError),
    /// The append failed for another reason than a conflict.
    #[error("appending the events failed: {0}")]
    Append(#[from] AppendError),
    /// A stored event could not be decoded.
    #[error("a stored event could not be decoded: {0}")]
    Decode(#[from] DecodeError),
    /// A new event could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl<E> CommandError<E> {
    /// Whether the decider refused the command.
    pub fn is_rejected(&self) -> bool {
        matches!(self, CommandError::Rejected(_))
    }

    /// The domain error, if the command was refused.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            CommandError::Rejected(e) => Some(e),
            _ => None,
        }
    }
}

/// A stream's folded state.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<S> {
    /// The state.
    pub state: S,
    /// The revision of the last event folded (`None`: the stream has no events).
    pub revision: Option<u64>,
    /// The revision of the snapshot the load started from, if one was used.
    pub snapshot_revision: Option<u64>,
    /// Events read and folded (after the snapshot).
    pub events_folded: u64,
}

/// A load, the revision of the watched event if seen, and the latest snapshot's revision.
type LoadResult<S> = (Loaded<S>, Option<u64>, Option<u64>);

/// Encodes and stores snapshots of one state type.
struct Snapshots<S> {
    store: Arc<dyn SnapshotStore>,
    policy: SnapshotPolicy,
    state_type: &'static str,
    version: u32,
    encode: fn(&S) -> Result<Vec<u8>, serde_json::Error>,
    decode: fn(&[u8]) -> Result<S, serde_json::Error>,
}

/// Loads, decides and appends commands for one decider. See the [module](self).
pub struct CommandHandler<D: Decider> {
    store: Arc<dyn EventStore>,
    decider: D,
    upcasters: Upcasters,
    retry: RetryPolicy,
    snapshots: Option<Snapshots<D::State>>,
    skip_unknown: bool,
}

impl<D: Decider> std::fmt::Debug for CommandHandler<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandHandler")
            .field("retry", &self.retry)
            .field("upcasters", &self.upcasters)
            .field("snapshots", &self.snapshots.as_ref().map(|s| s.policy))
            .finish_non_exhaustive()
    }
}

impl<D> CommandHandler<D>
where
    D: Decider + Send + Sync,
    D::Event: DomainEvent + Send + Sync,
    D::State: Send + Sync,
    D::Command: Sync,
    D::Error: Send,
{
    /// A handler over `store`, with the default [`RetryPolicy`], no upcasters and no
    /// snapshots.
    pub fn new(store: Arc<dyn EventStore>, decider: D) -> Self {
        Self {
            store,
            decider,
            upcasters: Upcasters::new(),
            retry: RetryPolicy::default(),
            snapshots: None,
            skip_unknown: false,
        }
    }

    /// Sets the upcasters applied to stored events before decoding.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Skips stored events whose type the event enum does not know, instead of
    /// failing with [`DecodeError::UnknownType`].
    pub fn skip_unknown_types(mut self, skip: bool) -> Self {
        self.skip_unknown = skip;
        self
    }

    /// Turns snapshots on: loads start from the latest snapshot whose schema version is
    /// the state's; one is saved whenever `policy` says it is due.
    pub fn with_snapshots(mut self, store: Arc<dyn SnapshotStore>, policy: SnapshotPolicy) -> Self
    where
        D::State: SnapshotState,
    {
        self.snapshots = Some(Snapshots {
            store,
            policy,
            state_type: D::State::STATE_TYPE,
            version: D::State::SCHEMA_VERSION,
            encode: |s| serde_json::to_vec(s),
            decode: |b| serde_json::from_slice(b),
        });
        self
    }

    /// The decider.
    pub fn decider(&self) -> &D {
        &self.decider
    }

    /// Loads a stream's current state (saving a snapshot if one is due).
    pub async fn load(
        &self,
        stream: &StreamName,
    ) -> Result<Loaded<D::State>, CommandError<D::Error>> {
        Ok(self.load_inner(stream, None).await?.0)
    }

    /// Handles one command on `stream`. See the [module](self) for the steps.
    pub async fn handle(
        &self,
        stream: &StreamName,
        command: &D::Command,
        ctx: &CommandContext,
    ) -> Result<CommandOutcome<D::Event>, CommandError<D::Error>> {
        let first_id = ctx.id_seed.map(|s| deterministic_event_id(s, 0));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (loaded, found, snapshot_at) = self.load_inner(stream, first_id).await?;
            if let Some(revision) = found {
                return self.stored_outcome(stream, ctx, revision, attempt).await;
            }
            let events = match self.decider.decide(command, &loaded.state) {
                Ok(events) => events,
                Err(e) => {
                    // A replay of an applied command is often refused now ("already
                    // open"): answer with what it did the first time.
                    if let Some(r) = self.find_before_snapshot(stream, first_id, &loaded).await? {
                        return self.stored_outcome(stream, ctx, r, attempt).await;
                    }
                    return Err(CommandError::Rejected(e));
                }
            };
            if events.is_empty() {
                if let Some(r) = self.find_before_snapshot(stream, first_id, &loaded).await? {
                    return self.stored_outcome(stream, ctx, r, attempt).await;
                }
                return Ok(CommandOutcome {
                    events,
                    next_expected_revision: loaded.revision,
                    position: None,
                    already_applied: false,
                    attempts: attempt,
                });
            }
            let expected = loaded
                .revision
                .map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
            let new_events = ctx.encode(&events)?;
            match self.store.append(stream, expected, new_events).await {
                Ok(result) => {
                    self.after_append(
                        stream,
                        loaded,
                        snapshot_at,
                        &events,
                        result.next_expected_revision,
                    )
                    .await;
                    return Ok(CommandOutcome {
                        events,
                        next_expected_revision: Some(result.next_expected_revision),
                        position: Some(result.position),
                        already_applied: false,
                        attempts: attempt,
                    });
                }
                Err(AppendError::WrongExpectedRevision { .. }) => {
                    if let Some(r) = self.find_before_snapshot(stream, first_id, &loaded).await? {
                        return self.stored_outcome(stream, ctx, r, attempt).await;
                    }
                    if attempt >= self.retry.max_attempts {
                        return Err(CommandError::Conflict {
                            stream: stream.clone(),
                            attempts: attempt,
                        });
                    }
                    self.retry.wait(attempt).await;
                }
                Err(AppendError::DuplicateEventId {
                    event_id,
                    existing_stream,
                    existing_revision,
                }) if ctx.id_seed.is_some() && &existing_stream == stream => {
                    // Some of our deterministic ids are stored: find where the first is.
                    let index = (0..events.len() as u64)
                        .find(|&i| ctx.event_id(i) == event_id)
                        .unwrap_or(0);
                    let first = existing_revision.saturating_sub(index);
                    return self.stored_outcome(stream, ctx, first, attempt).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Loads the state; also reports the revision of the event with id `watch`, if it
    /// is among the events read, and the revision of the latest snapshot (saved by
    /// this load, or the one it started from).
    async fn load_inner(
        &self,
        stream: &StreamName,
        watch: Option<Uuid>,
    ) -> Result<LoadResult<D::State>, CommandError<D::Error>> {
        let mut start = self.load_snapshot(stream).await;
        let (state, snapshot_revision, stale, loaded_revision, folded, found) = 'load: loop {
            let (mut state, snapshot_revision, stale) = start;
            let mut loaded_revision = snapshot_revision;
            let mut from = snapshot_revision.map_or(0, |r| r + 1);
            let mut folded = 0u64;
            let mut found = None;
            if let Some(r) = snapshot_revision {
                // A snapshot older than the stream's first visible event predates a
                // delete (or a truncation): a replay would not see what it folded, so
                // neither may this load.
                let first = self
                    .store
                    .read_stream(stream, ReadStreamOptions::forwards().max_count(1))
                    .await;
                if let Ok(first) = first
                    && first.first().is_some_and(|e| e.revision > r)
                {
                    start = (self.decider.initial_state(), None, true);
                    continue 'load;
                }
            }
            loop {
                let page = match self
                    .store
                    .read_stream(
                        stream,
                        ReadStreamOptions::forwards()
                            .from_revision(from)
                            .max_count(PAGE),
                    )
                    .await
                {
                    Ok(page) => page,
                    Err(ReadError::StreamNotFound { .. }) => {
                        // Never written (or deleted): nothing to fold, snapshot or not.
                        let loaded = Loaded {
                            state: self.decider.initial_state(),
                            revision: None,
                            snapshot_revision: None,
                            events_folded: 0,
                        };
                        return Ok((loaded, None, None));
                    }
                    Err(e) => return Err(e.into()),
                };
                let n = page.len();
                for event in &page {
                    if Some(event.id) == watch && found.is_none() {
                        found = Some(event.revision);
                    }
                    if let Some(e) = self.decode(event)? {
                        state = self.decider.evolve(state, &e);
                    }
                    loaded_revision = Some(event.revision);
                    folded += 1;
                }
                match page.last() {
                    Some(last) if n == PAGE => from = last.revision + 1,
                    _ => break,
                }
            }
            break (
                state,
                snapshot_revision,
                stale,
                loaded_revision,
                folded,
                found,
            );
        };
        let loaded = Loaded {
            state,
            revision: loaded_revision,
            snapshot_revision,
            events_folded: folded,
        };
        let mut snapshot_at = loaded.snapshot_revision;
        if let (Some(s), Some(revision)) = (&self.snapshots, loaded.revision)
            && (stale || s.policy.is_due(folded))
        {
            self.save_snapshot(stream, &loaded.state, revision).await;
            snapshot_at = Some(revision);
        }
        Ok((loaded, found, snapshot_at))
    }

    /// The snapshot's state and revision if it is usable; `stale` when one exists but
    /// could not be used (another schema version, or undecodable), so it gets replaced.
    async fn load_snapshot(&self, stream: &StreamName) -> (D::State, Option<u64>, bool) {
        let initial = || self.decider.initial_state();
        let Some(s) = &self.snapshots else {
            return (initial(), None, false);
        };
        match s.store.load_snapshot(stream, s.state_type).await {
            Ok(None) => (initial(), None, false),
            Ok(Some(snap)) if snap.schema_version != s.version => {
                tracing::info!(%stream, state_type = s.state_type, stored = snap.schema_version, current = s.version,
                    "snapshot has another schema version: replaying the stream and replacing it");
                (initial(), None, true)
            }
            Ok(Some(snap)) => match (s.decode)(&snap.data) {
                Ok(state) => (state, Some(snap.revision), false),
                Err(e) => {
                    tracing::warn!(%stream, state_type = s.state_type, error = %e,
                        "snapshot does not decode: replaying the stream and replacing it");
                    (initial(), None, true)
                }
            },
            Err(e) => {
                tracing::warn!(%stream, error = %e, "loading the snapshot failed: replaying the stream");
                (initial(), None, false)
            }
        }
    }

    async fn save_snapshot(&self, stream: &StreamName, state: &D::State, revision: u64) {
        let Some(s) = &self.snapshots else { return };
        let data = match (s.encode)(state) {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(%stream, error = %e, "the state does not serialize: no snapshot saved");
                return;
            }
        };
        let snap = Snapshot::new(stream.clone(), s.state_type, s.version, revision, data);
        if let Err(e) = s.store.save_snapshot(snap).await {
            // The events are stored; a missing snapshot only costs a longer load.
            tracing::warn!(%stream, error = %e, "saving a snapshot failed");
        }
    }

    async fn after_append(
        &self,
        stream: &StreamName,
        loaded: Loaded<D::State>,
        snapshot_at: Option<u64>,
        events: &[D::Event],
        revision: u64,
    ) {
        let Some(s) = &self.snapshots else { return };
        let base = snapshot_at.map_or(0, |r| r + 1);
        if !s.policy.is_due(revision + 1 - base) {
            return;
        }
        let state = events
            .iter()
            .fold(loaded.state, |st, e| self.decider.evolve(st, e));
        self.save_snapshot(stream, &state, revision).await;
    }

    fn decode(&self, event: &RecordedEvent) -> Result<Option<D::Event>, DecodeError> {
        match self.upcasters.decode::<D::Event>(event) {
            Ok(e) => Ok(Some(e)),
            Err(e) if self.skip_unknown && e.is_unknown_type() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// With a seed and a load that started from a snapshot, the events before the
    /// snapshot were not seen: look for the command's first event there.
    async fn find_before_snapshot(
        &self,
        stream: &StreamName,
        first_id: Option<Uuid>,
        loaded: &Loaded<D::State>,
    ) -> Result<Option<u64>, CommandError<D::Error>> {
        let (Some(id), Some(until)) = (first_id, loaded.snapshot_revision) else {
            return Ok(None);
        };
        let mut from = 0;
        while from <= until {
            let page = self
                .store
                .read_stream(
                    stream,
                    ReadStreamOptions::forwards()
                        .from_revision(from)
                        .max_count(PAGE),
                )
                .await?;
            if let Some(e) = page.iter().find(|e| e.id == id && e.revision <= until) {
                return Ok(Some(e.revision));
            }
            match page.last() {
                Some(last) if page.len() == PAGE => from = last.revision + 1,
                _ => break,
            }
        }
        Ok(None)
    }

    /// The outcome of a command whose events are stored from `first` on.
    async fn stored_outcome(
        &self,
        stream: &StreamName,
        ctx: &CommandContext,
        first: u64,
        attempts: u32,
    ) -> Result<CommandOutcome<D::Event>, CommandError<D::Error>> {
        let stored = self
            .store
            .read_stream(
                stream,
                ReadStreamOptions::forwards()
                    .from_revision(first)
                    .max_count(PAGE),
            )
            .await?;
        let mut events = Vec::new();
        let mut last = None;
        for (i, e) in stored.iter().enumerate() {
            if e.id != ctx.event_id(i as u64) {
                break;
            }
            if let Some(ev) = self.decode(e)? {
                events.push(ev);
            }
            last = Some(e);
        }
        Ok(CommandOutcome {
            events,
            next_expected_revision: last.map(|e| e.revision),
            position: last.map(|e| e.position),
            already_applied: true,
            attempts,
        })
    }
}
