//! Three processes on one database (issue 3, multi-process test).
//!
//! Guards against anything that only holds within one process: the test starts three
//! copies of this test binary (running the ignored `child` test), each with its own
//! store on one shared schema. Each appends its events while subscribed to `$all`;
//! every subscriber must see all three processes' events, each once, all in the same
//! order, which is the order of `$all`.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use foldstore_core::{
    EventFilter, EventStore, ExpectedRevision, NewEvent, ReadAllOptions, StreamName, SubscribeFrom,
};
use foldstore_postgres::PostgresStore;
use futures::StreamExt;

const PROCESSES: usize = 3;
/// Events each process appends, in appends of 10.
const EVENTS_PER_PROCESS: usize = 3_000;

fn out_file(schema: &str, index: usize, what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{schema}-{index}-{what}.txt"))
}

fn read_ids(path: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn three_processes_write_and_subscribe_in_one_order() {
    let Some(url) = common::test_url("three_processes_write_and_subscribe_in_one_order") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Create the schema before the children start, and drop it at the end.
    let (store, guard) = rt.block_on(common::fresh_store(&url));
    drop(store);
    let schema = guard.schema.clone();

    let exe = std::env::current_exe().expect("the test binary");
    let mut children = Vec::new();
    for index in 0..PROCESSES {
        children.push(
            Command::new(&exe)
                .args([
                    "child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("FOLDSTORE_TEST_POSTGRES_URL", &url)
                .env("FOLDSTORE_CHILD_SCHEMA", &schema)
                .env("FOLDSTORE_CHILD_INDEX", index.to_string())
                .spawn()
                .expect("start a child process"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    for mut child in children {
        loop {
            if let Some(status) = child.try_wait().expect("child status") {
                assert!(status.success(), "a child process failed: {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("a child process did not finish within 180 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let mut acknowledged = HashSet::new();
    for index in 0..PROCESSES {
        let path = out_file(&schema, index, "acknowledged");
        acknowledged.extend(read_ids(&path));
        let _ = std::fs::remove_file(path);
    }
    assert_eq!(acknowledged.len(), PROCESSES * EVENTS_PER_PROCESS);
    let log: Vec<String> = rt.block_on(async {
        let store = PostgresStore::connect(common::options(&url, &schema))
            .await
            .expect("open");
        store
            .read_all(ReadAllOptions::forwards())
            .await
            .expect("read $all")
            .iter()
            .map(|e| e.id.to_string())
            .collect()
    });
    assert_eq!(
        log.iter().cloned().collect::<HashSet<_>>(),
        acknowledged,
        "$all holds exactly the acknowledged events"
    );
    for index in 0..PROCESSES {
        let path = out_file(&schema, index, "seen");
        let seen = read_ids(&path);
        let _ = std::fs::remove_file(path);
        assert!(
            seen == log,
            "the subscriber of process {index} saw {} events, not $all's {} in its order",
            seen.len(),
            log.len()
        );
    }
    drop(guard);
}

/// One child process: runs only when started by the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started as a child process by three_processes_write_and_subscribe_in_one_order"]
async fn child() {
    let (Ok(schema), Ok(index), Ok(url)) = (
        std::env::var("FOLDSTORE_CHILD_SCHEMA"),
        std::env::var("FOLDSTORE_CHILD_INDEX"),
        std::env::var("FOLDSTORE_TEST_POSTGRES_URL"),
    ) else {
        return;
    };
    let index: usize = index.parse().expect("index");
    let store = PostgresStore::connect(common::options(&url, &schema))
        .await
        .expect("open the shared schema");
    let total = PROCESSES * EVENTS_PER_PROCESS;
    let reader = store.clone();
    let subscriber = tokio::spawn(async move {
        let mut sub = reader
            .subscribe_to_all(SubscribeFrom::Start, EventFilter::all())
            .await
            .expect("subscribe");
        let mut seen = Vec::with_capacity(total);
        while seen.len() < total {
            let e = tokio::time::timeout(Duration::from_secs(60), sub.next())
                .await
                .expect("an event within 60 s")
                .expect("the subscription goes on")
                .expect("no error");
            seen.push(e.id.to_string());
        }
        // Anything more would be a duplicate.
        if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await
        {
            panic!("an extra event was delivered: {extra:?}");
        }
        seen
    });
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EVENTS_PER_PROCESS / 40 {
                let stream =
                    StreamName::new(format!("shared-{}", (w + i) % 7)).expect("stream name");
                let events: Vec<NewEvent> = (0..10)
                    .map(|n| NewEvent::json("Wrote", &serde_json::json!({ "n": n })).expect("json"))
                    .collect();
                ids.extend(events.iter().map(|e| e.id.to_string()));
                store
                    .append(&stream, ExpectedRevision::Any, events)
                    .await
                    .expect("append");
            }
            ids
        }));
    }
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.expect("writer"));
    }
    std::fs::write(
        out_file(&schema, index, "acknowledged"),
        acknowledged.join("\n"),
    )
    .expect("write acknowledged ids");
    let seen = subscriber.await.expect("subscriber");
    std::fs::write(out_file(&schema, index, "seen"), seen.join("\n")).expect("write seen ids");
}
