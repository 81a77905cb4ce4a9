//! The task that serves one group: takes the group's runner lock, reads its source
//! from the stored checkpoint, and carries out what the [`Dispatcher`] decides.
//!
//! One task per group and process. It serves only while it holds the group's lock, so
//! over one database only one process delivers a group's events; consumers connected
//! to a process that does not hold it stay connected and receive nothing until it
//! does. When the lock is lost, the task drops its dispatch state and starts over from
//! the stored checkpoint once it holds the lock again (events in flight then are
//! delivered again: at-least-once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::persistent::LockFactory;
use crate::persistent::records::{
    self, CheckpointRecord, ParkedRecord, PersistentSettings, StartFrom, Target,
};
use crate::persistent::{
    CompiledPattern, ConsumerId, DispatchRules, Dispatcher, EventKey, NackAction, ParkReason,
    PersistentError,
};
use crate::projection::RunnerLock;
use crate::{
    Direction, EventStore, EventSubscription, ExpectedRevision, NewEvent, Position, ReadAllOptions,
    ReadError, ReadStreamOptions, RecordedEvent, StreamName, SubscribeFrom, SubscribeStreamFrom,
    group_hash,
};

/// How often a process that does not hold a group's lock tries to take it.
pub(crate) const LOCK_RETRY: Duration = Duration::from_millis(250);

/// An event delivered to a consumer of a persistent subscription.
#[derive(Debug, Clone)]
pub struct PersistentEvent {
    /// The event.
    pub event: RecordedEvent,
    /// How often it was delivered before without being finished.
    pub retry_count: u32,
    /// What to ack or nack it by.
    pub key: EventKey,
}

/// What a group's task reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Whether this process holds the group's lock and delivers its events.
    pub serving: bool,
    /// Connected consumers: id, buffer size, events in flight.
    pub consumers: Vec<(ConsumerId, usize, usize)>,
    /// Events in flight at consumers.
    pub in_flight: usize,
    /// Events waiting for a consumer with room.
    pub waiting: usize,
    /// The stored checkpoint: every source event at or below it is finished.
    pub checkpoint: Option<u128>,
    /// The revision or position of the last source event read.
    pub last_known: Option<u128>,
    /// Events finished (acked, skipped or parked) since this process started serving.
    pub finished: u64,
}

pub(crate) enum Cmd {
    Connect {
        id: ConsumerId,
        capacity: usize,
        tx: mpsc::UnboundedSender<PersistentEvent>,
        reply: oneshot::Sender<Result<(), PersistentError>>,
    },
    Disconnect(ConsumerId),
    /// Hand the consumer what waits now, then give it nothing more; answered once
    /// done, so every delivery to it is in its channel.
    Pause(ConsumerId, oneshot::Sender<()>),
    Ack(Vec<EventKey>),
    Nack(ConsumerId, Vec<EventKey>, NackAction),
    Replay(Option<u64>, oneshot::Sender<Result<u64, PersistentError>>),
    Stats(oneshot::Sender<GroupStats>),
    Stop(oneshot::Sender<()>),
}

enum Exit {
    Stop(Option<oneshot::Sender<()>>),
    Restart,
}

pub(crate) struct GroupTask {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) target: Target,
    pub(crate) group: String,
    pub(crate) settings: PersistentSettings,
    locks: LockFactory,
    lock_name: String,
    lock: Option<Box<dyn RunnerLock>>,
    pub(crate) rx: mpsc::UnboundedReceiver<Cmd>,
    consumers: Vec<(ConsumerId, usize, mpsc::UnboundedSender<PersistentEvent>)>,
    pattern: Option<CompiledPattern>,
    epoch: Instant,
}

struct Term {
    disp: Dispatcher<RecordedEvent>,
    written: Option<u128>,
    written_at: Instant,
    finished_at_write: u64,
    last_known: Option<u128>,
    replay_upto: Option<u64>,
    replay_from: u64,
}

impl GroupTask {
    pub(crate) fn new(
        store: Arc<dyn EventStore>,
        target: Target,
        group: String,
        settings: PersistentSettings,
        locks: LockFactory,
        rx: mpsc::UnboundedReceiver<Cmd>,
    ) -> Self {
        let lock_name = format!("persistentsubscription:{target}::{group}");
        Self {
            store,
            target,
            group,
            settings,
            locks,
            lock_name,
            lock: None,
            rx,
            consumers: Vec::new(),
            pattern: None,
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) async fn run(mut self) {
        loop {
            // Wait for the lock, keeping consumers' registrations meanwhile.
            loop {
                if self.lock.is_none() {
                    match (self.locks)(self.lock_name.clone()).await {
                        Ok(lock) => self.lock = Some(lock),
                        Err(e) => {
                            tracing::warn!(group = %self.group, "making the group lock failed: {e}")
                        }
                    }
                }
                if let Some(lock) = self.lock.as_mut() {
                    match lock.try_acquire().await {
                        Ok(true) => break,
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(group = %self.group, "taking the group lock failed: {e}");
                            self.lock = None;
                        }
                    }
                }
                let sleep = tokio::time::sleep(LOCK_RETRY);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        cmd = self.rx.recv() => match cmd {
                            None => return,
                            Some(Cmd::Stop(done)) => { let _ = done.send(()); return; }
                            Some(cmd) => self.idle(cmd),
                        },
                        _ = &mut sleep => break,
                    }
                }
            }
            let exit = match self.serve().await {
                Ok(exit) => exit,
                Err(e) => {
                    tracing::warn!(group = %self.group, target = %self.target, "persistent subscription failed, restarting from its checkpoint: {e}");
                    tokio::time::sleep(LOCK_RETRY).await;
                    Exit::Restart
                }
            };
            match exit {
                Exit::Stop(done) => {
                    self.release().await;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                Exit::Restart => self.release().await,
            }
        }
    }

    async fn release(&mut self) {
        if let Some(lock) = self.lock.as_mut()
            && let Err(e) = lock.release().await
        {
            tracing::warn!(group = %self.group, "releasing the group lock failed: {e}");
            self.lock = None;
        }
    }

    /// Registers a consumer unless the group has its maximum; answers whether it did.
    fn admit(
        &mut self,
        id: ConsumerId,
        capacity: usize,
        tx: mpsc::UnboundedSender<PersistentEvent>,
        reply: oneshot::Sender<Result<(), PersistentError>>,
    ) -> bool {
        let max = self.settings.max_subscriber_count;
        if max > 0 && self.consumers.len() >= max {
            let _ = reply.send(Err(PersistentError::MaxSubscribers {
                target: self.target.to_string(),
                group: self.group.clone(),
                max,
            }));
            return false;
        }
        self.consumers.push((id, capacity, tx));
        let _ = reply.send(Ok(()));
        true
    }

    /// Records that consumer `id` is paused (capacity 0), so that it stays paused
    /// when the task serves again after losing its lock.
    fn pause_registration(&mut self, id: ConsumerId) {
        if let Some(c) = self.consumers.iter_mut().find(|c| c.0 == id) {
            c.1 = 0;
        }
    }

    /// A command while not serving.
    fn idle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Connect {
                id,
                capacity,
                tx,
                reply,
            } => {
                self.admit(id, capacity, tx, reply);
            }
            Cmd::Disconnect(id) | Cmd::Nack(id, _, NackAction::Stop) => {
                self.consumers.retain(|c| c.0 != id)
            }
            Cmd::Pause(id, done) => {
                self.pause_registration(id);
                let _ = done.send(());
            }
            Cmd::Ack(_) | Cmd::Nack(..) | Cmd::Stop(_) => {}
            Cmd::Replay(_, reply) => {
                let _ = reply.send(Err(PersistentError::NotServing {
                    group: self.group.clone(),
                }));
            }
            Cmd::Stats(reply) => {
                let _ = reply.send(GroupStats {
                    consumers: self.consumers.iter().map(|c| (c.0, c.1, 0)).collect(),
                    ..GroupStats::default()
                });
            }
        }
    }

    async fn load_checkpoint(&self) -> Result<Option<u128>, PersistentError> {
        let stream = records::checkpoint_stream(&self.target, &self.group)?;
        match self
            .store
            .read_stream(&stream, ReadStreamOptions::backwards().max_count(1))
            .await
        {
            Ok(events) => match events.first() {
                Some(e) => Ok(Some(
                    e.json::<CheckpointRecord>().map_err(store)?.checkpoint,
                )),
                None => Ok(None),
            },
            Err(ReadError::StreamNotFound { .. }) => Ok(None),
            Err(e) => Err(store(e)),
        }
    }

    async fn subscribe(&self, after: Option<u128>) -> Result<EventSubscription, PersistentError> {
        match &self.target {
            Target::Stream(s) => {
                let from = match after {
                    Some(r) => SubscribeStreamFrom::After(r as u64),
                    None => SubscribeStreamFrom::Start,
                };
                self.store.subscribe_to_stream(s, from).await.map_err(store)
            }
            Target::All => {
                let from = match after {
                    Some(p) => SubscribeFrom::After(Position::new(p)),
                    None => SubscribeFrom::Start,
                };
                let filter = self.settings.filter.clone();
                self.store
                    .subscribe_to_all(from, filter)
                    .await
                    .map_err(store)
            }
        }
    }

    fn key_of(&self, e: &RecordedEvent) -> u128 {
        match self.target {
            Target::Stream(_) => u128::from(e.revision),
            Target::All => e.position.as_u128(),
        }
    }

    async fn serve(&mut self) -> Result<Exit, PersistentError> {
        self.pattern = match (&self.target, &self.settings.pattern) {
            (Target::All, Some(pattern)) => Some(pattern.compile()?),
            _ => None,
        };
        let stored = self.load_checkpoint().await?;
        let start = stored.or(match self.settings.start_from {
            StartFrom::After(p) => Some(p),
            StartFrom::Start | StartFrom::End => None,
        });
        let rules = DispatchRules {
            strategy: self.settings.strategy,
            message_timeout_ms: self.settings.message_timeout_ms,
            max_retry_count: self.settings.max_retry_count,
        };
        let mut term = Term {
            disp: Dispatcher::new(rules, start),
            written: stored,
            written_at: Instant::now(),
            finished_at_write: 0,
            last_known: start,
            replay_upto: None,
            replay_from: 0,
        };
        for (id, capacity, _) in &self.consumers {
            term.disp.connect(*id, *capacity);
            if *capacity == 0 {
                term.disp.pause(*id);
            }
        }
        let mut sub = self.subscribe(start).await?;
        let mut sub_open = true;
        let tick_ms = (self.settings.message_timeout_ms / 4).clamp(5, 100);
        let mut tick = tokio::time::interval(Duration::from_millis(tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let live = self.settings.live_buffer_size.max(1);
        loop {
            let room = term.disp.outstanding() < live;
            tokio::select! {
                // Reading first keeps the live buffer full while acks pour in (the
                // branch is off once it is full, so commands never starve).
                biased;
                event = sub.next(), if room && sub_open => {
                    match event {
                        Some(Ok(e)) => self.push(&mut term, e),
                        Some(Err(e)) => return Err(store(e)),
                        None => sub_open = false,
                    }
                    while term.disp.outstanding() < live {
                        match sub.next().now_or_never() {
                            Some(Some(Ok(e))) => self.push(&mut term, e),
                            Some(Some(Err(e))) => return Err(store(e)),
                            Some(None) => { sub_open = false; break; }
                            None => break,
                        }
                    }
                }
                cmd = self.rx.recv() => {
                    let Some(cmd) = cmd else { return self.stop(&mut term, None).await };
                    if let Some(exit) = self.command(&mut term, cmd).await? {
                        return Ok(exit);
                    }
                    while let Ok(cmd) = self.rx.try_recv() {
                        if let Some(exit) = self.command(&mut term, cmd).await? {
                            return Ok(exit);
                        }
                    }
                }
                _ = tick.tick() => {
                    term.disp.expire(self.now());
                    if !self.lock.as_ref().is_some_and(|l| l.is_held()) {
                        tracing::warn!(group = %self.group, "lost the group lock; another process serves it now");
                        return Ok(Exit::Restart);
                    }
                    self.checkpoint(&mut term, false).await?;
                    self.finish_replay(&mut term).await?;
                }
            }
            self.pump(&mut term).await?;
        }
    }

    fn push(&self, term: &mut Term, e: RecordedEvent) {
        if self.target == Target::All
            && (records::is_bookkeeping(e.stream.category())
                || self.pattern.as_ref().is_some_and(|p| !p.matches(&e)))
        {
            return;
        }
        let key = self.key_of(&e);
        term.last_known = Some(key);
        let pin = group_hash(e.stream.as_str());
        term.disp.push(EventKey::Source(key), pin, e);
    }

    async fn command(
        &mut self,
        term: &mut Term,
        cmd: Cmd,
    ) -> Result<Option<Exit>, PersistentError> {
        match cmd {
            Cmd::Connect {
                id,
                capacity,
                tx,
                reply,
            } => {
                if self.admit(id, capacity, tx, reply) {
                    term.disp.connect(id, capacity);
                }
            }
            Cmd::Disconnect(id) => {
                self.consumers.retain(|c| c.0 != id);
                term.disp.disconnect(id);
            }
            Cmd::Pause(id, done) => {
                self.pump(term).await?;
                self.pause_registration(id);
                term.disp.pause(id);
                let _ = done.send(());
            }
            Cmd::Ack(keys) => keys.into_iter().for_each(|k| term.disp.ack(k)),
            Cmd::Nack(id, keys, action) => {
                if action == NackAction::Stop {
                    // Even a stop naming no event disconnects the consumer.
                    self.consumers.retain(|c| c.0 != id);
                    term.disp.disconnect(id);
                }
                for k in keys {
                    term.disp.nack(id, k, action);
                }
            }
            Cmd::Replay(stop_at, reply) => {
                let r = self.replay(term, stop_at).await;
                let _ = reply.send(r);
            }
            Cmd::Stats(reply) => {
                let (in_flight, waiting, _) = term.disp.counts();
                let _ = reply.send(GroupStats {
                    serving: true,
                    consumers: term.disp.consumers(),
                    in_flight,
                    waiting,
                    checkpoint: term.written,
                    last_known: term.last_known,
                    finished: term.disp.finished(),
                });
            }
            Cmd::Stop(done) => return self.stop(term, Some(done)).await.map(Some),
        }
        Ok(None)
    }

    async fn stop(
        &mut self,
        term: &mut Term,
        done: Option<oneshot::Sender<()>>,
    ) -> Result<Exit, PersistentError> {
        self.pump(term).await?;
        self.checkpoint(term, true).await?;
        Ok(Exit::Stop(done))
    }

    /// Sends deliveries, parks what is to be parked, checkpoints when due by count.
    async fn pump(&mut self, term: &mut Term) -> Result<(), PersistentError> {
        for (key, reason, event) in term.disp.take_parking() {
            match self.park(&event, reason).await {
                Ok(()) => term.disp.parked(key),
                Err(e) => {
                    term.disp.park_failed(key, reason);
                    return Err(e);
                }
            }
        }
        let now = self.now();
        for d in term.disp.dispatch(now) {
            let sent = self
                .consumers
                .iter()
                .find(|c| c.0 == d.consumer)
                .is_some_and(|c| {
                    c.2.send(PersistentEvent {
                        event: d.item,
                        retry_count: d.retry_count,
                        key: d.key,
                    })
                    .is_ok()
                });
            if !sent {
                self.consumers.retain(|c| c.0 != d.consumer);
                term.disp.disconnect(d.consumer);
            }
        }
        self.checkpoint(term, false).await
    }

    async fn park(&self, event: &RecordedEvent, reason: ParkReason) -> Result<(), PersistentError> {
        let stream = records::parked_stream(&self.target, &self.group)?;
        let record = ParkedRecord {
            stream: event.stream.clone(),
            revision: event.revision,
            position: event.position.as_u128(),
            reason: match reason {
                ParkReason::Nacked => "nacked".to_owned(),
                ParkReason::MaxRetries => "max retry count".to_owned(),
            },
        };
        let new = NewEvent::json(records::PARKED, &record).map_err(store)?;
        self.store
            .append(&stream, ExpectedRevision::Any, vec![new])
            .await
            .map_err(store)?;
        Ok(())
    }

    /// Writes the checkpoint when it moved and the settings say it is due (or `force`).
    async fn checkpoint(&self, term: &mut Term, force: bool) -> Result<(), PersistentError> {
        let Some(at) = term.disp.checkpoint() else {
            return Ok(());
        };
        if term.written == Some(at) {
            return Ok(());
        }
        let count = term.disp.finished() - term.finished_at_write;
        let s = &self.settings;
        let due = force
            || count >= s.max_checkpoint_count
            || (count >= s.min_checkpoint_count
                && term.written_at.elapsed() >= Duration::from_millis(s.checkpoint_after_ms));
        if !due {
            return Ok(());
        }
        let stream = records::checkpoint_stream(&self.target, &self.group)?;
        let new = NewEvent::json(records::CHECKPOINT, &CheckpointRecord { checkpoint: at })
            .map_err(store)?;
        self.store
            .append(&stream, ExpectedRevision::Any, vec![new])
            .await
            .map_err(store)?;
        term.written = Some(at);
        term.written_at = Instant::now();
        term.finished_at_write = term.disp.finished();
        Ok(())
    }

    /// Queues the parked events (those below revision `stop_at` of the parked stream,
    /// when given) for delivery again; answers how many.
    async fn replay(&self, term: &mut Term, stop_at: Option<u64>) -> Result<u64, PersistentError> {
        let stream = records::parked_stream(&self.target, &self.group)?;
        let options = ReadStreamOptions::forwards().from_revision(term.replay_from);
        let links = match self.store.read_stream(&stream, options).await {
            Ok(events) => events,
            Err(ReadError::StreamNotFound { .. }) => Vec::new(),
            Err(e) => return Err(store(e)),
        };
        let mut count = 0;
        for link in links {
            if stop_at.is_some_and(|s| link.revision >= s) {
                break;
            }
            let record: ParkedRecord = link.json().map_err(store)?;
            let mut options = ReadAllOptions::forwards().max_count(1);
            options.direction = Direction::Forwards;
            options.from = Some(Position::new(record.position));
            let original = self.store.read_all(options).await.map_err(store)?;
            term.replay_upto = Some(link.revision);
            term.replay_from = link.revision + 1;
            if let Some(event) = original.into_iter().next()
                && event.position.as_u128() == record.position
            {
                let pin = group_hash(event.stream.as_str());
                term.disp.push(EventKey::Replay(link.revision), pin, event);
                count += 1;
            }
        }
        Ok(count)
    }

    /// Once every replayed event is finished, hides the replayed links from the parked
    /// stream (its `truncate_before`).
    async fn finish_replay(&self, term: &mut Term) -> Result<(), PersistentError> {
        let Some(upto) = term.replay_upto else {
            return Ok(());
        };
        if term.disp.replaying() {
            return Ok(());
        }
        let stream = records::parked_stream(&self.target, &self.group)?;
        let mut metadata = self
            .store
            .stream_metadata(&stream)
            .await
            .map_err(store)?
            .unwrap_or_default();
        metadata.truncate_before = Some(upto + 1);
        self.store
            .set_stream_metadata(&stream, metadata)
            .await
            .map_err(store)?;
        term.replay_upto = None;
        Ok(())
    }
}

/// The number of visible events in `stream` (0 when it does not exist).
pub(crate) async fn count_events(
    events: &dyn EventStore,
    stream: &StreamName,
) -> Result<u64, PersistentError> {
    match events
        .read_stream(stream, ReadStreamOptions::forwards())
        .await
    {
        Ok(events) => Ok(events.len() as u64),
        Err(ReadError::StreamNotFound { .. }) => Ok(0),
        Err(e) => Err(store(e)),
    }
}

fn store(e: impl std::error::Error + Send + Sync + 'static) -> PersistentError {
    PersistentError::Store(Box::new(e))
}
