//! Sagas over the in-memory store (issue 5): replays and restarts write nothing new,
//! a timeout scheduled before a restart fires once after it, rejected commands are
//! compensated, and a poisoned event lands in the dead-letter stream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use foldstore_core::projection::{HandlerError, Stopper};
use foldstore_core::saga::{
    CommandBus, DeadLetter, DispatchContext, DispatchError, Failure, ManualClock, Reaction, Saga,
    SagaOptions, SagaRunner, SagaSpec, dead_letter_stream, recorded_event,
};
use foldstore_core::{
    EventFilter, EventStore, ExpectedRevision, InMemoryStore, NewEvent, ReadAllOptions,
    ReadStreamOptions, RecordedEvent, StreamName,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Command {
    Reserve { order: String },
    Charge { order: String, amount: i64 },
    Release { order: String },
    CancelOrder { order: String },
}

impl Command {
    fn order(&self) -> &str {
        match self {
            Command::Reserve { order }
            | Command::Charge { order, .. }
            | Command::Release { order }
            | Command::CancelOrder { order } => order,
        }
    }
}

/// Placed: reserve, charge, and cancel the order if unpaid after 30 minutes.
/// Paid: cancel that timeout. Broken: the reaction fails (a poisoned event).
struct Fulfilment {
    epoch: DateTime<Utc>,
}

impl Saga for Fulfilment {
    type Command = Command;
    fn name(&self) -> &str {
        "fulfilment"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::category("order").unwrap()
    }
    fn react(&self, event: &RecordedEvent) -> Result<Reaction<Command>, HandlerError> {
        let order = event.stream.id().to_owned();
        Ok(match event.event_type.as_str() {
            "Placed" => {
                let amount = event.json::<serde_json::Value>()?["amount"]
                    .as_i64()
                    .ok_or("Placed without an amount")?;
                Reaction::new()
                    .command(Command::Reserve {
                        order: order.clone(),
                    })
                    .command(Command::Charge {
                        order: order.clone(),
                        amount,
                    })
                    .schedule(
                        format!("unpaid-{order}"),
                        self.epoch + chrono::Duration::minutes(30),
                        Command::CancelOrder { order },
                    )
            }
            "Paid" => Reaction::new().cancel(format!("unpaid-{order}")),
            "Broken" => return Err("this event cannot be handled".into()),
            _ => Reaction::new(),
        })
    }
    fn compensate(&self, failure: &Failure<Command>) -> Vec<Command> {
        match &failure.command {
            Command::Charge { order, .. } => vec![Command::Release {
                order: order.clone(),
            }],
            _ => Vec::new(),
        }
    }
}

/// Appends one `effect-<order>` event per command, with the context's deterministic
/// id; rejects charges above 100; can be told to fail transiently for one order, or
/// to hang.
#[derive(Clone)]
struct Bus {
    store: InMemoryStore,
    dispatched: Arc<Mutex<Vec<(Command, DispatchContext)>>>,
    transient: Arc<Mutex<Option<String>>>,
    hang_at: Option<(usize, Arc<Notify>)>,
}

impl Bus {
    fn new(store: &InMemoryStore) -> Self {
        Self {
            store: store.clone(),
            dispatched: Arc::default(),
            transient: Arc::default(),
            hang_at: None,
        }
    }
    fn count(&self) -> usize {
        self.dispatched.lock().unwrap().len()
    }
}

#[async_trait]
impl CommandBus<Command> for Bus {
    async fn dispatch(
        &self,
        command: Command,
        context: DispatchContext,
    ) -> Result<(), DispatchError> {
        let n = {
            let mut d = self.dispatched.lock().unwrap();
            d.push((command.clone(), context.clone()));
            d.len()
        };
        if let Some((at, reached)) = &self.hang_at
            && n == *at
        {
            reached.notify_one();
            std::future::pending::<()>().await; // the process "dies" here
        }
        if self.transient.lock().unwrap().as_deref() == Some(command.order()) {
            return Err(DispatchError::transient("the payment service is down"));
        }
        if let Command::Charge { amount, .. } = command
            && amount > 100
        {
            return Err(DispatchError::rejected("card declined"));
        }
        let stream = StreamName::new(format!("effect-{}", command.order())).unwrap();
        let event = NewEvent::json(format!("{command:?}").split(' ').next().unwrap(), &command)
            .unwrap()
            .with_id(context.event_id(0))
            .with_metadata(context.metadata());
        self.store
            .append(&stream, ExpectedRevision::Any, vec![event])
            .await
            .map_err(|e| DispatchError::transient(e.to_string()))?;
        Ok(())
    }
}

fn epoch() -> DateTime<Utc> {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

fn options() -> SagaOptions {
    SagaOptions {
        retry_delay: Duration::from_millis(1),
        ..SagaOptions::default()
    }
}

fn runner(store: &InMemoryStore, bus: Bus, clock: &ManualClock) -> SagaRunner<Fulfilment, Bus> {
    SagaRunner::new(Arc::new(store.clone()), Fulfilment { epoch: epoch() }, bus)
        .unwrap()
        .clock(clock.clone())
        .options(options())
}

async fn place(store: &InMemoryStore, order: &str, amount: i64) {
    let stream = StreamName::new(format!("order-{order}")).unwrap();
    let e = NewEvent::json("Placed", &serde_json::json!({ "amount": amount })).unwrap();
    store
        .append(&stream, ExpectedRevision::Any, vec![e])
        .await
        .unwrap();
}

async fn event(store: &InMemoryStore, order: &str, event_type: &str) {
    let stream = StreamName::new(format!("order-{order}")).unwrap();
    let e = NewEvent::json(event_type, &()).unwrap();
    store
        .append(&stream, ExpectedRevision::Any, vec![e])
        .await
        .unwrap();
}

/// Event types in `effect-<order>`, in order.
async fn effects(store: &InMemoryStore, order: &str) -> Vec<String> {
    let stream = StreamName::new(format!("effect-{order}")).unwrap();
    match store
        .read_stream(&stream, ReadStreamOptions::forwards())
        .await
    {
        Ok(events) => events.into_iter().map(|e| e.event_type).collect(),
        Err(_) => Vec::new(),
    }
}

async fn all_count(store: &InMemoryStore) -> usize {
    store
        .read_all(ReadAllOptions::forwards())
        .await
        .unwrap()
        .len()
}

#[test]
fn the_reactions_given_when_then() {
    let order = || "1".to_owned();
    SagaSpec::for_saga(Fulfilment { epoch: epoch() })
        .when(recorded_event(
            "order-1",
            "Placed",
            &serde_json::json!({ "amount": 5 }),
        ))
        .then_commands(vec![
            Command::Reserve { order: order() },
            Command::Charge {
                order: order(),
                amount: 5,
            },
        ])
        .then_scheduled("unpaid-1", Command::CancelOrder { order: order() })
        .then_compensates(
            Command::Charge {
                order: order(),
                amount: 5,
            },
            DispatchError::rejected("declined"),
            vec![Command::Release { order: order() }],
        );
    SagaSpec::for_saga(Fulfilment { epoch: epoch() })
        .when(recorded_event("order-1", "Paid", &()))
        .then_commands(vec![])
        .then_cancels("unpaid-1");
    SagaSpec::for_saga(Fulfilment { epoch: epoch() })
        .when(recorded_event("order-1", "Broken", &()))
        .then_fails();
}

#[tokio::test]
async fn a_replay_from_the_start_appends_nothing_new() {
    let store = InMemoryStore::new();
    let clock = ManualClock::starting_at(epoch());
    for i in 0..5 {
        place(&store, &i.to_string(), 10).await;
    }
    event(&store, "0", "Paid").await;
    let bus = Bus::new(&store);
    let mut first = runner(&store, bus.clone(), &clock);
    first.catch_up().await.unwrap();
    assert_eq!(effects(&store, "3").await, ["Reserve", "Charge"]);
    let written = all_count(&store).await;

    let replay_bus = Bus::new(&store);
    let mut replay = runner(&store, replay_bus.clone(), &clock).options(SagaOptions {
        from_start: true,
        ..options()
    });
    replay.catch_up().await.unwrap();
    assert_eq!(
        replay_bus.count(),
        10,
        "the replay dispatched every command again"
    );
    assert_eq!(
        all_count(&store).await,
        written,
        "the replay appended something new"
    );
    // The same commands got the same contexts.
    let first_contexts: Vec<_> = bus
        .dispatched
        .lock()
        .unwrap()
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    let replay_contexts: Vec<_> = replay_bus
        .dispatched
        .lock()
        .unwrap()
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    assert_eq!(first_contexts, replay_contexts);
    let order_3 = store
        .read_stream(
            &StreamName::new("order-3").unwrap(),
            ReadStreamOptions::forwards(),
        )
        .await
        .unwrap();
    assert_eq!(
        first_contexts[6].causation_id, order_3[0].id,
        "causation = the triggering event"
    );
}

#[tokio::test]
async fn a_restart_mid_saga_resumes_and_appends_nothing_twice() {
    let store = InMemoryStore::new();
    let clock = ManualClock::starting_at(epoch());
    for i in 0..6 {
        place(&store, &i.to_string(), 10).await;
    }
    // The first runner "dies" while dispatching the 8th command (order 3's Charge):
    // order 3's Reserve is written, its position is not.
    let reached = Arc::new(Notify::new());
    let mut hanging = Bus::new(&store);
    hanging.hang_at = Some((8, reached.clone()));
    let mut first = runner(&store, hanging.clone(), &clock);
    let stopper = Stopper::new();
    let signal = stopper.signal();
    let task = tokio::spawn(async move { first.run(signal).await });
    reached.notified().await;
    task.abort();
    let _ = task.await;
    assert_eq!(effects(&store, "3").await, ["Reserve"]);

    let bus = Bus::new(&store);
    let mut second = runner(&store, bus.clone(), &clock);
    second.catch_up().await.unwrap();
    // It resumed after order 2 (the last recorded position): order 3's Reserve was
    // dispatched again, with the same id, so it is stored once.
    let redispatched: Vec<_> = bus
        .dispatched
        .lock()
        .unwrap()
        .iter()
        .map(|(c, _)| c.clone())
        .collect();
    assert_eq!(redispatched[0], Command::Reserve { order: "3".into() });
    assert_eq!(redispatched.len(), 6, "orders 3, 4, 5: two commands each");
    for i in 0..6 {
        assert_eq!(
            effects(&store, &i.to_string()).await,
            ["Reserve", "Charge"],
            "order {i}"
        );
    }
    let written = all_count(&store).await;
    let mut third = runner(&store, Bus::new(&store), &clock);
    third.catch_up().await.unwrap();
    assert_eq!(all_count(&store).await, written);
}

#[tokio::test]
async fn a_timeout_scheduled_before_a_restart_fires_once_after_it() {
    let store = InMemoryStore::new();
    let clock = ManualClock::starting_at(epoch());
    place(&store, "1", 10).await;
    place(&store, "2", 10).await;
    event(&store, "2", "Paid").await; // cancels order 2's timeout
    let mut first = runner(&store, Bus::new(&store), &clock);
    first.catch_up().await.unwrap();
    assert_eq!(first.monitor().status().schedules_pending, 1);
    drop(first); // "restart"

    clock.advance(chrono::Duration::minutes(31));
    let bus = Bus::new(&store);
    let mut second = runner(&store, bus.clone(), &clock);
    let monitor = second.monitor();
    let stopper = Stopper::new();
    let signal = stopper.signal();
    let task = tokio::spawn(async move { second.run(signal).await.map(|_| second) });
    while monitor.status().schedules_fired < 1 {
        tokio::task::yield_now().await;
    }
    stopper.stop();
    task.await.unwrap().unwrap();
    assert_eq!(
        effects(&store, "1").await,
        ["Reserve", "Charge", "CancelOrder"]
    );
    assert_eq!(effects(&store, "2").await, ["Reserve", "Charge"]);
    let fired = bus.dispatched.lock().unwrap().clone();
    assert_eq!(fired.len(), 1);
    let order_1 = store
        .read_stream(
            &StreamName::new("order-1").unwrap(),
            ReadStreamOptions::forwards(),
        )
        .await
        .unwrap();
    assert_eq!(fired[0].1.causation_id, order_1[0].id);

    // Another restart: nothing fires again.
    clock.advance(chrono::Duration::hours(1));
    let bus = Bus::new(&store);
    let mut third = runner(&store, bus.clone(), &clock);
    third.catch_up().await.unwrap();
    assert_eq!(bus.count(), 0);
    assert_eq!(
        effects(&store, "1").await,
        ["Reserve", "Charge", "CancelOrder"]
    );
}

#[tokio::test]
async fn a_timeout_fires_while_the_runner_waits() {
    let store = InMemoryStore::new();
    let clock = ManualClock::starting_at(epoch());
    let bus = Bus::new(&store);
    let mut r = runner(&store, bus.clone(), &clock);
    let monitor = r.monitor();
    let stopper = Stopper::new();
    let signal = stopper.signal();
    let task = tokio::spawn(async move { r.run(signal).await });
    place(&store, "9", 10).await;
    while monitor.status().schedules_pending < 1 {
        tokio::task::yield_now().await;
    }
    clock.advance(chrono::Duration::minutes(29));
    tokio::task::yield_now().await;
    assert_eq!(monitor.status().schedules_fired, 0, "not due yet");
    clock.advance(chrono::Duration::minutes(2));
    while monitor.status().schedules_fired < 1 {
        tokio::task::yield_now().await;
    }
    stopper.stop();
    task.await.unwrap().unwrap();
    assert_eq!(
        effects(&store, "9").await,
        ["Reserve", "Charge", "CancelOrder"]
    );
}

#[tokio::test]
async fn a_rejected_step_is_compensated() {
    let store = InMemoryStore::new();
    let clock = ManualClock::starting_at(epoch());
    place(&store, "big", 500).await;
    let bus = Bus::new(&store);
    let mut r = runner(&store, bus.clone(), &clock);
    r.catch_up().await.unwrap();
    assert_eq!(effects(&store, "big").await, ["Reserve", "Release"]);
    let status = r.monitor().status();
    assert_eq!(status.commands_rejected, 1);
    assert_eq!(status.dead_letters, 0);
    // The compensation carries the trigger as its cause.
    let (command, context) = bus.dispatched.lock().unwrap()[2].clone();
    assert_eq!(
        command,
        Command::Release {
            order: "big".into()
        }
    );
    let placed = store
        .read_stream(
            &StreamName::new("order-big").unwrap(),
            ReadStreamOptions::forwards(),
        )
        .await
        .unwrap();
    assert_eq!(context.causation_id, placed[0].id);
}

#[tokio::test]
async fn a_poisoned_event_is_dead_lettered_and_the_saga_moves_on() {
    let store = InMemoryStore::new();
    let clock = ManualClock::starting_at(epoch());
    event(&store, "1", "Broken").await;
    place(&store, "2", 10).await;
    let mut r = runner(&store, Bus::new(&store), &clock);
    r.catch_up().await.unwrap();
    assert_eq!(
        effects(&store, "2").await,
        ["Reserve", "Charge"],
        "the saga moved on"
    );
    let letters = store
        .read_stream(
            &dead_letter_stream("fulfilment"),
            ReadStreamOptions::forwards(),
        )
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    let letter: DeadLetter = letters[0].json().unwrap();
    let broken = store
        .read_stream(
            &StreamName::new("order-1").unwrap(),
            ReadStreamOptions::forwards(),
        )
        .await
        .unwrap();
    assert_eq!(letter.event.id, broken[0].id);
    assert_eq!(letter.event.event_type, "Broken");
    assert_eq!(letter.attempts, 3);
    assert!(
        letter.error.contains("this event cannot be handled"),
        "{}",
        letter.error
    );

    // A command that keeps failing transiently is dead-lettered too.
    place(&store, "3", 10).await;
    let bus = Bus::new(&store);
    *bus.transient.lock().unwrap() = Some("3".into());
    let mut r = runner(&store, bus.clone(), &clock);
    r.catch_up().await.unwrap();
    assert_eq!(bus.count(), 3, "three attempts of the first command");
    let letters = store
        .read_stream(
            &dead_letter_stream("fulfilment"),
            ReadStreamOptions::forwards(),
        )
        .await
        .unwrap();
    let letter: DeadLetter = letters[1].json().unwrap();
    assert!(
        letter.error.contains("payment service is down"),
        "{}",
        letter.error
    );
    // Dead letters survive a replay without being written twice.
    let before = all_count(&store).await;
    let mut replay = runner(&store, Bus::new(&store), &clock).options(SagaOptions {
        from_start: true,
        ..options()
    });
    *replay.bus().transient.lock().unwrap() = Some("3".into());
    replay.catch_up().await.unwrap();
    assert_eq!(all_count(&store).await, before);
}

#[tokio::test]
async fn with_a_lock_one_runner_works_and_a_standby_takes_over() {
    use foldstore_core::projection::InMemoryLocks;
    let store = InMemoryStore::new();
    let clock = ManualClock::starting_at(epoch());
    let locks = InMemoryLocks::new();
    let options = SagaOptions {
        lock_retry: Duration::from_millis(5),
        ..options()
    };
    let (first_bus, second_bus) = (Bus::new(&store), Bus::new(&store));
    let mut first = runner(&store, first_bus.clone(), &clock)
        .lock(locks.lock("fulfilment"))
        .options(options.clone());
    let mut second = runner(&store, second_bus.clone(), &clock)
        .lock(locks.lock("fulfilment"))
        .options(options);
    let (first_monitor, second_monitor) = (first.monitor(), second.monitor());
    let (stop_first, stop_second) = (Stopper::new(), Stopper::new());
    let signal = stop_first.signal();
    let first_task = tokio::spawn(async move { first.run(signal).await });
    while !first_monitor.status().active {
        tokio::task::yield_now().await;
    }
    let signal = stop_second.signal();
    let second_task = tokio::spawn(async move { second.run(signal).await });
    while !second_monitor.status().waiting_for_lock {
        tokio::task::yield_now().await;
    }
    place(&store, "1", 10).await;
    while first_bus.count() < 2 {
        tokio::task::yield_now().await;
    }
    assert_eq!(second_bus.count(), 0);
    stop_first.stop();
    first_task.await.unwrap().unwrap();
    while !second_monitor.status().active {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    place(&store, "2", 10).await;
    while second_bus.count() < 2 {
        tokio::task::yield_now().await;
    }
    stop_second.stop();
    second_task.await.unwrap().unwrap();
    assert_eq!(effects(&store, "1").await, ["Reserve", "Charge"]);
    assert_eq!(effects(&store, "2").await, ["Reserve", "Charge"]);
    assert_eq!(second_bus.count(), 2, "the standby resumed after order 1");
}

/// Answers each `Ping` in `ping-<n>` with a `Pong` in the same stream: a saga whose
/// commands write events its own filter takes.
struct Echo;

impl Saga for Echo {
    type Command = String;
    fn name(&self) -> &str {
        "echo"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::category("ping").unwrap()
    }
    fn react(&self, event: &RecordedEvent) -> Result<Reaction<String>, HandlerError> {
        Ok(match event.event_type.as_str() {
            "Ping" => Reaction::new().command(event.stream.as_str().to_owned()),
            _ => Reaction::new(),
        })
    }
}

struct PongBus(InMemoryStore);

#[async_trait]
impl CommandBus<String> for PongBus {
    async fn dispatch(
        &self,
        stream: String,
        context: DispatchContext,
    ) -> Result<(), DispatchError> {
        let event = NewEvent::json("Pong", &())
            .unwrap()
            .with_id(context.event_id(0));
        self.0
            .append(
                &StreamName::new(stream).unwrap(),
                ExpectedRevision::Any,
                vec![event],
            )
            .await
            .map(drop)
            .map_err(|e| DispatchError::transient(e.to_string()))
    }
}

/// `catch_up` once read the saga's own new events past the head over and over when the
/// head itself was an event its filter skips, and never returned. The in-memory store
/// answers without yielding, so the saga runs on a thread of its own and the test
/// waits for it with a deadline.
#[test]
fn catch_up_returns_when_the_saga_appends_what_it_follows_past_a_head_it_skips() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = done.send(runtime.block_on(async {
            let store = InMemoryStore::new();
            let ping = StreamName::new("ping-1").unwrap();
            let noise = StreamName::new("other-1").unwrap();
            for (stream, event_type) in [(&ping, "Ping"), (&noise, "Noise")] {
                let event = NewEvent::json(event_type, &()).unwrap();
                store
                    .append(stream, ExpectedRevision::Any, vec![event])
                    .await
                    .unwrap();
            }
            // The head is now the Noise event, which the saga's filter skips.
            let mut saga =
                SagaRunner::new(Arc::new(store.clone()), Echo, PongBus(store.clone())).unwrap();
            saga.catch_up().await.unwrap();
            saga.catch_up().await.unwrap();
            store
                .read_stream(&ping, ReadStreamOptions::forwards())
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event_type)
                .collect::<Vec<_>>()
        }));
    });
    let types = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("catch_up did not return within 10 s");
    assert_eq!(
        types,
        ["Ping", "Pong"],
        "one answer, handled without a second one"
    );
}
