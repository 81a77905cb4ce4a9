//! SQLite read models (issue 5): a batch and its checkpoint commit together, a failing
//! handler rolls both back, and one runner per projection is active at a time, with
//! fail-over to a standby when the holder stops.

mod projection_support;

use std::sync::Arc;
use std::time::Duration;

use foldstore_core::projection::{ProjectionError, ProjectionOptions, ProjectionRunner, Stopper};
use foldstore_core::{
    EventFilter, EventStore, ExpectedRevision, NewEvent, ReadAllOptions, StreamName,
};
use foldstore_sqlite::projection::SqliteReadModel;
use foldstore_sqlite::{SqliteOptions, SqliteStore};
use projection_support::{Totals, applied, fold, totals};

async fn append(store: &SqliteStore, stream: &str, event_type: &str, amount: i64) {
    let s = StreamName::new(stream).unwrap();
    let e = NewEvent::json(event_type, &serde_json::json!({ "amount": amount })).unwrap();
    store
        .append(&s, ExpectedRevision::Any, vec![e])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_checkpoint_commit_together_and_a_failure_rolls_both_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("events.db"), SqliteOptions::default())
        .await
        .unwrap();
    for i in 0..10 {
        append(&store, &format!("account-{}", i % 3), "Deposited", i).await;
    }
    append(&store, "account-9", "Poison", 0).await;
    append(&store, "account-9", "Deposited", 1).await;
    let read_db = dir.path().join("read.db");
    let model = SqliteReadModel::open(&read_db, "totals", Totals).unwrap();
    let mut runner = ProjectionRunner::new(Arc::new(store.clone()), model).batch_size(4);
    let err = runner.catch_up().await.unwrap_err();
    assert!(matches!(err, ProjectionError::Handler { .. }), "{err}");

    // Batches of 4: positions 1..=8 committed with their checkpoint; the batch holding
    // the poisoned event (9..=12) left neither rows nor checkpoint behind.
    let all = store.read_all(ReadAllOptions::forwards()).await.unwrap();
    runner.target().with_connection(|c| {
        assert_eq!(totals(c), fold(&all[..8]));
        assert_eq!(applied(c).len(), 8);
        let checkpoint: String = c
            .query_row(
                "SELECT position FROM foldstore_checkpoints WHERE name = 'totals'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(checkpoint, all[7].position.to_string());
    });

    // A rebuild with a filter that skips the poison (type filter) applies the rest once.
    let model = runner.into_target();
    let mut runner = ProjectionRunner::new(Arc::new(store.clone()), model).filter(
        EventFilter::category("account")
            .unwrap()
            .with_types(["Deposited"]),
    );
    runner.rebuild().await.unwrap();
    let good: Vec<_> = all
        .iter()
        .filter(|e| e.event_type == "Deposited")
        .cloned()
        .collect();
    runner.target().with_connection(|c| {
        assert_eq!(totals(c), fold(&good));
        assert!(applied(c).values().all(|&n| n == 1));
    });
    // Reopening the database keeps model and checkpoint: catching up again adds nothing.
    drop(runner);
    let model = SqliteReadModel::open(&read_db, "totals", Totals).unwrap();
    let mut runner = ProjectionRunner::new(Arc::new(store.clone()), model).filter(
        EventFilter::category("account")
            .unwrap()
            .with_types(["Deposited"]),
    );
    runner.catch_up().await.unwrap();
    runner
        .target()
        .with_connection(|c| assert_eq!(totals(c), fold(&good)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_runner_applies_and_a_standby_takes_over_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("events.db"), SqliteOptions::default())
        .await
        .unwrap();
    let read_db = dir.path().join("read.db");
    let options = ProjectionOptions {
        lock_retry: Duration::from_millis(20),
        ..ProjectionOptions::default()
    };
    let make = || {
        let model = SqliteReadModel::open(&read_db, "totals", Totals).unwrap();
        ProjectionRunner::new(Arc::new(store.clone()), model).options(options.clone())
    };
    let mut first = make();
    let mut second = make();
    let (first_monitor, second_monitor) = (first.monitor(), second.monitor());
    let (stop_first, stop_second) = (Stopper::new(), Stopper::new());
    let signal = stop_first.signal();
    let first_task = tokio::spawn(async move { first.run(signal).await.map(|_| first) });
    while !first_monitor.status().active {
        tokio::task::yield_now().await;
    }
    let signal = stop_second.signal();
    let second_task = tokio::spawn(async move { second.run(signal).await.map(|_| second) });
    while !second_monitor.status().waiting_for_lock {
        tokio::task::yield_now().await;
    }

    for i in 0..20 {
        append(&store, "account-1", "Deposited", i).await;
    }
    while first_monitor.status().events_applied < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(second_monitor.status().events_applied, 0);
    assert!(second_monitor.status().waiting_for_lock);

    // The holder stops gracefully and releases the lock: the standby takes over from
    // the holder's checkpoint.
    stop_first.stop();
    let first = first_task.await.unwrap().unwrap();
    assert!(!first.target().is_locked());
    while !second_monitor.status().active {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 0..5 {
        append(&store, "account-2", "Deposited", i).await;
    }
    while second_monitor.status().events_applied < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop_second.stop();
    let second = second_task.await.unwrap().unwrap();
    assert_eq!(
        second_monitor.status().events_applied,
        5,
        "the standby re-applied nothing"
    );
    let all = store.read_all(ReadAllOptions::forwards()).await.unwrap();
    second.target().with_connection(|c| {
        assert_eq!(totals(c), fold(&all));
        assert!(applied(c).values().all(|&n| n == 1));
    });
}
