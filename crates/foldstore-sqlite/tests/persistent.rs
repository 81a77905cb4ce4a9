//! Persistent subscriptions on SQLite: 64 competing consumers ack 50,000 events, none
//! lost and none in flight at two consumers at once; then a reopened store resumes the
//! group after its stored checkpoint.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foldstore_core::persistent::{PersistentSettings, PersistentSubscriptions, Target};
use foldstore_core::{EventStore, ExpectedRevision, NewEvent, StreamName};
use foldstore_sqlite::{SqliteOptions, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_consumers_ack_fifty_thousand_events_then_a_restart_resumes() {
    const EVENTS: usize = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let store = Arc::new(
        SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap(),
    );
    for s in 0..100 {
        let events = (0..EVENTS / 100)
            .map(|i| NewEvent::json("Placed", &i).unwrap())
            .collect();
        let stream = StreamName::new(format!("order-{s}")).unwrap();
        store
            .append(&stream, ExpectedRevision::Any, events)
            .await
            .unwrap();
    }
    let subs = PersistentSubscriptions::open(store.clone()).await.unwrap();
    let settings = PersistentSettings {
        message_timeout_ms: 60_000,
        ..PersistentSettings::default()
    };
    subs.create(&Target::All, "workers", settings)
        .await
        .unwrap();

    let in_flight = Arc::new(Mutex::new(HashSet::new()));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let deliveries = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut consumer = subs.connect(&Target::All, "workers", 10).await.unwrap();
        let (in_flight, acked, deliveries, done) = (
            in_flight.clone(),
            acked.clone(),
            deliveries.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while let Some(d) = consumer.next().await {
                let position = d.event.position;
                assert!(
                    in_flight.lock().unwrap().insert(position),
                    "event at {position:?} in flight at two consumers"
                );
                deliveries.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
                in_flight.lock().unwrap().remove(&position);
                let total = {
                    let mut acked = acked.lock().unwrap();
                    acked.insert(position);
                    acked.len()
                };
                consumer.ack(&[d.key]);
                if total == EVENTS {
                    done.notify_one();
                }
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(120), done.notified())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    println!(
        "SQLite: 64 consumers acked {EVENTS} events in {elapsed:?}: {:.0} events/s",
        EVENTS as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(deliveries.load(Ordering::Relaxed), EVENTS);
    subs.shutdown().await;
    for task in tasks {
        task.await.unwrap();
    }
    drop(subs);
    let Ok(store) = Arc::try_unwrap(store) else {
        panic!("the subscriptions still hold the store after shutdown")
    };
    store.close().await.unwrap();

    // The reopened store's group goes on after its checkpoint, nothing earlier again.
    let store = Arc::new(
        SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap(),
    );
    let stream = StreamName::new("order-late").unwrap();
    store
        .append(
            &stream,
            ExpectedRevision::Any,
            vec![NewEvent::json("Placed", &0).unwrap()],
        )
        .await
        .unwrap();
    let subs = PersistentSubscriptions::open(store.clone()).await.unwrap();
    let mut consumer = subs.connect(&Target::All, "workers", 10).await.unwrap();
    let d = consumer.next().await.unwrap();
    assert_eq!(d.event.stream, stream, "resumes after the last acked event");
    subs.shutdown().await;
}
