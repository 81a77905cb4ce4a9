//! Old files keep opening (guarantee G9): a database written by each released schema
//! version is checked in under `tests/fixtures/` and must open, read back exactly, and
//! accept new appends. It guards against a schema change without a migration, and
//! against a migration that loses or reinterprets stored data.
//!
//! `tests/fixtures/schema_v1.db` was written by `write_schema_v1_fixture`, and
//! `tests/fixtures/schema_v2.db` by `write_schema_v2_fixture` (the scenario of
//! `foldstore_core::testkit::old_format`) with foldstore at schema version 2 (both
//! ignored; run them only to recreate a file, never after the schema moved on).

use std::path::{Path, PathBuf};

use foldstore_core::{
    AppendError, EventStore, ExpectedRevision, JSON, Metadata, NewEvent, ReadAllOptions, ReadError,
    ReadStreamOptions, SnapshotStore, StreamMetadata, StreamName,
};
use foldstore_sqlite::{SqliteOptions, SqliteStore};
use uuid::Uuid;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema_v1.db")
}

fn version(path: &Path) -> u32 {
    rusqlite::Connection::open(path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

fn fixture_v2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema_v2.db")
}

/// Removes a database file and its companions.
fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let mut p = path.to_owned().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

/// What the version 2 fixture holds besides the shared scenario: two tagged events
/// and a snapshot.
async fn write_v2_extras(store: &SqliteStore) {
    let tagged = NewEvent::json("Claimed", &serde_json::json!({"seat": 1}))
        .unwrap()
        .with_id(foldstore_core::testkit::old_format::id(8))
        .with_tags(["course:c1", "student:ada"]);
    store
        .append(&name("claim-1"), ExpectedRevision::NoStream, vec![tagged])
        .await
        .unwrap();
    store
        .save_snapshot(foldstore_core::Snapshot::new(
            name("account-1"),
            "Balance",
            1,
            2,
            b"6".to_vec(),
        ))
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "writes the checked-in fixture; run only to recreate it"]
async fn write_schema_v2_fixture() {
    let path = fixture_v2();
    remove_database(&path);
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    foldstore_core::testkit::old_format::write_scenario(&store).await;
    write_v2_extras(&store).await;
    store.close().await.unwrap();
    let mut lock = path.into_os_string();
    lock.push(".lock");
    let _ = std::fs::remove_file(lock);
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n)
}

fn correlation() -> Uuid {
    Uuid::from_u128(0xc0c0)
}

fn metadata() -> StreamMetadata {
    let mut custom = serde_json::Map::new();
    custom.insert("owner".into(), "ada".into());
    StreamMetadata {
        max_count: Some(2),
        custom,
        ..StreamMetadata::default()
    }
}

#[tokio::test]
#[ignore = "writes the checked-in fixture; run only to recreate it"]
async fn write_schema_v1_fixture() {
    let path = fixture();
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let account = name("account-1");
    let events = (1..=3)
        .map(|n| {
            NewEvent::json("Deposited", &serde_json::json!({ "amount": n }))
                .unwrap()
                .with_id(id(n))
                .with_metadata(Metadata::new().with_correlation_id(correlation()))
        })
        .collect();
    store
        .append(&account, ExpectedRevision::NoStream, events)
        .await
        .unwrap();
    let order = name("order-7");
    store
        .append(
            &order,
            ExpectedRevision::NoStream,
            vec![
                NewEvent::json("Placed", &serde_json::json!({}))
                    .unwrap()
                    .with_id(id(4)),
                NewEvent::raw("Note", "plain text", "text/plain").with_id(id(5)),
            ],
        )
        .await
        .unwrap();
    store
        .delete_stream(&order, ExpectedRevision::Exact(1))
        .await
        .unwrap();
    store
        .append(
            &order,
            ExpectedRevision::NoStream,
            vec![
                NewEvent::json("Placed", &serde_json::json!({"again": true}))
                    .unwrap()
                    .with_id(id(6)),
            ],
        )
        .await
        .unwrap();
    let gone = name("gone-1");
    store
        .append(
            &gone,
            ExpectedRevision::Any,
            vec![NewEvent::json("Born", &1).unwrap().with_id(id(7))],
        )
        .await
        .unwrap();
    store
        .tombstone_stream(&gone, ExpectedRevision::Any)
        .await
        .unwrap();
    store
        .set_stream_metadata(&account, metadata())
        .await
        .unwrap();
    store.close().await.unwrap();
    let mut lock = path.into_os_string();
    lock.push(".lock");
    let _ = std::fs::remove_file(lock);
}

#[tokio::test]
async fn schema_v1_file_opens_and_reads_back() {
    // Work on a copy: the checked-in file must never change.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    std::fs::copy(fixture(), &path).expect("tests/fixtures/schema_v1.db is checked in");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();

    let all = store.read_all(ReadAllOptions::forwards()).await.unwrap();
    let ids: Vec<Uuid> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=7).map(id).collect::<Vec<_>>());
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(all[0].json::<serde_json::Value>().unwrap()["amount"], 1);
    assert_eq!(all[0].metadata.correlation_id(), Some(correlation()));
    assert_eq!(all[0].content_type, JSON);
    assert_eq!(all[4].content_type, "text/plain");
    assert_eq!(&all[4].data[..], b"plain text");
    assert!(all[0].recorded_at.timestamp() > 1_700_000_000);

    // Metadata (max_count 2) hides the first account event.
    let account = store
        .read_stream(&name("account-1"), ReadStreamOptions::forwards())
        .await
        .unwrap();
    assert_eq!(
        account.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        store.stream_metadata(&name("account-1")).await.unwrap(),
        Some(metadata())
    );
    // The soft delete held: only the event written after it, at revision 2.
    let order = store
        .read_stream(&name("order-7"), ReadStreamOptions::forwards())
        .await
        .unwrap();
    assert_eq!(order.len(), 1);
    assert_eq!(order[0].revision, 2);
    // The tombstone held.
    assert!(matches!(
        store
            .read_stream(&name("gone-1"), ReadStreamOptions::forwards())
            .await,
        Err(ReadError::StreamTombstoned { .. })
    ));
    assert!(matches!(
        store
            .append(
                &name("gone-1"),
                ExpectedRevision::Any,
                vec![NewEvent::json("X", &1).unwrap()]
            )
            .await,
        Err(AppendError::StreamTombstoned { .. })
    ));
    // An old append retried is recognised; new appends continue where the file ended.
    let retry = store
        .append(
            &name("order-7"),
            ExpectedRevision::Exact(1),
            vec![
                NewEvent::json("Placed", &serde_json::json!({"again": true}))
                    .unwrap()
                    .with_id(id(6)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(retry.position, all[5].position);
    let next = store
        .append(
            &name("account-1"),
            ExpectedRevision::Exact(2),
            vec![NewEvent::json("Deposited", &4).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(next.next_expected_revision, 3);
    assert!(next.position > all[6].position);
    store.close().await.unwrap();
}

/// A version 1 file is migrated to the current version on open: every event is kept
/// (with no tags), and the newer features work on it: tagged appends, query reads
/// through the tag index, conditions and snapshots. The migration is stored, so a
/// reopen does nothing.
#[tokio::test]
async fn schema_v1_file_migrates_and_keeps_its_events() {
    use foldstore_core::dcb::{AppendCondition, Query, QueryItem, ReadQueryOptions};
    use foldstore_core::{AppendError, Snapshot, SnapshotStore};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    std::fs::copy(fixture(), &path).expect("tests/fixtures/schema_v1.db is checked in");
    assert_eq!(version(&path), 1, "the fixture is a version 1 file");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let all = store.read_all(ReadAllOptions::forwards()).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        (1..=7).map(id).collect::<Vec<_>>()
    );
    assert!(
        all.iter().all(|e| e.tags.is_empty()),
        "old events have no tags"
    );
    let everything = store
        .read_query(&Query::all(), ReadQueryOptions::new())
        .await
        .unwrap();
    assert_eq!(everything, all, "Query::all reads the migrated log");
    let by_type = store
        .read_query(
            &Query::from_items([QueryItem::new().types(["Placed"])]),
            ReadQueryOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        by_type.iter().map(|e| e.id).collect::<Vec<_>>(),
        [id(4), id(6)],
        "the type index covers events written before the migration"
    );

    let q = Query::from_items([QueryItem::new().tags(["account:1"])]);
    let written = store
        .append_if(
            &name("account-1"),
            ExpectedRevision::Exact(2),
            vec![
                NewEvent::json("Deposited", &5)
                    .unwrap()
                    .with_tags(["account:1"]),
            ],
            AppendCondition::new(q.clone(), None),
        )
        .await
        .unwrap();
    let again = store
        .append_if(
            &name("account-1"),
            ExpectedRevision::Exact(3),
            vec![
                NewEvent::json("Deposited", &6)
                    .unwrap()
                    .with_tags(["account:1"]),
            ],
            AppendCondition::new(q.clone(), None),
        )
        .await;
    assert!(
        matches!(again, Err(AppendError::ConditionFailed { position }) if position == written.position),
        "{again:?}"
    );
    store
        .save_snapshot(Snapshot::new(
            name("account-1"),
            "Balance",
            1,
            3,
            b"9".to_vec(),
        ))
        .await
        .unwrap();
    store.close().await.unwrap();

    assert_eq!(version(&path), 3, "the migration is stored");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let tagged = store.read_query(&q, ReadQueryOptions::new()).await.unwrap();
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0].tags, ["account:1"]);
    assert_eq!(
        store
            .load_snapshot(&name("account-1"), "Balance")
            .await
            .unwrap()
            .map(|s| s.revision),
        Some(3)
    );
    assert_eq!(
        store
            .read_all(ReadAllOptions::forwards())
            .await
            .unwrap()
            .len(),
        8
    );
    store.close().await.unwrap();
}

/// A version 2 file opens, migrating to version 3 (tracking), and keeps the shared
/// scenario, its tags and its snapshot; transactions with tracking work on it.
#[tokio::test]
async fn schema_v2_file_opens_and_reads_back() {
    use foldstore_core::dcb::{Query, QueryItem, ReadQueryOptions};
    use foldstore_core::{AppendTransaction, Position};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.db");
    std::fs::copy(fixture_v2(), &path).expect("tests/fixtures/schema_v2.db is checked in");
    assert_eq!(version(&path), 2, "the fixture is a version 2 file");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    foldstore_core::testkit::old_format::check_scenario(&store).await;
    let claims = store
        .read_query(
            &Query::from_items([QueryItem::new().tags(["student:ada"])]),
            ReadQueryOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(claims.len(), 1, "the tag index survived");
    assert_eq!(claims[0].tags, ["course:c1", "student:ada"]);
    let snapshot = store
        .load_snapshot(&name("account-1"), "Balance")
        .await
        .unwrap()
        .expect("the snapshot survived");
    assert_eq!(snapshot.revision, 2);
    assert_eq!(store.tracking("mirror").await.unwrap(), None);
    store
        .append_transaction(
            AppendTransaction::new()
                .stream(
                    name("claim-1"),
                    ExpectedRevision::Exact(0),
                    vec![NewEvent::json("Released", &1).unwrap()],
                )
                .tracking("mirror", Position::new(3)),
        )
        .await
        .unwrap();
    store.close().await.unwrap();
    assert_eq!(version(&path), 3, "the migration is stored");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store.tracking("mirror").await.unwrap(),
        Some(Position::new(3))
    );
    store.close().await.unwrap();
}
