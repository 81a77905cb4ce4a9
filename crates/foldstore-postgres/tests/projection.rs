//! PostgreSQL read models (issue 5): batch and checkpoint commit together; one runner
//! per projection holds a session advisory lock, and a standby takes over when the
//! holder's session dies; a child process running a projection is killed with SIGKILL
//! ten times and the read model always equals the fold of the events up to its
//! checkpoint, each applied once.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use foldstore_core::projection::{
    HandlerError, ProjectionError, ProjectionOptions, ProjectionRunner, StopSignal, Stopper,
};
use foldstore_core::testkit::child::ChildTest;
use foldstore_core::{
    EventStore, ExpectedRevision, NewEvent, Position, ReadAllOptions, RecordedEvent, StreamName,
};
use foldstore_postgres::PostgresStore;
use foldstore_postgres::projection::{PostgresProjection, PostgresReadModel};
use tokio_postgres::{Client, Transaction};

/// Counts and sums `amount` per stream, and logs each applied event; fails on `Poison`.
struct Totals;

#[async_trait]
impl PostgresProjection for Totals {
    async fn setup(&mut self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS totals (stream text PRIMARY KEY, n bigint NOT NULL, sum bigint NOT NULL);
             CREATE TABLE IF NOT EXISTS applied (event_id uuid NOT NULL, position text NOT NULL);",
        )
        .await
    }
    async fn apply(
        &mut self,
        tx: &Transaction<'_>,
        event: &RecordedEvent,
    ) -> Result<(), HandlerError> {
        if event.event_type == "Poison" {
            return Err("refusing a poisoned event".into());
        }
        let amount = event.json::<serde_json::Value>()?["amount"]
            .as_i64()
            .unwrap_or(0);
        tx.execute(
            "INSERT INTO totals VALUES ($1, 1, $2)
             ON CONFLICT (stream) DO UPDATE SET n = totals.n + 1, sum = totals.sum + excluded.sum",
            &[&event.stream.as_str(), &amount],
        )
        .await?;
        tx.execute(
            "INSERT INTO applied VALUES ($1, $2)",
            &[&event.id, &event.position.to_string()],
        )
        .await?;
        Ok(())
    }
    async fn reset(&mut self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute("DELETE FROM totals; DELETE FROM applied;")
            .await
    }
}

async fn totals(client: &Client) -> BTreeMap<String, (i64, i64)> {
    client
        .query("SELECT stream, n, sum FROM totals", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

/// (applied rows, distinct applied events)
async fn applied(client: &Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT event_id) FROM applied",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

fn fold(events: &[RecordedEvent]) -> BTreeMap<String, (i64, i64)> {
    let mut out = BTreeMap::new();
    for e in events {
        let amount = e.json::<serde_json::Value>().unwrap()["amount"]
            .as_i64()
            .unwrap_or(0);
        let entry = out.entry(e.stream.to_string()).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += amount;
    }
    out
}

async fn append(store: &PostgresStore, stream: &str, event_type: &str, amount: i64) {
    let s = StreamName::new(stream).unwrap();
    let e = NewEvent::json(event_type, &serde_json::json!({ "amount": amount })).unwrap();
    store
        .append(&s, ExpectedRevision::Any, vec![e])
        .await
        .unwrap();
}

/// The read-model schema beside the store's, dropped with its guard.
fn read_model_schema(url: &str, store_schema: &str) -> common::SchemaGuard {
    common::SchemaGuard {
        url: url.to_owned(),
        schema: format!("{store_schema}_rm"),
    }
}

async fn checkpoint_of(client: &Client) -> Option<Position> {
    client
        .query_opt(
            "SELECT position::text FROM foldstore_checkpoints WHERE name = 'totals'",
            &[],
        )
        .await
        .unwrap()
        .map(|r| r.get::<_, String>(0).parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_checkpoint_commit_together_and_a_failure_rolls_both_back() {
    let Some(url) =
        common::test_url("batch_and_checkpoint_commit_together_and_a_failure_rolls_both_back")
    else {
        return;
    };
    let (store, guard) = common::fresh_store(&url).await;
    let rm = read_model_schema(&url, &guard.schema);
    for i in 0..10 {
        append(&store, &format!("account-{}", i % 3), "Deposited", i).await;
    }
    append(&store, "account-9", "Poison", 0).await;
    let model = PostgresReadModel::connect(&url, &rm.schema, "totals", Totals)
        .await
        .unwrap();
    let mut runner = ProjectionRunner::new(Arc::new(store.clone()), model).batch_size(4);
    let err = runner.catch_up().await.unwrap_err();
    assert!(matches!(err, ProjectionError::Handler { .. }), "{err}");
    let all = store.read_all(ReadAllOptions::forwards()).await.unwrap();
    let client = runner.target().client();
    assert_eq!(totals(client).await, fold(&all[..8]));
    assert_eq!(applied(client).await, (8, 8));
    assert_eq!(checkpoint_of(client).await, Some(all[7].position));

    // A new read model on the same schema resumes from the checkpoint; rebuild from
    // zero after removing the poison's effect through a filter gives the fold.
    drop(runner);
    let model = PostgresReadModel::connect(&url, &rm.schema, "totals", Totals)
        .await
        .unwrap();
    let mut runner = ProjectionRunner::new(Arc::new(store.clone()), model)
        .filter(foldstore_core::EventFilter::all().with_types(["Deposited"]));
    runner.rebuild().await.unwrap();
    let client = runner.target().client();
    assert_eq!(totals(client).await, fold(&all[..10]));
    assert_eq!(applied(client).await, (10, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_runner_applies_and_a_standby_takes_over_when_the_holder_dies() {
    let Some(url) =
        common::test_url("only_one_runner_applies_and_a_standby_takes_over_when_the_holder_dies")
    else {
        return;
    };
    let (store, guard) = common::fresh_store(&url).await;
    let rm = read_model_schema(&url, &guard.schema);
    let options = ProjectionOptions {
        lock_retry: Duration::from_millis(20),
        ..ProjectionOptions::default()
    };
    let first_model = PostgresReadModel::connect(&url, &rm.schema, "totals", Totals)
        .await
        .unwrap();
    let first_pid: i32 = first_model
        .client()
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let second_model = PostgresReadModel::connect(&url, &rm.schema, "totals", Totals)
        .await
        .unwrap();
    let mut first =
        ProjectionRunner::new(Arc::new(store.clone()), first_model).options(options.clone());
    let mut second = ProjectionRunner::new(Arc::new(store.clone()), second_model).options(options);
    let (first_monitor, second_monitor) = (first.monitor(), second.monitor());
    let stop = Stopper::new();
    let signal = stop.signal();
    let first_task = tokio::spawn(async move { first.run(signal).await });
    while !first_monitor.status().active {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let signal = stop.signal();
    let second_task = tokio::spawn(async move { second.run(signal).await.map(|_| second) });
    while !second_monitor.status().waiting_for_lock {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 0..20 {
        append(&store, "account-1", "Deposited", i).await;
    }
    while first_monitor.status().events_applied < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(second_monitor.status().events_applied, 0);
    assert!(second_monitor.status().waiting_for_lock);

    // The holder's session dies (as when its process is killed): the server releases
    // the lock, the standby takes over from the checkpoint, and the old holder cannot
    // apply anything more.
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&first_pid])
        .await
        .unwrap();
    while !second_monitor.status().active {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 0..5 {
        append(&store, "account-2", "Deposited", i).await;
    }
    let first_result = first_task.await.unwrap();
    assert!(
        matches!(first_result, Err(ProjectionError::LockLost { .. })),
        "the old holder must stop with LockLost: {first_result:?}"
    );
    while second_monitor.status().events_applied < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.stop();
    let second = second_task.await.unwrap().unwrap();
    assert_eq!(first_monitor.status().events_applied, 20);
    assert_eq!(second_monitor.status().events_applied, 5);
    let all = store.read_all(ReadAllOptions::forwards()).await.unwrap();
    let client = second.target().client();
    assert_eq!(totals(client).await, fold(&all));
    assert_eq!(applied(client).await, (25, 25));
}

const CHILD_ENV: &str = "FOLDSTORE_PG_PROJECTION_CHILD";
const KILL_TEST: &str = "read_model_equals_its_checkpoint_after_every_sigkill";
const KILLS: usize = 10;

#[test]
fn read_model_equals_its_checkpoint_after_every_sigkill() {
    if let Ok(schema) = std::env::var(CHILD_ENV) {
        run_child(&schema);
        return;
    }
    let Some(url) = common::test_url(KILL_TEST) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (store, guard) = runtime.block_on(common::fresh_store(&url));
    let _rm = read_model_schema(&url, &guard.schema);
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
    let mut mid_way = 0;
    for kill in 0..KILLS {
        runtime.block_on(async {
            for _ in 0..30 {
                let stream = StreamName::new(format!("account-{}", next() % 8)).unwrap();
                let events = (0..10)
                    .map(|_| {
                        let amount = (next() % 1000) as i64 - 500;
                        NewEvent::json("Deposited", &serde_json::json!({ "amount": amount }))
                            .unwrap()
                    })
                    .collect();
                store
                    .append(&stream, ExpectedRevision::Any, events)
                    .await
                    .unwrap();
            }
        });
        let child = ChildTest::spawn(
            KILL_TEST,
            &[
                (CHILD_ENV, guard.schema.as_str()),
                ("FOLDSTORE_TEST_POSTGRES_URL", url.as_str()),
            ],
            "locked",
        );
        assert!(
            child.wait_for_marker(Duration::from_secs(30)),
            "child {kill} never took the projection lock"
        );
        std::thread::sleep(Duration::from_micros(next() % 60_000));
        child.kill();
        let (checkpoint, head) = runtime.block_on(async {
            let all = store.read_all(ReadAllOptions::forwards()).await.unwrap();
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client
                .batch_execute(&format!("SET search_path TO \"{}_rm\"", guard.schema))
                .await
                .unwrap();
            let checkpoint = checkpoint_of(&client).await;
            let covered: Vec<_> = all
                .iter()
                .filter(|e| Some(e.position) <= checkpoint)
                .cloned()
                .collect();
            assert_eq!(totals(&client).await, fold(&covered), "after kill {kill}");
            let n = covered.len() as i64;
            assert_eq!(
                applied(&client).await,
                (n, n),
                "after kill {kill}: each event once"
            );
            (checkpoint, all.last().map(|e| e.position))
        });
        if checkpoint.is_some() && checkpoint < head {
            mid_way += 1;
        }
    }
    eprintln!("postgres projection kill test: {KILLS} kills, {mid_way} mid-stream");
    drop(store);
}

fn run_child(schema: &str) {
    let url = std::env::var("FOLDSTORE_TEST_POSTGRES_URL").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = PostgresStore::connect(common::options(&url, schema))
            .await
            .unwrap();
        let model = PostgresReadModel::connect(&url, &format!("{schema}_rm"), "totals", Totals)
            .await
            .unwrap();
        let mut runner = ProjectionRunner::new(Arc::new(store), model).options(ProjectionOptions {
            lock_retry: Duration::from_millis(20),
            batch_size: 20,
            ..ProjectionOptions::default()
        });
        let monitor = runner.monitor();
        tokio::spawn(async move {
            while !monitor.status().active {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            println!("locked");
        });
        runner.run(StopSignal::never()).await.unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisory_lock_is_released_when_its_session_dies() {
    use foldstore_core::projection::RunnerLock;
    use foldstore_postgres::projection::AdvisoryLock;
    let Some(url) = common::test_url("an_advisory_lock_is_released_when_its_session_dies") else {
        return;
    };
    let name = format!("saga:test-{:016x}", rand::random::<u64>());
    let mut first = AdvisoryLock::connect(&url, &name).await.unwrap();
    let mut second = AdvisoryLock::connect(&url, &name).await.unwrap();
    assert!(first.try_acquire().await.unwrap());
    assert!(!second.try_acquire().await.unwrap());
    first.release().await.unwrap();
    assert!(second.try_acquire().await.unwrap());
    assert!(!first.try_acquire().await.unwrap());

    // The holder's session is terminated (its process died): the server releases the
    // lock, the holder sees it no longer holds it, the other takes it.
    let pid = second.backend_pid().await.unwrap();
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while second.is_held() {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead session still looks held"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The server releases a dead session's locks as its backend exits, which may finish
    // a moment after the client saw the connection close: the other instance gets the
    // lock on one of its next tries, as a runner does.
    while !first.try_acquire().await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead session's lock was never released"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
