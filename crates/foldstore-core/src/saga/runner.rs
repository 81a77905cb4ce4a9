//! The saga runner: follows `$all`, dispatches reactions, fires schedules, records
//! its position and dead letters in the event store.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::future::{Either, select};
use serde::Serialize;
use uuid::Uuid;

use crate::projection::{HandlerError, RunnerLock, StopSignal, validate_name};
use crate::saga::context::derive_id;
use crate::saga::records::{
    self, CANCELLED, Cancelled, DEAD_LETTERED, DeadLetter, FIRED, Fired, PROCESSED, Processed,
    SCHEDULED, Scheduled,
};
use crate::saga::status::{ActiveGuard, lock};
use crate::saga::{
    Clock, CommandBus, DispatchContext, DispatchErrorKind, EventRef, Failure, Saga, SagaError,
    SagaMonitor, SagaOptions, SagaStatus, SystemClock,
};
use crate::{
    EventStore, ExpectedRevision, NewEvent, Position, ReadAllOptions, ReadError, ReadStreamOptions,
    RecordedEvent, StreamName, SubscribeFrom,
};

#[derive(Debug, Clone)]
struct Pending<C> {
    record: Scheduled,
    command: C,
}

/// What became of a dispatched command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Dispatched,
    /// Rejected, and its compensations dispatched.
    Compensated,
}

/// A failed attempt: worth retrying, or fatal for the runner.
enum Attempt {
    Failed(String),
    Fatal(SagaError),
}

/// Runs a [`Saga`]: follows `$all` (through the saga's filter) from the saga's recorded
/// position, dispatches each reaction's commands through a [`CommandBus`], records
/// schedules and fires them when due, and asks for compensation when a command is
/// rejected. Everything it records lives in the event store, in three streams per saga
/// (`saga_position-<name>`, `saga_schedule-<name>`, `saga_deadletter-<name>`), with
/// deterministic event ids, so a restart (or a replay from the start) writes nothing
/// twice:
///
/// - **position**: recorded after each event the saga acted on;
/// - **schedules**: recorded when made, reloaded on start, marked fired after
///   dispatch; a schedule due while the runner was down fires once after it starts;
/// - **failures**: a reaction that errs, or a command that fails with
///   [`DispatchErrorKind::Transient`], is retried up to
///   [`SagaOptions::max_attempts`], then dead-lettered with the error, and the saga
///   moves on; a command [`DispatchErrorKind::Rejected`] is compensated
///   ([`Saga::compensate`]).
///
/// Run one runner per saga at a time: give it a [`RunnerLock`]
/// ([`SagaRunner::lock`]) when it runs in several processes, and only the holder
/// works while the others wait.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use async_trait::async_trait;
/// use foldstore_core::projection::HandlerError;
/// use foldstore_core::saga::{CommandBus, DispatchContext, DispatchError, Reaction, Saga, SagaOptions, SagaRunner};
/// use foldstore_core::{EventStore, ExpectedRevision, InMemoryStore, NewEvent, RecordedEvent, StreamName};
///
/// struct Greeter;
/// impl Saga for Greeter {
///     type Command = String;
///     fn name(&self) -> &str { "greeter" }
///     fn react(&self, e: &RecordedEvent) -> Result<Reaction<String>, HandlerError> {
///         Ok(match e.event_type.as_str() {
///             "Joined" => Reaction::new().command(format!("greet {}", e.stream.id())),
///             _ => Reaction::new(),
///         })
///     }
/// }
///
/// #[derive(Default)]
/// struct Outbox(Mutex<Vec<(String, DispatchContext)>>);
/// #[async_trait]
/// impl CommandBus<String> for Outbox {
///     async fn dispatch(&self, command: String, context: DispatchContext) -> Result<(), DispatchError> {
///         self.0.lock().unwrap().push((command, context));
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = Arc::new(InMemoryStore::new());
/// let member = StreamName::new("member-ada")?;
/// store.append(&member, ExpectedRevision::Any, vec![NewEvent::json("Joined", &())?]).await?;
///
/// let mut runner = SagaRunner::new(store.clone(), Greeter, Outbox::default())?;
/// runner.catch_up().await?;
/// // A second runner resumes after the recorded position: nothing is dispatched again.
/// let mut again = SagaRunner::new(store.clone(), Greeter, Outbox::default())?;
/// again.catch_up().await?;
///
/// let sent = runner.bus().0.lock().unwrap().clone();
/// assert_eq!(sent.len(), 1);
/// let (command, context) = &sent[0];
/// assert_eq!(command, "greet ada");
/// let joined = store.read_stream(&member, Default::default()).await?;
/// assert_eq!(context.causation_id, joined[0].id);
/// assert!(again.bus().0.lock().unwrap().is_empty());
/// # Ok(())
/// # }
/// ```
pub struct SagaRunner<S: Saga, B> {
    store: Arc<dyn EventStore>,
    lock: Option<Box<dyn RunnerLock>>,
    saga: S,
    bus: B,
    clock: Arc<dyn Clock>,
    options: SagaOptions,
    name: String,
    pending: BTreeMap<Uuid, Pending<S::Command>>,
    done: HashSet<Uuid>,
    status: Arc<Mutex<SagaStatus>>,
}

impl<S: Saga, B> std::fmt::Debug for SagaRunner<S, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaRunner")
            .field("name", &self.name)
            .field("options", &self.options)
            .field("status", &*lock(&self.status))
            .finish_non_exhaustive()
    }
}

impl<S: Saga, B: CommandBus<S::Command>> SagaRunner<S, B> {
    /// A runner of `saga` over `store`, dispatching through `bus`, on the system clock.
    pub fn new(store: Arc<dyn EventStore>, saga: S, bus: B) -> Result<Self, SagaError> {
        let name = saga.name().to_owned();
        if validate_name(&name).is_err() {
            return Err(SagaError::InvalidName { name });
        }
        Ok(Self {
            store,
            lock: None,
            saga,
            bus,
            clock: Arc::new(SystemClock),
            options: SagaOptions::default(),
            name,
            pending: BTreeMap::new(),
            done: HashSet::new(),
            status: Arc::new(Mutex::new(SagaStatus::default())),
        })
    }

    /// Uses `clock` for schedules.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Makes the runner take `lock` before it works (and check it still holds it
    /// before each event and schedule), so that one runner of the saga is active
    /// across processes.
    pub fn lock(mut self, lock: impl RunnerLock + 'static) -> Self {
        self.lock = Some(Box::new(lock));
        self
    }

    /// Sets the options.
    pub fn options(mut self, options: SagaOptions) -> Self {
        self.options = options;
        self
    }

    /// A monitor of this runner.
    pub fn monitor(&self) -> SagaMonitor {
        SagaMonitor(self.status.clone())
    }

    /// The bus.
    pub fn bus(&self) -> &B {
        &self.bus
    }

    fn lock_err(&self, source: HandlerError) -> SagaError {
        SagaError::Lock {
            saga: self.name.clone(),
            source,
        }
    }

    /// Whether the lock (if any) is held; takes it when free.
    async fn try_lock(&mut self) -> Result<bool, SagaError> {
        let Some(lock) = self.lock.as_mut() else {
            return Ok(true);
        };
        if lock.is_held() {
            return Ok(true);
        }
        let acquired = lock.try_acquire().await;
        acquired.map_err(|e| self.lock_err(e))
    }

    fn check_held(&self) -> Result<(), SagaError> {
        match &self.lock {
            Some(lock) if !lock.is_held() => Err(SagaError::LockLost {
                saga: self.name.clone(),
                reason: "the runner lost its lock".to_owned(),
            }),
            _ => Ok(()),
        }
    }

    async fn release(&mut self) -> Result<(), SagaError> {
        let Some(lock) = self.lock.as_mut() else {
            return Ok(());
        };
        let released = lock.release().await;
        released.map_err(|e| self.lock_err(e))
    }

    fn read_err(&self, source: ReadError) -> SagaError {
        SagaError::Read {
            saga: self.name.clone(),
            source,
        }
    }

    fn corrupt(&self, message: impl std::fmt::Display) -> SagaError {
        SagaError::Corrupt {
            saga: self.name.clone(),
            message: message.to_string(),
        }
    }

    async fn read_records(
        &self,
        stream: &StreamName,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, SagaError> {
        match self.store.read_stream(stream, options).await {
            Ok(events) => Ok(events),
            Err(ReadError::StreamNotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(self.read_err(e)),
        }
    }

    /// The saga's recorded position: every event up to it has been handled.
    pub async fn position(&self) -> Result<Option<Position>, SagaError> {
        let stream = records::stream(records::POSITION_CATEGORY, &self.name);
        let last = self
            .read_records(&stream, ReadStreamOptions::backwards().max_count(1))
            .await?;
        match last.first() {
            Some(e) => Ok(Some(
                e.json::<Processed>().map_err(|e| self.corrupt(e))?.position,
            )),
            None => Ok(None),
        }
    }

    /// Reloads the schedules from the store.
    async fn load_schedules(&mut self) -> Result<(), SagaError> {
        let stream = records::stream(records::SCHEDULE_CATEGORY, &self.name);
        let events = self
            .read_records(&stream, ReadStreamOptions::forwards())
            .await?;
        self.pending.clear();
        self.done.clear();
        for e in events {
            match e.event_type.as_str() {
                SCHEDULED => {
                    let record: Scheduled = e.json().map_err(|e| self.corrupt(e))?;
                    if self.done.contains(&record.schedule_id) {
                        continue;
                    }
                    let command = serde_json::from_value(record.command.clone()).map_err(|e| {
                        self.corrupt(format!("scheduled command {}: {e}", record.key))
                    })?;
                    self.pending
                        .insert(record.schedule_id, Pending { record, command });
                }
                FIRED => {
                    let record: Fired = e.json().map_err(|e| self.corrupt(e))?;
                    self.pending.remove(&record.schedule_id);
                    self.done.insert(record.schedule_id);
                }
                CANCELLED => {
                    let record: Cancelled = e.json().map_err(|e| self.corrupt(e))?;
                    for id in record.schedule_ids {
                        self.pending.remove(&id);
                        self.done.insert(id);
                    }
                }
                _ => {}
            }
        }
        lock(&self.status).schedules_pending = self.pending.len();
        Ok(())
    }

    async fn append_record<T: Serialize>(
        &self,
        category: &str,
        event_type: &str,
        id: Uuid,
        what: &'static str,
        record: &T,
    ) -> Result<(), SagaError> {
        let event = NewEvent::json(event_type, record)
            .map_err(|e| self.corrupt(e))?
            .with_id(id);
        self.store
            .append(
                &records::stream(category, &self.name),
                ExpectedRevision::Any,
                vec![event],
            )
            .await
            .map(|_| ())
            .map_err(|source| SagaError::Append {
                saga: self.name.clone(),
                what,
                source,
            })
    }

    async fn dead_letter(
        &self,
        trigger: &EventRef,
        schedule: Option<&str>,
        error: String,
        attempts: u32,
    ) -> Result<(), SagaError> {
        let id = derive_id(&[
            &self.name,
            &trigger.id.to_string(),
            "deadletter",
            schedule.unwrap_or(""),
        ]);
        let letter = DeadLetter {
            saga: self.name.clone(),
            event: trigger.clone(),
            schedule: schedule.map(str::to_owned),
            error,
            attempts,
        };
        self.append_record(
            records::DEAD_LETTER_CATEGORY,
            DEAD_LETTERED,
            id,
            "dead letter",
            &letter,
        )
        .await?;
        lock(&self.status).dead_letters += 1;
        Ok(())
    }

    /// Dispatches `command`; when it is rejected, dispatches the saga's compensations.
    /// `Err` is a failure worth retrying (transient, or a compensation that failed).
    async fn dispatch_or_compensate(
        &self,
        command: S::Command,
        context: DispatchContext,
        trigger: &EventRef,
        schedule: Option<&str>,
        compensation_kind: &str,
    ) -> Result<Outcome, String> {
        let error = match self.bus.dispatch(command.clone(), context.clone()).await {
            Ok(()) => {
                lock(&self.status).commands_dispatched += 1;
                return Ok(Outcome::Dispatched);
            }
            Err(e) if e.kind == DispatchErrorKind::Rejected => e,
            Err(e) => return Err(e.to_string()),
        };
        lock(&self.status).commands_rejected += 1;
        let failure = Failure {
            trigger: trigger.clone(),
            command,
            error,
            schedule: schedule.map(str::to_owned),
        };
        for (j, compensation) in self.saga.compensate(&failure).into_iter().enumerate() {
            let ctx = DispatchContext::derived(
                &self.name,
                context.correlation_id,
                trigger.id,
                compensation_kind,
                j as u32,
            );
            self.bus
                .dispatch(compensation, ctx)
                .await
                .map_err(|e| format!("compensation {j} failed: {e}"))?;
            lock(&self.status).commands_dispatched += 1;
        }
        Ok(Outcome::Compensated)
    }

    /// One attempt at an event's reaction. `Ok(true)` when the saga acted.
    async fn try_handle(&mut self, event: &RecordedEvent) -> Result<bool, Attempt> {
        let reaction = self
            .saga
            .react(event)
            .map_err(|e| Attempt::Failed(format!("the saga's reaction failed: {e}")))?;
        if reaction.is_empty() {
            return Ok(false);
        }
        let trigger = EventRef::from(event);
        let event_id = event.id.to_string();
        for key in &reaction.cancellations {
            let ids: Vec<Uuid> = self
                .pending
                .iter()
                .filter(|(_, p)| &p.record.key == key)
                .map(|(id, _)| *id)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let id = derive_id(&[&self.name, &event_id, "cancel", key]);
            let record = Cancelled {
                key: key.clone(),
                schedule_ids: ids.clone(),
            };
            self.append_record(
                records::SCHEDULE_CATEGORY,
                CANCELLED,
                id,
                "cancellation",
                &record,
            )
            .await
            .map_err(Attempt::Fatal)?;
            for id in ids {
                self.pending.remove(&id);
                self.done.insert(id);
            }
        }
        for schedule in &reaction.schedules {
            let schedule_id = derive_id(&[&self.name, &event_id, "schedule", &schedule.key]);
            if self.done.contains(&schedule_id) || self.pending.contains_key(&schedule_id) {
                continue; // a replay: recorded already
            }
            let record = Scheduled {
                schedule_id,
                key: schedule.key.clone(),
                due: schedule.due,
                command: serde_json::to_value(&schedule.command)
                    .map_err(|e| Attempt::Fatal(self.corrupt(e)))?,
                trigger: trigger.clone(),
                correlation_id: event.metadata.correlation_id().unwrap_or(event.id),
            };
            self.append_record(
                records::SCHEDULE_CATEGORY,
                SCHEDULED,
                schedule_id,
                "schedule",
                &record,
            )
            .await
            .map_err(Attempt::Fatal)?;
            self.pending.insert(
                schedule_id,
                Pending {
                    record,
                    command: schedule.command.clone(),
                },
            );
        }
        lock(&self.status).schedules_pending = self.pending.len();
        for (i, command) in reaction.commands.into_iter().enumerate() {
            let context = DispatchContext::for_event(&self.name, event, "command", i as u32);
            let outcome = self
                .dispatch_or_compensate(
                    command,
                    context,
                    &trigger,
                    None,
                    &format!("compensate-{i}"),
                )
                .await
                .map_err(Attempt::Failed)?;
            if outcome == Outcome::Compensated {
                break; // rejected and compensated: the rest of the reaction is dropped
            }
        }
        Ok(true)
    }

    /// Handles one event with retries; `Ok(true)` when it acted or was dead-lettered.
    async fn handle(&mut self, event: &RecordedEvent) -> Result<bool, SagaError> {
        if records::is_bookkeeping(event.stream.category()) {
            return Ok(false);
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.try_handle(event).await {
                Ok(acted) => return Ok(acted),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Failed(message)) => {
                    if attempts >= self.options.max_attempts.max(1) {
                        self.dead_letter(&EventRef::from(event), None, message, attempts)
                            .await?;
                        return Ok(true);
                    }
                    tokio::time::sleep(self.options.retry_delay * attempts).await;
                }
            }
        }
    }

    async fn handle_and_record(
        &mut self,
        event: &RecordedEvent,
        quiet: &mut u32,
    ) -> Result<(), SagaError> {
        self.check_held()?;
        let acted = self.handle(event).await?;
        *quiet = if acted { 0 } else { *quiet + 1 };
        if acted || *quiet >= self.options.quiet_checkpoint_every.max(1) {
            *quiet = 0;
            let id = derive_id(&[&self.name, &event.id.to_string(), "processed"]);
            let record = Processed {
                position: event.position,
                event_id: event.id,
            };
            self.append_record(
                records::POSITION_CATEGORY,
                PROCESSED,
                id,
                "position",
                &record,
            )
            .await?;
        }
        let mut status = lock(&self.status);
        status.position = Some(event.position);
        status.events_handled += 1;
        Ok(())
    }

    /// Dispatches every schedule that is due.
    async fn fire_due(&mut self) -> Result<(), SagaError> {
        let now = self.clock.now();
        let mut due: Vec<(chrono::DateTime<chrono::Utc>, Uuid)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.record.due <= now)
            .map(|(id, p)| (p.record.due, *id))
            .collect();
        due.sort();
        for (_, schedule_id) in due {
            self.check_held()?;
            let Some(pending) = self.pending.get(&schedule_id).cloned() else {
                continue;
            };
            let record = &pending.record;
            let kind = format!("schedule:{}", record.key);
            let mut attempts = 0;
            let error = loop {
                attempts += 1;
                let context = DispatchContext::derived(
                    &self.name,
                    record.correlation_id,
                    record.trigger.id,
                    &kind,
                    0,
                );
                match self
                    .dispatch_or_compensate(
                        pending.command.clone(),
                        context,
                        &record.trigger,
                        Some(&record.key),
                        &format!("compensate-{kind}"),
                    )
                    .await
                {
                    Ok(_) => break None,
                    Err(message) if attempts >= self.options.max_attempts.max(1) => {
                        self.dead_letter(
                            &record.trigger,
                            Some(&record.key),
                            message.clone(),
                            attempts,
                        )
                        .await?;
                        break Some(message);
                    }
                    Err(_) => tokio::time::sleep(self.options.retry_delay * attempts).await,
                }
            };
            let id = derive_id(&[&self.name, &schedule_id.to_string(), "fired"]);
            let fired = Fired { schedule_id, error };
            self.append_record(
                records::SCHEDULE_CATEGORY,
                FIRED,
                id,
                "fired schedule",
                &fired,
            )
            .await?;
            self.pending.remove(&schedule_id);
            self.done.insert(schedule_id);
            let mut status = lock(&self.status);
            status.schedules_fired += 1;
            status.schedules_pending = self.pending.len();
        }
        Ok(())
    }

    async fn start_position(&mut self) -> Result<Option<Position>, SagaError> {
        self.load_schedules().await?;
        if self.options.from_start {
            Ok(None)
        } else {
            self.position().await
        }
    }

    /// Handles every event up to the store's head as it is now and fires the schedules
    /// that are due, then returns. With a [`RunnerLock`], fails with
    /// [`SagaError::LockLost`] when another runner holds it.
    pub async fn catch_up(&mut self) -> Result<(), SagaError> {
        if !self.try_lock().await? {
            return Err(SagaError::LockLost {
                saga: self.name.clone(),
                reason: "another runner holds the saga's lock".to_owned(),
            });
        }
        let result = self.catch_up_holding().await;
        let released = self.release().await;
        result.and(released)
    }

    async fn catch_up_holding(&mut self) -> Result<(), SagaError> {
        let mut position = self.start_position().await?;
        self.fire_due().await?;
        let head = self
            .store
            .head_position()
            .await
            .map_err(|e| self.read_err(e))?;
        let filter = self.saga.filter();
        let mut quiet = 0;
        while head.is_some() && position < head {
            let mut options = ReadAllOptions::forwards()
                .max_count(self.options.batch_size.max(1))
                .filter(filter.clone());
            options.from = position.map(Position::next);
            let page = self
                .store
                .read_all(options)
                .await
                .map_err(|e| self.read_err(e))?;
            if page.is_empty() {
                break;
            }
            let mut past_head = false;
            for event in &page {
                if Some(event.position) > head {
                    past_head = true;
                    break;
                }
                self.handle_and_record(event, &mut quiet).await?;
                position = Some(event.position);
            }
            // The events the saga wants may end before the head (the head is an event
            // its filter skips) while its own commands append newer ones it wants:
            // those are past the head, for the next call. Without this the loop read
            // them again and again, never passing them.
            if past_head {
                break;
            }
        }
        self.fire_due().await
    }

    /// Follows the store until `stop` fires: takes the [`RunnerLock`] if it has one
    /// (trying again every [`SagaOptions::lock_retry`]), reloads the schedules,
    /// resumes after the recorded position, handles events as they come and fires
    /// schedules when due. A stop lets the event being handled finish first; the lock
    /// is released when it returns.
    pub async fn run(&mut self, stop: StopSignal) -> Result<(), SagaError> {
        let _active = ActiveGuard(self.status.clone());
        let result = self.run_holding(stop).await;
        let released = self.release().await;
        result.and(released)
    }

    async fn run_holding(&mut self, mut stop: StopSignal) -> Result<(), SagaError> {
        loop {
            if stop.is_stopped() {
                return Ok(());
            }
            if self.try_lock().await? {
                break;
            }
            lock(&self.status).waiting_for_lock = true;
            let wait = Box::pin(tokio::time::sleep(self.options.lock_retry));
            if let Either::Left(_) = select(Box::pin(stop.stopped()), wait).await {
                return Ok(());
            }
        }
        lock(&self.status).waiting_for_lock = false;
        let position = self.start_position().await?;
        lock(&self.status).active = true;
        let from = position.map_or(SubscribeFrom::Start, SubscribeFrom::After);
        let subscription = self
            .store
            .subscribe_to_all(from, self.saga.filter())
            .await
            .map_err(|e| self.read_err(e))?;
        let mut batches = subscription.ready_chunks(self.options.batch_size.max(1));
        let mut quiet = 0;
        loop {
            if stop.is_stopped() {
                return Ok(());
            }
            self.fire_due().await?;
            let clock = self.clock.clone();
            let next_due = self.pending.values().map(|p| p.record.due).min();
            let timer = Box::pin(async move {
                match next_due {
                    Some(at) => clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            });
            let work = select(batches.next(), timer);
            let chunk = match select(Box::pin(stop.stopped()), work).await {
                Either::Left(_) => return Ok(()),
                Either::Right((Either::Left((None, _)), _)) => return Ok(()),
                Either::Right((Either::Left((Some(chunk), _)), _)) => chunk,
                Either::Right((Either::Right(_), _)) => continue,
            };
            for item in chunk {
                let event = item.map_err(|source| SagaError::Subscription {
                    saga: self.name.clone(),
                    source,
                })?;
                self.handle_and_record(&event, &mut quiet).await?;
            }
        }
    }
}
