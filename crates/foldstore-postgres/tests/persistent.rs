//! Persistent subscriptions on PostgreSQL: two servers over one database, each with
//! consumers of the same group. Guards against one event being in flight at consumers
//! of both servers: the group's advisory lock lets one server serve it, and the other
//! takes over from the stored checkpoint when the first stops.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foldstore_core::persistent::{
    LockFactory, PersistentSettings, PersistentSubscriptions, Target,
};
use foldstore_core::projection::RunnerLock;
use foldstore_core::{EventStore, ExpectedRevision, NewEvent, StreamName};
use foldstore_postgres::projection::AdvisoryLock;

fn advisory_locks(url: &str, schema: &str) -> LockFactory {
    let (url, schema) = (url.to_owned(), schema.to_owned());
    Arc::new(move |name: String| {
        let (url, name) = (url.clone(), format!("{schema}:{name}"));
        Box::pin(async move {
            let lock = AdvisoryLock::connect(&url, &name).await?;
            Ok(Box::new(lock) as Box<dyn RunnerLock>)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_never_deliver_one_event_to_two_consumers() {
    let Some(url) = common::test_url("two_servers_never_deliver_one_event_to_two_consumers") else {
        return;
    };
    const EVENTS: usize = 2_000;
    let (store_a, guard) = common::fresh_store(&url).await;
    let store_b = foldstore_postgres::PostgresStore::connect(common::options(&url, &guard.schema))
        .await
        .unwrap();
    let (store_a, store_b) = (Arc::new(store_a), Arc::new(store_b));
    for s in 0..20 {
        let events = (0..EVENTS / 20)
            .map(|i| NewEvent::json("Placed", &i).unwrap())
            .collect();
        let stream = StreamName::new(format!("order-{s}")).unwrap();
        store_a
            .append(&stream, ExpectedRevision::Any, events)
            .await
            .unwrap();
    }

    let a = PersistentSubscriptions::open_with_locks(
        store_a.clone(),
        advisory_locks(&url, &guard.schema),
    )
    .await
    .unwrap();
    let settings = PersistentSettings {
        max_checkpoint_count: 50,
        ..PersistentSettings::default()
    };
    a.create(&Target::All, "workers", settings).await.unwrap();
    let b = PersistentSubscriptions::open_with_locks(
        store_b.clone(),
        advisory_locks(&url, &guard.schema),
    )
    .await
    .unwrap();

    let in_flight = Arc::new(Mutex::new(HashSet::new()));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let mut tasks = Vec::new();
    for subs in [&a, &b] {
        for _ in 0..4 {
            let mut consumer = subs.connect(&Target::All, "workers", 10).await.unwrap();
            let (in_flight, acked) = (in_flight.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(d) = consumer.next().await {
                    let position = d.event.position;
                    assert!(
                        in_flight.lock().unwrap().insert(position),
                        "event at {position:?} in flight at two consumers"
                    );
                    tokio::task::yield_now().await;
                    in_flight.lock().unwrap().remove(&position);
                    acked.lock().unwrap().insert(position);
                    consumer.ack(&[d.key]);
                }
            }));
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Half way, the serving server stops: the other takes over from the checkpoint.
    while acked.lock().unwrap().len() < EVENTS / 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "stalled before the take-over"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let a_served = a.info(&Target::All, "workers").await.unwrap().stats.serving;
    let b_served = b.info(&Target::All, "workers").await.unwrap().stats.serving;
    assert!(a_served != b_served, "exactly one server serves the group");
    let (first, second) = if a_served { (&a, &b) } else { (&b, &a) };
    first.shutdown().await;
    while acked.lock().unwrap().len() < EVENTS {
        assert!(
            std::time::Instant::now() < deadline,
            "the other server did not take over"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        second
            .info(&Target::All, "workers")
            .await
            .unwrap()
            .stats
            .serving
    );
    second.shutdown().await;
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(acked.lock().unwrap().len(), EVENTS);
}
