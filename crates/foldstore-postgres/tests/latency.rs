//! Live delivery across store instances (issue 3: an event appended through process A
//! reaches a subscriber on process B within 100 ms at p99).
//!
//! Two instances on one schema stand in for two processes: each has its own pool,
//! writers, poller and `LISTEN` connection, and shares nothing in memory with the
//! other, so B learns of A's commits only through PostgreSQL (its poller, woken early
//! by A's coalesced `NOTIFY`). Guards against live delivery that only works within one
//! process.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foldstore_core::{
    EventFilter, EventStore, ExpectedRevision, NewEvent, StreamName, SubscribeFrom,
};
use foldstore_postgres::PostgresStore;
use futures::StreamExt;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_in_one_instance_reaches_a_subscriber_in_another_quickly() {
    let Some(url) =
        common::test_url("an_append_in_one_instance_reaches_a_subscriber_in_another_quickly")
    else {
        return;
    };
    let (a, guard) = common::fresh_store(&url).await;
    let b = PostgresStore::connect(common::options(&url, &guard.schema))
        .await
        .expect("second instance");

    let sent: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let mut sub = b
        .subscribe_to_all(SubscribeFrom::End, EventFilter::all())
        .await
        .expect("subscribe in B");
    let n = 300;
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let stream = StreamName::new("ping-1").expect("name");
            for i in 0..n {
                let event = NewEvent::json("Ping", &serde_json::json!({ "i": i })).expect("json");
                sent.lock().expect("lock").insert(event.id, Instant::now());
                a.append(&stream, ExpectedRevision::Any, vec![event])
                    .await
                    .expect("append in A");
                // Irregular gaps, so the poller is sometimes idle and backing off.
                let pause = if i % 10 == 9 { 120 } else { 7 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            a
        })
    };
    let mut latencies = Vec::with_capacity(n);
    while latencies.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("an event within 10 s")
            .expect("the subscription goes on")
            .expect("no error");
        let at = sent.lock().expect("lock")[&e.id];
        latencies.push(at.elapsed());
    }
    let a = writer.await.expect("writer");
    latencies.sort();
    let p50 = latencies[n / 2];
    let p99 = latencies[n * 99 / 100];
    let max = latencies[n - 1];
    eprintln!("append in A -> delivered in B, {n} events: p50 {p50:?}, p99 {p99:?}, max {max:?}");
    // The target is 100 ms at p99; the check leaves room for a loaded test machine.
    assert!(p99 < Duration::from_millis(250), "p99 {p99:?}");
    drop((a, b, sub));
}
