//! Kill test for sagas (issue 5): a saga process killed at any moment, restarted, never
//! dispatches a command to effect twice, never loses one, and fires each timeout once.
//!
//! Guards against saga bookkeeping that can disagree with what was dispatched after a
//! crash: a position recorded before the commands it covers were dispatched (lost
//! commands), ids that differ on replay (commands applied twice), schedules recorded
//! after their commands or fired without a record (timeouts lost or fired twice).
//!
//! The test re-executes its own binary as a child (selected by the
//! `FOLDSTORE_SAGA_CHILD` environment variable) that runs a saga over a SQLite store:
//! each `Placed` order gets `reserve` and `charge` now and `cancel` 30 ms after the
//! order was recorded; the bus appends each command as one event with the context's
//! deterministic id. Before each child starts the parent places 30 more orders; it
//! kills the child with SIGKILL at a random moment, 20 times. At the end a last runner
//! catches up once every timeout is due, and every order must have exactly one
//! `reserve`, one `charge` and one `cancel`, and no dead letters.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use foldstore_core::projection::{HandlerError, StopSignal};
use foldstore_core::saga::{
    CommandBus, DispatchContext, DispatchError, Reaction, Saga, SagaRunner, dead_letter_stream,
};
use foldstore_core::testkit::child::ChildTest;
use foldstore_core::{
    EventFilter, EventStore, ExpectedRevision, NewEvent, ReadAllOptions, ReadStreamOptions,
    RecordedEvent, StreamName,
};
use foldstore_sqlite::{Durability, SqliteOptions, SqliteStore};

const CHILD_ENV: &str = "FOLDSTORE_SAGA_CHILD";
const TEST_NAME: &str = "each_command_takes_effect_once_across_sigkills";
const KILLS: usize = 20;
const ORDERS_PER_ROUND: usize = 30;
const TIMEOUT_MS: i64 = 30;

struct Orders;

impl Saga for Orders {
    type Command = String;
    fn name(&self) -> &str {
        "orders"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::category("order").unwrap()
    }
    fn react(&self, event: &RecordedEvent) -> Result<Reaction<String>, HandlerError> {
        let order = event.stream.id();
        Ok(Reaction::new()
            .command(format!("reserve {order}"))
            .command(format!("charge {order}"))
            .schedule(
                "timeout",
                event.recorded_at + chrono::Duration::milliseconds(TIMEOUT_MS),
                format!("cancel {order}"),
            ))
    }
}

struct Bus(SqliteStore);

#[async_trait]
impl CommandBus<String> for Bus {
    async fn dispatch(
        &self,
        command: String,
        context: DispatchContext,
    ) -> Result<(), DispatchError> {
        let order = command.rsplit(' ').next().unwrap_or_default();
        let stream = StreamName::new(format!("effect-{order}")).unwrap();
        let event = NewEvent::json("Effect", &command)
            .unwrap()
            .with_id(context.event_id(0))
            .with_metadata(context.metadata());
        self.0
            .append(&stream, ExpectedRevision::Any, vec![event])
            .await
            .map(|_| ())
            .map_err(|e| DispatchError::transient(e.to_string()))
    }
}

/// `Durability::Normal`: a process kill loses nothing with it (only a power loss
/// could), and the test runs several times faster without an fsync per append.
fn options() -> SqliteOptions {
    SqliteOptions {
        durability: Durability::Normal,
        ..SqliteOptions::default()
    }
}

fn runner(store: &SqliteStore) -> SagaRunner<Orders, Bus> {
    SagaRunner::new(Arc::new(store.clone()), Orders, Bus(store.clone())).unwrap()
}

#[test]
fn each_command_takes_effect_once_across_sigkills() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        run_child(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut order = 0;
    for kill in 0..KILLS {
        runtime.block_on(async {
            let store = SqliteStore::open(&path, options()).await.unwrap();
            for _ in 0..ORDERS_PER_ROUND {
                let stream = StreamName::new(format!("order-{order}")).unwrap();
                order += 1;
                let e = NewEvent::json("Placed", &()).unwrap();
                store
                    .append(&stream, ExpectedRevision::NoStream, vec![e])
                    .await
                    .unwrap();
            }
            store.close().await.unwrap();
        });
        let child = ChildTest::spawn(TEST_NAME, &[(CHILD_ENV, &path)], "started");
        assert!(
            child.wait_for_marker(Duration::from_secs(20)),
            "child {kill} did not start"
        );
        std::thread::sleep(Duration::from_micros(next() % 80_000));
        child.kill();
    }
    runtime.block_on(async {
        // Every timeout is due by now (or soon): finish in-process.
        tokio::time::sleep(Duration::from_millis(TIMEOUT_MS as u64 + 20)).await;
        let store = SqliteStore::open(&path, options()).await.unwrap();
        runner(&store).catch_up().await.unwrap();
        for o in 0..order {
            let stream = StreamName::new(format!("effect-{o}")).unwrap();
            let mut effects: Vec<String> = store
                .read_stream(&stream, ReadStreamOptions::forwards())
                .await
                .unwrap_or_else(|e| panic!("order {o} has no effects: {e}"))
                .iter()
                .map(|e| e.json().unwrap())
                .collect();
            effects.sort();
            assert_eq!(
                effects,
                [
                    format!("cancel {o}"),
                    format!("charge {o}"),
                    format!("reserve {o}")
                ],
                "order {o}: each command must take effect exactly once"
            );
        }
        assert!(matches!(
            store
                .read_stream(&dead_letter_stream("orders"), ReadStreamOptions::forwards())
                .await,
            Err(foldstore_core::ReadError::StreamNotFound { .. })
        ));
        let total = store
            .read_all(ReadAllOptions::forwards())
            .await
            .unwrap()
            .len();
        eprintln!("saga crash test: {KILLS} kills, {order} orders, {total} events in $all");
        store.close().await.unwrap();
    });
}

fn run_child(path: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(path, options()).await.unwrap();
        println!("started");
        runner(&store).run(StopSignal::never()).await.unwrap();
    });
}
