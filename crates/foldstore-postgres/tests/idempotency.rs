//! Identical appends racing in two store instances (docs/semantics.md §3.5).
//!
//! Guards against the unique-violation path: an append whose ids a concurrent
//! transaction in another process is writing passes the "no id stored yet" check,
//! waits for that transaction's stream row lock, and then hits the event-id unique
//! index. The store must retry it to get the facts and answer with the first append's
//! result, never an error and never a second copy.

mod common;

use std::collections::HashSet;

use foldstore_core::{EventStore, ExpectedRevision, NewEvent, ReadAllOptions, StreamName};
use foldstore_postgres::PostgresStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_appends_in_two_instances_are_stored_once() {
    let Some(url) = common::test_url("identical_appends_in_two_instances_are_stored_once") else {
        return;
    };
    let (a, guard) = common::fresh_store(&url).await;
    let b = PostgresStore::connect(common::options(&url, &guard.schema))
        .await
        .expect("second instance");
    let appends: Vec<(StreamName, Vec<NewEvent>)> = (0..40)
        .map(|i| {
            let stream = StreamName::new(format!("twice-{}", i % 4)).expect("name");
            let events = (0..5)
                .map(|n| NewEvent::json("Once", &serde_json::json!({ "n": n })).expect("json"))
                .collect();
            (stream, events)
        })
        .collect();
    let mut tasks = Vec::new();
    for store in [a.clone(), b.clone(), a.clone(), b.clone()] {
        let appends = appends.clone();
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for (stream, events) in appends {
                let expected = ExpectedRevision::Any;
                results.push(
                    store
                        .append(&stream, expected, events)
                        .await
                        .unwrap_or_else(|e| panic!("a racing identical append failed: {e}")),
                );
            }
            results
        }));
    }
    let mut all_results = Vec::new();
    for task in tasks {
        all_results.push(task.await.expect("task"));
    }
    for other in &all_results[1..] {
        assert_eq!(
            other, &all_results[0],
            "every copy of an append got the first append's result"
        );
    }
    let log = a
        .read_all(ReadAllOptions::forwards())
        .await
        .expect("read $all");
    let ids: HashSet<_> = log.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), log.len(), "no id is stored twice");
    assert_eq!(log.len(), 40 * 5, "every append is stored once");
    drop((a, b));
}
