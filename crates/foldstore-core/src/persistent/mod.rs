//! Persistent subscriptions: competing consumers over a stream or `$all`.
//!
//! A *group* reads one stream (or `$all` through an [`crate::EventFilter`]) on the
//! server side and hands its events to the consumers connected to it, each up to the
//! buffer size it connected with, by the group's [`Strategy`]. A consumer acks each
//! event, or nacks it with a [`NackAction`]. An event not acked within the message
//! timeout is delivered again; after `max_retry_count` retries it is parked (linked
//! from the group's parked stream, see [`parked_stream`]) and can be replayed.
//!
//! The group's settings and checkpoint are events in the store itself (see
//! `records.rs`), so every backend keeps them unchanged and a restarted process
//! resumes each group after its checkpoint: at least once, as KurrentDB promises, and
//! without ordering under retries. One process at a time serves a group: the one
//! holding its [`RunnerLock`] (an advisory lock on PostgreSQL).
//!
//! [`Dispatcher`] is the pure state machine; [`PersistentSubscriptions`] runs one task
//! per group around it.
//!
//! ```
//! use std::sync::Arc;
//! use foldstore_core::persistent::{PersistentSettings, PersistentSubscriptions, Target};
//! use foldstore_core::{EventStore, ExpectedRevision, InMemoryStore, NewEvent, StreamName};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let store = Arc::new(InMemoryStore::new());
//! let orders = StreamName::new("orders-1")?;
//! store.append(&orders, ExpectedRevision::Any, vec![NewEvent::json("Placed", &1)?]).await?;
//!
//! let subs = PersistentSubscriptions::open(store.clone()).await?;
//! let target = Target::Stream(orders);
//! subs.create(&target, "mailer", PersistentSettings::default()).await?;
//! let mut consumer = subs.connect(&target, "mailer", 10).await?;
//! let delivered = consumer.next().await.expect("one event");
//! assert_eq!(delivered.event.event_type, "Placed");
//! consumer.ack(&[delivered.key]);
//! subs.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod dispatch;
mod group;
mod pattern;
mod records;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

pub use dispatch::{
    ConsumerId, Delivery, DispatchRules, Dispatcher, EventKey, NackAction, ParkReason, Strategy,
};
pub use group::{GroupStats, PersistentEvent};
pub use pattern::{CompiledPattern, PatternFilter, PatternSubject};
pub use records::{
    CHECKPOINT_CATEGORY, CONFIG_CATEGORY, PARKED_CATEGORY, PersistentSettings, StartFrom, Target,
    parked_stream,
};

use futures::future::BoxFuture;

use crate::projection::{HandlerError, InMemoryLocks, RunnerLock};
use crate::{Direction, EventStore, ExpectedRevision, NewEvent, ReadError, ReadStreamOptions};
use group::{Cmd, GroupTask};
use records::ConfigRecord;

/// Why a persistent-subscription operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistentError {
    /// No such group.
    #[error("no persistent subscription group {group:?} on {target}: create it first")]
    NotFound {
        /// The stream or `$all`.
        target: String,
        /// The group.
        group: String,
    },
    /// The group exists already.
    #[error(
        "persistent subscription group {group:?} on {target} exists already: update or delete it"
    )]
    AlreadyExists {
        /// The stream or `$all`.
        target: String,
        /// The group.
        group: String,
    },
    /// A stream or group name was refused.
    #[error("{0}")]
    InvalidName(String),
    /// A setting was refused (a filter regex that does not compile, for instance).
    #[error("{0}")]
    InvalidSettings(String),
    /// The group has as many consumers as its `max_subscriber_count`.
    #[error(
        "maximum subscriptions reached for group {group:?} on {target} ({max} consumers): disconnect one, or update the group with a higher max_subscriber_count"
    )]
    MaxSubscribers {
        /// The stream or `$all`.
        target: String,
        /// The group.
        group: String,
        /// Its `max_subscriber_count`.
        max: usize,
    },
    /// Another process serves the group (it holds the group's lock).
    #[error("group {group:?} is served by another process now: try again there or later")]
    NotServing {
        /// The group.
        group: String,
    },
    /// The store failed.
    #[error("the event store failed: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
}

/// Makes the runner lock of a group from its name
/// (`persistentsubscription:<target>::<group>`). A group's task calls it when it starts
/// and again after the lock failed.
///
/// ```
/// use std::sync::Arc;
/// use foldstore_core::persistent::LockFactory;
/// use foldstore_core::projection::{InMemoryLocks, RunnerLock};
///
/// let locks = InMemoryLocks::new();
/// let factory: LockFactory = Arc::new(move |name: String| {
///     let lock: Box<dyn RunnerLock> = Box::new(locks.lock(name));
///     Box::pin(async move { Ok(lock) })
/// });
/// ```
pub type LockFactory = Arc<
    dyn Fn(String) -> BoxFuture<'static, Result<Box<dyn RunnerLock>, HandlerError>> + Send + Sync,
>;

/// The lock factory of [`PersistentSubscriptions::open`]: locks in this process only.
pub fn in_process_locks(locks: InMemoryLocks) -> LockFactory {
    Arc::new(move |name: String| {
        let lock: Box<dyn RunnerLock> = Box::new(locks.lock(name));
        Box::pin(async move { Ok(lock) })
    })
}

/// A group as [`PersistentSubscriptions::list`] and [`PersistentSubscriptions::info`]
/// report it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    /// The stream or `$all`.
    pub target: Target,
    /// The group's name.
    pub group: String,
    /// Its settings.
    pub settings: PersistentSettings,
    /// How many events its parked stream shows (parked and not yet replayed).
    pub parked: u64,
    /// What the group's task in this process reports.
    pub stats: GroupStats,
}

struct Handle {
    cmd: mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

/// The persistent subscriptions of one store, served from this process.
pub struct PersistentSubscriptions {
    store: Arc<dyn EventStore>,
    locks: LockFactory,
    groups: Mutex<HashMap<(Target, String), Handle>>,
    next_consumer: AtomicU64,
}

impl std::fmt::Debug for PersistentSubscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentSubscriptions")
            .finish_non_exhaustive()
    }
}

impl Drop for PersistentSubscriptions {
    fn drop(&mut self) {
        // Like a crash: nothing more is checkpointed; another start resumes from the
        // stored checkpoints. Call `shutdown` to checkpoint first.
        for (_, handle) in self.handles().drain() {
            handle.task.abort();
        }
    }
}

impl PersistentSubscriptions {
    /// Serves every group stored in `store`, with in-process locks (one process per
    /// store, as with SQLite).
    pub async fn open(store: Arc<dyn EventStore>) -> Result<Self, PersistentError> {
        Self::open_with_locks(store, in_process_locks(InMemoryLocks::new())).await
    }

    /// Serves every group stored in `store`, taking each group's lock from `locks`
    /// first (on PostgreSQL, `foldstore_postgres::projection::AdvisoryLock`, so that
    /// among several processes over one database one serves each group).
    pub async fn open_with_locks(
        store: Arc<dyn EventStore>,
        locks: LockFactory,
    ) -> Result<Self, PersistentError> {
        let this = Self {
            store,
            locks,
            groups: Mutex::new(HashMap::new()),
            next_consumer: AtomicU64::new(1),
        };
        for (target, group, settings) in this.stored().await? {
            this.start(target, group, settings);
        }
        Ok(this)
    }

    fn handles(&self) -> std::sync::MutexGuard<'_, HashMap<(Target, String), Handle>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the group's task unless it runs; answers its command channel.
    fn start(
        &self,
        target: Target,
        group: String,
        settings: PersistentSettings,
    ) -> mpsc::UnboundedSender<Cmd> {
        let mut handles = self.handles();
        let key = (target, group);
        if let Some(h) = handles.get(&key) {
            return h.cmd.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = GroupTask::new(
            self.store.clone(),
            key.0.clone(),
            key.1.clone(),
            settings,
            self.locks.clone(),
            rx,
        );
        let task = tokio::spawn(task.run());
        handles.insert(
            key,
            Handle {
                cmd: tx.clone(),
                task,
            },
        );
        tx
    }

    /// Every group stored, by its latest settings record.
    async fn stored(&self) -> Result<Vec<(Target, String, PersistentSettings)>, PersistentError> {
        let mut latest: HashMap<String, Option<ConfigRecord>> = HashMap::new();
        let mut from = None;
        loop {
            let mut options = crate::ReadAllOptions::forwards().max_count(1000);
            options.from = from;
            let page = self
                .store
                .read_category(CONFIG_CATEGORY, options)
                .await
                .map_err(store)?;
            let Some(last) = page.last() else { break };
            from = Some(last.position.next());
            for e in &page {
                let record = match e.event_type.as_str() {
                    records::DELETED => None,
                    _ => Some(e.json::<ConfigRecord>().map_err(store)?),
                };
                latest.insert(e.stream.as_str().to_owned(), record);
            }
        }
        let mut groups: Vec<_> = latest
            .into_values()
            .flatten()
            .map(|r| (r.target, r.group, r.settings))
            .collect();
        groups.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(groups)
    }

    /// The latest settings record of one group, and the config stream's last revision.
    async fn config(
        &self,
        target: &Target,
        group: &str,
    ) -> Result<(Option<PersistentSettings>, Option<u64>), PersistentError> {
        records::validate_group(group)?;
        let stream = records::config_stream(target, group)?;
        let mut options = ReadStreamOptions::backwards().max_count(1);
        options.direction = Direction::Backwards;
        match self.store.read_stream(&stream, options).await {
            Ok(events) => match events.first() {
                Some(e) if e.event_type != records::DELETED => {
                    let r: ConfigRecord = e.json().map_err(store)?;
                    Ok((Some(r.settings), Some(e.revision)))
                }
                Some(e) => Ok((None, Some(e.revision))),
                None => Ok((None, None)),
            },
            Err(ReadError::StreamNotFound { .. }) => Ok((None, None)),
            Err(e) => Err(store(e)),
        }
    }

    async fn write_config(
        &self,
        target: &Target,
        group: &str,
        event_type: &str,
        settings: &PersistentSettings,
        expected: ExpectedRevision,
    ) -> Result<(), PersistentError> {
        let stream = records::config_stream(target, group)?;
        let record = ConfigRecord {
            target: target.clone(),
            group: group.to_owned(),
            settings: settings.clone(),
        };
        let event = NewEvent::json(event_type, &record).map_err(store)?;
        self.store
            .append(&stream, expected, vec![event])
            .await
            .map_err(|e| match e {
                crate::AppendError::WrongExpectedRevision { .. } => {
                    PersistentError::AlreadyExists {
                        target: target.to_string(),
                        group: group.to_owned(),
                    }
                }
                e => store(e),
            })?;
        Ok(())
    }

    fn not_found(target: &Target, group: &str) -> PersistentError {
        PersistentError::NotFound {
            target: target.to_string(),
            group: group.to_owned(),
        }
    }

    /// Resolves [`StartFrom::End`] to the current end of `target`.
    async fn resolve_start(
        &self,
        target: &Target,
        settings: &mut PersistentSettings,
    ) -> Result<(), PersistentError> {
        if settings.start_from != StartFrom::End {
            return Ok(());
        }
        settings.start_from = match target {
            Target::All => match self.store.head_position().await.map_err(store)? {
                Some(p) => StartFrom::After(p.as_u128()),
                None => StartFrom::Start,
            },
            Target::Stream(s) => match self
                .store
                .read_stream(s, ReadStreamOptions::backwards().max_count(1))
                .await
            {
                Ok(events) => events.first().map_or(StartFrom::Start, |e| {
                    StartFrom::After(u128::from(e.revision))
                }),
                Err(ReadError::StreamNotFound { .. }) => StartFrom::Start,
                Err(e) => return Err(store(e)),
            },
        };
        Ok(())
    }

    /// Creates a group and starts serving it.
    pub async fn create(
        &self,
        target: &Target,
        group: &str,
        mut settings: PersistentSettings,
    ) -> Result<(), PersistentError> {
        validate_settings(&settings)?;
        let (current, revision) = self.config(target, group).await?;
        if current.is_some() {
            return Err(PersistentError::AlreadyExists {
                target: target.to_string(),
                group: group.to_owned(),
            });
        }
        self.resolve_start(target, &mut settings).await?;
        let expected = revision.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
        self.write_config(target, group, records::CREATED, &settings, expected)
            .await?;
        self.start(target.clone(), group.to_owned(), settings);
        Ok(())
    }

    /// Replaces a group's settings; its task restarts from the stored checkpoint with
    /// them (its consumers reconnect). Other processes take them on their next start.
    pub async fn update(
        &self,
        target: &Target,
        group: &str,
        mut settings: PersistentSettings,
    ) -> Result<(), PersistentError> {
        validate_settings(&settings)?;
        let (current, revision) = self.config(target, group).await?;
        if current.is_none() {
            return Err(Self::not_found(target, group));
        }
        self.resolve_start(target, &mut settings).await?;
        let expected = revision.map_or(ExpectedRevision::Any, ExpectedRevision::Exact);
        self.write_config(target, group, records::UPDATED, &settings, expected)
            .await?;
        self.stop(target, group).await;
        self.start(target.clone(), group.to_owned(), settings);
        Ok(())
    }

    /// Deletes a group: its consumers are disconnected; its checkpoint and parked
    /// streams stay (a group created again under the name resumes after the checkpoint).
    pub async fn delete(&self, target: &Target, group: &str) -> Result<(), PersistentError> {
        let (current, revision) = self.config(target, group).await?;
        let Some(settings) = current else {
            return Err(Self::not_found(target, group));
        };
        let expected = revision.map_or(ExpectedRevision::Any, ExpectedRevision::Exact);
        self.write_config(target, group, records::DELETED, &settings, expected)
            .await?;
        self.stop(target, group).await;
        Ok(())
    }

    async fn stop(&self, target: &Target, group: &str) {
        let handle = self.handles().remove(&(target.clone(), group.to_owned()));
        if let Some(handle) = handle {
            let (done, wait) = oneshot::channel();
            if handle.cmd.send(Cmd::Stop(done)).is_ok() {
                let _ = wait.await;
            }
            let _ = handle.task.await;
        }
    }

    /// Stops serving every group, writing each one's checkpoint first.
    pub async fn shutdown(&self) {
        let keys: Vec<_> = self.handles().keys().cloned().collect();
        for (target, group) in keys {
            self.stop(&target, &group).await;
        }
    }

    /// Stops every group (writing its checkpoint and disconnecting its consumers) and
    /// serves every stored group again from its checkpoint, with its stored settings
    /// (KurrentDB's `RestartSubsystem`).
    pub async fn restart(&self) -> Result<(), PersistentError> {
        self.shutdown().await;
        for (target, group, settings) in self.stored().await? {
            self.start(target, group, settings);
        }
        Ok(())
    }

    /// The command channel of a group, starting its task if another process created it.
    async fn handle(
        &self,
        target: &Target,
        group: &str,
    ) -> Result<mpsc::UnboundedSender<Cmd>, PersistentError> {
        if let Some(h) = self.handles().get(&(target.clone(), group.to_owned())) {
            return Ok(h.cmd.clone());
        }
        let (Some(settings), _) = self.config(target, group).await? else {
            return Err(Self::not_found(target, group));
        };
        Ok(self.start(target.clone(), group.to_owned(), settings))
    }

    /// Connects a consumer that takes up to `buffer_size` events at once (0: the
    /// group's `consumer_buffer_size`). Refused with [`PersistentError::MaxSubscribers`]
    /// when the group has its `max_subscriber_count` of consumers.
    pub async fn connect(
        &self,
        target: &Target,
        group: &str,
        buffer_size: usize,
    ) -> Result<Consumer, PersistentError> {
        let cmd = self.handle(target, group).await?;
        let capacity = if buffer_size == 0 {
            self.config(target, group)
                .await?
                .0
                .map_or(10, |s| s.consumer_buffer_size.max(1))
        } else {
            buffer_size
        };
        let id = self.next_consumer.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let (reply, admitted) = oneshot::channel();
        cmd.send(Cmd::Connect {
            id,
            capacity,
            tx,
            reply,
        })
        .map_err(|_| Self::not_found(target, group))?;
        admitted
            .await
            .map_err(|_| Self::not_found(target, group))??;
        Ok(Consumer { id, rx, cmd })
    }

    /// Acknowledges events of a group by their keys, without a consumer: for a client
    /// that polls and whose consumer may be gone (an ack after the message timeout
    /// still finishes an event). Answers [`PersistentError::NotFound`] for no such
    /// group.
    pub async fn ack(
        &self,
        target: &Target,
        group: &str,
        keys: &[EventKey],
    ) -> Result<(), PersistentError> {
        let cmd = self.handle(target, group).await?;
        cmd.send(Cmd::Ack(keys.to_vec()))
            .map_err(|_| Self::not_found(target, group))
    }

    /// Nacks events of a group by their keys, without a consumer (see
    /// [`PersistentSubscriptions::ack`]). [`NackAction::Stop`] stops no consumer here:
    /// it does nothing.
    pub async fn nack(
        &self,
        target: &Target,
        group: &str,
        keys: &[EventKey],
        action: NackAction,
    ) -> Result<(), PersistentError> {
        let cmd = self.handle(target, group).await?;
        if action == NackAction::Stop {
            return Ok(());
        }
        // Consumer ids start at 1: 0 is no consumer.
        cmd.send(Cmd::Nack(0, keys.to_vec(), action))
            .map_err(|_| Self::not_found(target, group))
    }

    /// A group's settings, as stored (a start at the end is resolved to where the end
    /// was when the group was created or updated).
    pub async fn settings(
        &self,
        target: &Target,
        group: &str,
    ) -> Result<PersistentSettings, PersistentError> {
        match self.config(target, group).await? {
            (Some(settings), _) => Ok(settings),
            (None, _) => Err(Self::not_found(target, group)),
        }
    }

    /// Delivers the group's parked events again; answers how many were queued.
    pub async fn replay_parked(
        &self,
        target: &Target,
        group: &str,
    ) -> Result<u64, PersistentError> {
        self.replay_parked_until(target, group, None).await
    }

    /// Delivers the group's parked events again up to, not including, the one at
    /// revision `stop_at` of its parked stream (all of them for `None`); answers how
    /// many were queued. Those from `stop_at` on stay parked.
    pub async fn replay_parked_until(
        &self,
        target: &Target,
        group: &str,
        stop_at: Option<u64>,
    ) -> Result<u64, PersistentError> {
        let cmd = self.handle(target, group).await?;
        let (reply, answer) = oneshot::channel();
        cmd.send(Cmd::Replay(stop_at, reply))
            .map_err(|_| Self::not_found(target, group))?;
        answer.await.map_err(|_| Self::not_found(target, group))?
    }

    /// Every group of `target` (or of every target), with what this process knows.
    pub async fn list(&self, target: Option<&Target>) -> Result<Vec<GroupInfo>, PersistentError> {
        let mut out = Vec::new();
        for (t, group, _) in self.stored().await? {
            if target.is_none_or(|x| *x == t) {
                out.push(self.info(&t, &group).await?);
            }
        }
        Ok(out)
    }

    /// One group: settings, consumers, in-flight and parked counts, checkpoint.
    pub async fn info(&self, target: &Target, group: &str) -> Result<GroupInfo, PersistentError> {
        let (Some(settings), _) = self.config(target, group).await? else {
            return Err(Self::not_found(target, group));
        };
        let cmd = self.handle(target, group).await?;
        let (reply, answer) = oneshot::channel();
        let stats = match cmd.send(Cmd::Stats(reply)) {
            Ok(()) => answer.await.unwrap_or_default(),
            Err(_) => GroupStats::default(),
        };
        let parked =
            group::count_events(self.store.as_ref(), &parked_stream(target, group)?).await?;
        Ok(GroupInfo {
            target: target.clone(),
            group: group.to_owned(),
            settings,
            parked,
            stats,
        })
    }
}

/// A consumer connected to a group. Dropping it disconnects it: its events in flight go
/// to other consumers.
#[derive(Debug)]
pub struct Consumer {
    id: ConsumerId,
    rx: mpsc::UnboundedReceiver<PersistentEvent>,
    cmd: mpsc::UnboundedSender<Cmd>,
}

impl Consumer {
    /// This consumer's id within its group.
    pub fn id(&self) -> ConsumerId {
        self.id
    }

    /// The next event; `None` once the consumer is disconnected (the group was deleted
    /// or this consumer nacked with [`NackAction::Stop`]).
    pub async fn next(&mut self) -> Option<PersistentEvent> {
        self.rx.recv().await
    }

    /// The next event if one is delivered already, without waiting.
    pub fn try_next(&mut self) -> Option<PersistentEvent> {
        self.rx.try_recv().ok()
    }

    /// Hands this consumer the events that wait for delivery now (up to its buffer
    /// size), then pauses it: it keeps the events it has until it acks or nacks them
    /// or they time out, and is given no more. Once this returns, every event
    /// delivered to it is in its queue ([`Consumer::try_next`] takes them). A client
    /// that polls (the HTTP API's leases) connects, waits for a first event, pauses,
    /// and keeps the consumer while it works on what it took.
    pub async fn pause(&self) {
        let (done, wait) = oneshot::channel();
        if self.cmd.send(Cmd::Pause(self.id, done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Acknowledges events: they are finished.
    pub fn ack(&self, keys: &[EventKey]) {
        let _ = self.cmd.send(Cmd::Ack(keys.to_vec()));
    }

    /// Refuses events with `action`.
    pub fn nack(&self, keys: &[EventKey], action: NackAction) {
        let _ = self.cmd.send(Cmd::Nack(self.id, keys.to_vec(), action));
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.cmd.send(Cmd::Disconnect(self.id));
    }
}

fn store(e: impl std::error::Error + Send + Sync + 'static) -> PersistentError {
    PersistentError::Store(Box::new(e))
}

/// Refuses settings a group could not run with.
fn validate_settings(settings: &PersistentSettings) -> Result<(), PersistentError> {
    if let Some(pattern) = &settings.pattern {
        pattern.compile()?;
    }
    Ok(())
}
