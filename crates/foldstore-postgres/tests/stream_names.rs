//! Events read back carry their stream's name, whatever the reader's name cache held.
//!
//! Event rows carry a stream id; a store names the stream from its cache, and a miss
//! reads the missing names and the next stream ids' names with them (see the `names`
//! module). These tests read with a store that has never seen the streams, across
//! more streams than one read-ahead covers, forwards and backwards, in pages that
//! bring new streams in and out of id order.

mod common;

use foldstore_core::{EventStore, ExpectedRevision, NewEvent, ReadAllOptions, StreamName};
use foldstore_postgres::PostgresStore;
use futures::StreamExt;

/// More than one read-ahead window (1,024 stream ids) and a half.
const STREAMS: usize = 2_600;

/// Appends one event to each of `STREAMS` streams, whose data is the stream's name;
/// every third stream gets a second event later, so pages mix old and new streams.
async fn fill(store: &PostgresStore) {
    let names: Vec<StreamName> = (0..STREAMS)
        .map(|i| StreamName::new(format!("named-{i}")).unwrap())
        .collect();
    let second: Vec<&StreamName> = names.iter().step_by(3).collect();
    for round in [names.iter().collect::<Vec<_>>(), second] {
        futures::stream::iter(round)
            .map(|name| async move {
                let event = NewEvent::json("Named", &serde_json::json!(name.as_str())).unwrap();
                store
                    .append(name, ExpectedRevision::Any, vec![event])
                    .await
                    .unwrap_or_else(|e| panic!("append to {name}: {e}"));
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
    }
}

/// Reads the whole log with `options` in pages and checks every event's stream.
async fn check_all(store: &PostgresStore, mut options: ReadAllOptions) -> usize {
    let mut seen = 0;
    loop {
        let page = store.read_all(options.clone()).await.expect("a page");
        for event in &page {
            let written: String = event.json().unwrap();
            assert_eq!(
                event.stream.as_str(),
                written,
                "event at {:?} names the wrong stream",
                event.position
            );
        }
        seen += page.len();
        let Some(last) = page.last() else { break };
        options.from = Some(match options.direction {
            foldstore_core::Direction::Forwards => last.position.next(),
            foldstore_core::Direction::Backwards => last.position.prev(),
        });
        if page.len() < options.max_count {
            break;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_never_saw_the_streams_names_every_event() {
    let Some(url) = common::test_url("a_store_that_never_saw_the_streams_names_every_event") else {
        return;
    };
    let (writer, guard) = common::fresh_store(&url).await;
    fill(&writer).await;
    drop(writer);
    let total = STREAMS + STREAMS.div_ceil(3);

    for (direction, page) in [("forwards", 700), ("backwards", 333)] {
        let reader = PostgresStore::connect(common::options(&url, &guard.schema))
            .await
            .expect("a second store on the schema");
        let options = if direction == "forwards" {
            ReadAllOptions::forwards()
        } else {
            ReadAllOptions::backwards()
        };
        let seen = check_all(&reader, options.max_count(page)).await;
        assert_eq!(seen, total, "reading {direction}");
    }
}
