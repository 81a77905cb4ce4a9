//! SQLite-specific behaviour the conformance kit cannot see: restarts, the lock file,
//! schema versions, durability settings, and group commit under real concurrency.

use std::sync::Arc;

use foldstore_core::{
    AppendError, BackendErrorKind, EventFilter, EventStore, ExpectedRevision, NewEvent, Position,
    ReadAllOptions, ReadError, ReadStreamOptions, StreamMetadata, StreamName,
};
use foldstore_sqlite::{Durability, OpenError, SqliteOptions, SqliteStore};
use tokio::sync::Barrier;

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

fn event(t: &str) -> NewEvent {
    NewEvent::json(t, &serde_json::json!({ "t": t })).unwrap()
}

async fn open(path: &std::path::Path) -> SqliteStore {
    SqliteStore::open(path, SqliteOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn default_durability_is_full_and_normal_is_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(SqliteOptions::default().durability, Durability::Full);
    let store = open(&dir.path().join("a.db")).await;
    // Reads PRAGMA synchronous on the write connection itself.
    assert_eq!(
        store.effective_durability().await.unwrap(),
        Durability::Full
    );
    store.close().await.unwrap();

    let options = SqliteOptions {
        durability: Durability::Normal,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(dir.path().join("b.db"), options)
        .await
        .unwrap();
    assert_eq!(
        store.effective_durability().await.unwrap(),
        Durability::Normal
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn open_creates_the_directory_and_a_second_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/foldstore.db");
    let store = open(&path).await;
    let second = SqliteStore::open(&path, SqliteOptions::default()).await;
    match second {
        Err(e @ OpenError::Locked { .. }) => {
            let message = e.to_string();
            assert!(message.contains("foldstore.db.lock"), "{message}");
            assert!(message.contains("stop the other process"), "{message}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    store.close().await.unwrap();
    // Closed: the lock is free again.
    open(&path).await.close().await.unwrap();
}

#[tokio::test]
async fn dropping_the_last_handle_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foldstore.db");
    let store = open(&path).await;
    store
        .append(&name("a-1"), ExpectedRevision::Any, vec![event("A")])
        .await
        .unwrap();
    drop(store);
    let store = open(&path).await;
    let all = store.read_all(ReadAllOptions::forwards()).await.unwrap();
    assert_eq!(all.len(), 1);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_file_from_a_newer_foldstore_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foldstore.db");
    open(&path).await.close().await.unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    match SqliteStore::open(&path, SqliteOptions::default()).await {
        Err(e @ OpenError::NewerSchema { found: 99, .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("written by a newer foldstore (schema v99, this build reads up to v3): upgrade foldstore"),
                "{message}"
            );
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[tokio::test]
async fn a_database_foldstore_did_not_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
            .unwrap();
    }
    let result = SqliteStore::open(&path, SqliteOptions::default()).await;
    assert!(
        matches!(result, Err(OpenError::NotFoldstore { .. })),
        "{result:?}"
    );
}

/// After a restart the writer's cache starts empty and is rebuilt from the file:
/// revisions, soft deletes, tombstones, metadata and event ids must all come back.
#[tokio::test]
async fn a_restart_keeps_data_and_the_rebuilt_cache_is_right() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foldstore.db");
    let store = open(&path).await;
    let kept = name("kept-1");
    let deleted = name("deleted-1");
    let dead = name("dead-1");
    let old_append = vec![event("A"), event("B")];
    let first = store
        .append(&kept, ExpectedRevision::NoStream, old_append.clone())
        .await
        .unwrap();
    store
        .append(
            &deleted,
            ExpectedRevision::Any,
            vec![event("A"), event("B")],
        )
        .await
        .unwrap();
    store
        .delete_stream(&deleted, ExpectedRevision::Exact(1))
        .await
        .unwrap();
    store
        .tombstone_stream(&dead, ExpectedRevision::Any)
        .await
        .unwrap();
    let metadata = StreamMetadata {
        max_count: Some(1),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&kept, metadata.clone())
        .await
        .unwrap();
    let head = store.head_position().await.unwrap();
    store.close().await.unwrap();

    let store = open(&path).await;
    assert_eq!(store.head_position().await.unwrap(), head);
    // An old append retried after the restart is recognised, with its first result.
    let retry = store
        .append(&kept, ExpectedRevision::NoStream, old_append)
        .await
        .unwrap();
    assert_eq!(retry, first);
    assert_eq!(store.stream_metadata(&kept).await.unwrap(), Some(metadata));
    let visible = store
        .read_stream(&kept, ReadStreamOptions::forwards())
        .await
        .unwrap();
    assert_eq!(visible.len(), 1);
    assert_eq!(visible[0].revision, 1);
    let next = store
        .append(&kept, ExpectedRevision::Exact(1), vec![event("C")])
        .await
        .unwrap();
    assert_eq!(next.next_expected_revision, 2);
    assert!(next.position > head.unwrap());
    // The soft-deleted stream matches NoStream and continues after its last revision.
    assert!(matches!(
        store
            .read_stream(&deleted, ReadStreamOptions::forwards())
            .await,
        Err(ReadError::StreamNotFound { .. })
    ));
    let again = store
        .append(&deleted, ExpectedRevision::NoStream, vec![event("C")])
        .await
        .unwrap();
    assert_eq!(again.next_expected_revision, 2);
    // The tombstone held.
    assert!(matches!(
        store
            .append(&dead, ExpectedRevision::Any, vec![event("A")])
            .await,
        Err(AppendError::StreamTombstoned { .. })
    ));
    store.close().await.unwrap();
}

/// Group commit under real concurrency: 64 tasks start together; a few of them send
/// appends that must be refused. Every other append succeeds, and exactly their events
/// are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_with_some_refused_do_not_fail_their_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("foldstore.db")).await;
    let taken = NewEvent::json("Taken", &1).unwrap();
    store
        .append(&name("taken-1"), ExpectedRevision::Any, vec![taken.clone()])
        .await
        .unwrap();
    let tasks = 64;
    let rounds = 20;
    let barrier = Arc::new(Barrier::new(tasks));
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        let barrier = Arc::clone(&barrier);
        let taken = taken.clone();
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut ok = 0u64;
            for round in 0..rounds {
                let stream = name(&format!("task-{t}"));
                let result = if t % 16 == 0 && round % 2 == 0 {
                    // Refused: an id already stored in another stream.
                    let r = store
                        .append(
                            &stream,
                            ExpectedRevision::Any,
                            vec![event("X"), taken.clone()],
                        )
                        .await;
                    assert!(
                        matches!(r, Err(AppendError::DuplicateEventId { .. })),
                        "{r:?}"
                    );
                    continue;
                } else if t % 16 == 1 && round % 2 == 0 {
                    // Refused: a wrong expected revision.
                    let r = store
                        .append(&stream, ExpectedRevision::Exact(10_000), vec![event("X")])
                        .await;
                    assert!(
                        matches!(r, Err(AppendError::WrongExpectedRevision { .. })),
                        "{r:?}"
                    );
                    continue;
                } else {
                    store
                        .append(&stream, ExpectedRevision::Any, vec![event("A"), event("B")])
                        .await
                };
                result.unwrap();
                ok += 2;
            }
            ok
        }));
    }
    let mut written = 0;
    for h in handles {
        written += h.await.unwrap();
    }
    let all = store.read_all(ReadAllOptions::forwards()).await.unwrap();
    assert_eq!(all.len() as u64, written + 1);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    for t in 0..tasks {
        let events = store
            .read_stream(&name(&format!("task-{t}")), ReadStreamOptions::forwards())
            .await
            .unwrap();
        assert!(
            events
                .iter()
                .enumerate()
                .all(|(i, e)| e.revision == i as u64)
        );
        assert!(events.iter().all(|e| e.event_type != "X"));
    }
    store.close().await.unwrap();
}

#[tokio::test]
async fn other_handles_are_unavailable_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("foldstore.db")).await;
    let other = store.clone();
    store.close().await.unwrap();
    match other
        .append(&name("a-1"), ExpectedRevision::Any, vec![event("A")])
        .await
    {
        Err(AppendError::Backend(e)) => assert_eq!(e.kind, BackendErrorKind::Unavailable),
        r => panic!("expected Unavailable, got {r:?}"),
    }
    match other.read_all(ReadAllOptions::forwards()).await {
        Err(ReadError::Backend(e)) => assert_eq!(e.kind, BackendErrorKind::Unavailable),
        r => panic!("expected Unavailable, got {r:?}"),
    }
}

/// Category reads go through the category index: a rare category among many events of
/// another one is read without visiting the others (checked by the query plan), and
/// consumer groups split it.
#[tokio::test]
async fn category_reads_and_consumer_groups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foldstore.db");
    let store = open(&path).await;
    for i in 0..200 {
        let stream = if i % 50 == 0 {
            name(&format!("rare-{i}"))
        } else {
            name(&format!("common-{i}"))
        };
        store
            .append(&stream, ExpectedRevision::Any, vec![event("A")])
            .await
            .unwrap();
    }
    let rare = store
        .read_category("rare", ReadAllOptions::forwards())
        .await
        .unwrap();
    assert_eq!(rare.len(), 4);
    let backwards = store
        .read_category("rare", ReadAllOptions::backwards().max_count(2))
        .await
        .unwrap();
    assert_eq!(backwards.len(), 2);
    assert!(backwards[0].position > backwards[1].position);
    let mut seen = 0;
    for member in 0..3 {
        let group = foldstore_core::ConsumerGroup::new(member, 3).unwrap();
        let part = store
            .read_all(
                ReadAllOptions::forwards().filter(
                    EventFilter::category("common")
                        .unwrap()
                        .with_consumer_group(group),
                ),
            )
            .await
            .unwrap();
        assert!(part.iter().all(|e| group.contains(e.stream.as_str())));
        seen += part.len();
    }
    assert_eq!(seen, 196);
    let missing = store
        .read_category("nothing", ReadAllOptions::forwards())
        .await
        .unwrap();
    assert!(missing.is_empty());
    let from = store
        .read_category(
            "rare",
            ReadAllOptions::forwards().from_position(rare[1].position),
        )
        .await
        .unwrap();
    assert_eq!(from[0].position, rare[1].position);
    assert!(from.iter().all(|e| e.position >= Position::new(1)));
    store.close().await.unwrap();

    let conn = rusqlite::Connection::open(&path).unwrap();
    let plan: Vec<String> = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT e.position FROM events AS e INDEXED BY events_by_category \
             WHERE e.position >= 0 AND e.category_id = 1 ORDER BY e.position LIMIT 10",
        )
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        plan.iter().any(|p| p.contains("events_by_category"))
            && !plan.iter().any(|p| p.contains("TEMP B-TREE")),
        "{plan:?}"
    );
}

/// Tags, the tag index and snapshots are in the file: after a restart, reads return
/// the tags, query reads and conditions find the tagged events, and the snapshots load.
#[tokio::test]
async fn tags_and_snapshots_survive_a_restart() {
    use foldstore_core::dcb::{AppendCondition, Query, QueryItem, ReadQueryOptions};
    use foldstore_core::{Snapshot, SnapshotStore};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foldstore.db");
    let store = open(&path).await;
    let q = Query::from_items([QueryItem::new().tags(["course:c1"]).types(["Enrolled"])]);
    let first = store
        .append_if(
            &name("course-c1"),
            ExpectedRevision::NoStream,
            vec![event("Enrolled").with_tags(["course:c1", "student:1"])],
            AppendCondition::new(q.clone(), None),
        )
        .await
        .unwrap();
    store
        .save_snapshot(Snapshot::new(
            name("course-c1"),
            "Seats",
            2,
            0,
            b"{}".to_vec(),
        ))
        .await
        .unwrap();
    store.close().await.unwrap();

    let store = open(&path).await;
    let got = store.read_query(&q, ReadQueryOptions::new()).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].tags, ["course:c1", "student:1"]);
    let again = store
        .append_if(
            &name("course-c1"),
            ExpectedRevision::Any,
            vec![event("Enrolled").with_tags(["course:c1", "student:2"])],
            AppendCondition::new(q, None),
        )
        .await;
    assert!(
        matches!(again, Err(AppendError::ConditionFailed { position }) if position == first.position),
        "{again:?}"
    );
    let snapshot = store
        .load_snapshot(&name("course-c1"), "Seats")
        .await
        .unwrap()
        .expect("the snapshot survived");
    assert_eq!((snapshot.schema_version, snapshot.revision), (2, 0));
    store.close().await.unwrap();
}

/// Under a steady write load the WAL restarts from its beginning instead of growing:
/// once it is past its restart size (32 MiB), the writer finishes the background
/// checkpoint between two batches, and the next batch writes the WAL from its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_restarts_under_a_steady_write_load() {
    const WRITTEN: u64 = 160 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let options = SqliteOptions {
        durability: Durability::Normal,
        ..SqliteOptions::default()
    };
    let store = Arc::new(SqliteStore::open(&path, options).await.unwrap());
    let wal = dir.path().join("wal.db-wal");
    let payload = "x".repeat(60_000);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..4 {
        let (store, payload, wal) = (Arc::clone(&store), payload.clone(), wal.clone());
        tasks.spawn(async move {
            let stream = name(&format!("wal-{t}"));
            let mut peak = 0u64;
            for _ in 0..WRITTEN / 4 / payload.len() as u64 {
                let e = NewEvent::json("Big", &payload).unwrap();
                store
                    .append(&stream, ExpectedRevision::Any, vec![e])
                    .await
                    .unwrap();
                peak = peak.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            }
            peak
        });
    }
    let mut peak = 0;
    while let Some(p) = tasks.join_next().await {
        peak = peak.max(p.unwrap());
    }
    assert!(
        peak < WRITTEN * 3 / 5,
        "the WAL grew to {} MiB while {} MiB were written: it never restarted",
        peak >> 20,
        WRITTEN >> 20
    );
    Arc::into_inner(store).unwrap().close().await.unwrap();
}
