//! Rough throughput figures of the PostgreSQL backend, in one store, on a fresh schema.
//! Not a benchmark harness (that is `foldstore bench`); ignored by default. Run:
//!
//! ```text
//! FOLDSTORE_TEST_POSTGRES_URL=postgres://root@127.0.0.1:5432/test \
//!   cargo test -p foldstore-postgres --release --test throughput -- --ignored --nocapture
//! ```
//!
//! `FOLDSTORE_PG_WRITERS` sets the number of group-commit writers (default 2).

mod common;

use std::time::Instant;

use foldstore_core::{EventStore, ExpectedRevision, NewEvent, ReadAllOptions, StreamName};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it with --ignored --nocapture"]
async fn throughput() {
    let Some(url) = common::test_url("throughput") else {
        return;
    };
    let writers: usize = std::env::var("FOLDSTORE_PG_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let (store, _guard) = common::fresh_store_with(&url, |mut o| {
        o.pool_size = 20;
        o.writers = writers;
        o
    })
    .await;
    let event = || NewEvent::json("Tick", &serde_json::json!({ "n": 1 })).expect("json");

    let s = StreamName::new("seq-1").expect("name");
    let n = 500;
    let t = Instant::now();
    for _ in 0..n {
        store
            .append(&s, ExpectedRevision::Any, vec![event()])
            .await
            .expect("append");
    }
    eprintln!("append-1, one writer: {:?} per append", t.elapsed() / n);

    let (total, concurrency) = (40_000usize, 64);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let s = StreamName::new(format!("c-{c}")).expect("name");
            for _ in 0..total / concurrency {
                store
                    .append(&s, ExpectedRevision::Any, vec![event()])
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    eprintln!(
        "append-1, concurrency {concurrency}, {writers} writers: {:.0} events/s",
        total as f64 / t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let s = StreamName::new(format!("batch-{c}")).expect("name");
            for _ in 0..25 {
                let events: Vec<NewEvent> = (0..1000).map(|_| event()).collect();
                store
                    .append(&s, ExpectedRevision::Any, events)
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    eprintln!(
        "append-batch, 8 writers x 25 appends x 1000 events: {:.0} events/s",
        200_000.0 / t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let (mut count, mut from) = (0, None);
    loop {
        let mut options = ReadAllOptions::forwards().max_count(1000);
        options.from = from;
        let page = store.read_all(options).await.expect("read");
        let Some(last) = page.last() else { break };
        from = Some(last.position.next());
        count += page.len();
    }
    eprintln!(
        "read-all, pages of 1000: {count} events in {:?}: {:.0} events/s",
        t.elapsed(),
        count as f64 / t.elapsed().as_secs_f64()
    );
}
