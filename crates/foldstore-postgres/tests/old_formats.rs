//! Old schemas keep opening (guarantee G9): a dump of a schema written by each released
//! schema version is checked in under `tests/fixtures/` and must restore, open (migrating
//! as needed), read back exactly, and accept new appends. It guards against a schema
//! change without a migration, and against a migration that loses or reinterprets
//! stored data.
//!
//! `tests/fixtures/schema_v1.sql` was written by `write_schema_v1_dump` and
//! `tests/fixtures/schema_v3.sql` by `write_schema_v3_dump` with foldstore at schema
//! version 3 (both ignored; run them only to recreate a file, never after the schema
//! moved on). A dump's schema is named [`PLACEHOLDER`] (or [`PLACEHOLDER_V3`]); each run
//! restores it under a fresh name. Its transaction ids
//! were renumbered to small values before dumping, so that the restored log sorts below
//! any cluster's new transactions (see docs/semantics.md, "Positions belong to one
//! cluster").

mod common;

use foldstore_core::testkit::old_format::{check_scenario, write_scenario};
use foldstore_core::{EventStore, ExpectedRevision, NewEvent, Snapshot, SnapshotStore, StreamName};
use foldstore_postgres::PostgresStore;
use tokio_postgres::NoTls;

/// The schema name inside the checked-in dumps.
const PLACEHOLDER: &str = "foldstore_fixture_v1";

const SCHEMA_V1: &str = include_str!("fixtures/schema_v1.sql");

const SCHEMA_V3: &str = include_str!("fixtures/schema_v3.sql");

/// The schema name inside the version 3 dump.
const PLACEHOLDER_V3: &str = "foldstore_fixture_v3";

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("a raw connection");
    tokio::spawn(connection);
    client
}

/// Renumbers the transaction ids of `schema`'s events to small values, dumps the
/// schema into `tests/fixtures/<file>` as plain SQL, and drops it.
async fn dump_into(url: &str, schema: &str, file: &str) {
    raw(url)
        .await
        .batch_execute(&format!(
            "UPDATE {schema}.events e SET tx = (100 + r.rank)::text::xid8 \
             FROM (SELECT tx AS old, dense_rank() OVER (ORDER BY tx) AS rank \
                   FROM {schema}.events) r \
             WHERE e.tx = r.old"
        ))
        .await
        .expect("renumber transaction ids");
    if raw(url)
        .await
        .query_opt(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'event_tags'",
            &[&schema],
        )
        .await
        .expect("look for event_tags")
        .is_some()
    {
        raw(url)
            .await
            .batch_execute(&format!(
                "UPDATE {schema}.event_tags t SET tx = e.tx FROM {schema}.events e \
                 WHERE e.seq = t.seq"
            ))
            .await
            .expect("renumber the tag index's transaction ids");
    }
    let out = std::process::Command::new("pg_dump")
        .args([
            "--schema",
            schema,
            "--no-owner",
            "--no-privileges",
            "--inserts",
            url,
        ])
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Keep plain SQL: drop psql meta-commands (`\restrict` and the like), which only
    // psql understands.
    let dump: String = String::from_utf8(out.stdout)
        .expect("the dump is UTF-8")
        .lines()
        .filter(|l| !l.starts_with('\\'))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::write(path, dump).expect("write the dump");
    common::drop_schema(url, schema)
        .await
        .expect("drop the fixture schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the checked-in dump; run only to recreate it"]
async fn write_schema_v1_dump() {
    let url = common::test_url("write_schema_v1_dump").expect("needs PostgreSQL");
    let _ = common::drop_schema(&url, PLACEHOLDER).await;
    let store = PostgresStore::connect(common::options(&url, PLACEHOLDER))
        .await
        .expect("create the schema");
    write_scenario(&store).await;
    drop(store);
    dump_into(&url, PLACEHOLDER, "schema_v1.sql").await;
}

/// What the version 3 dump holds besides the shared scenario: a tagged event and a
/// snapshot.
async fn write_v3_extras(store: &PostgresStore) {
    let tagged = NewEvent::json("Claimed", &serde_json::json!({"seat": 1}))
        .expect("JSON")
        .with_id(foldstore_core::testkit::old_format::id(8))
        .with_tags(["course:c1", "student:ada"]);
    store
        .append(
            &StreamName::new("claim-1").expect("valid"),
            ExpectedRevision::NoStream,
            vec![tagged],
        )
        .await
        .expect("append a tagged event");
    store
        .save_snapshot(Snapshot::new(
            StreamName::new("account-1").expect("valid"),
            "Balance",
            1,
            2,
            b"6".to_vec(),
        ))
        .await
        .expect("save a snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the checked-in dump; run only to recreate it"]
async fn write_schema_v3_dump() {
    let url = common::test_url("write_schema_v3_dump").expect("needs PostgreSQL");
    let _ = common::drop_schema(&url, PLACEHOLDER_V3).await;
    let store = PostgresStore::connect(common::options(&url, PLACEHOLDER_V3))
        .await
        .expect("create the schema");
    write_scenario(&store).await;
    write_v3_extras(&store).await;
    drop(store);
    dump_into(&url, PLACEHOLDER_V3, "schema_v3.sql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_v1_dump_opens_and_reads_back() {
    let Some(url) = common::test_url("schema_v1_dump_opens_and_reads_back") else {
        return;
    };
    let schema = common::fresh_schema();
    let _guard = common::SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    raw(&url)
        .await
        .batch_execute(&SCHEMA_V1.replace(PLACEHOLDER, &schema))
        .await
        .expect("restore tests/fixtures/schema_v1.sql");
    let store = PostgresStore::connect(common::options(&url, &schema))
        .await
        .expect("open (and migrate) the restored schema");
    check_scenario(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_v3_dump_opens_and_reads_back() {
    use foldstore_core::dcb::{Query, QueryItem, ReadQueryOptions};

    let Some(url) = common::test_url("schema_v3_dump_opens_and_reads_back") else {
        return;
    };
    let schema = common::fresh_schema();
    let _guard = common::SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    raw(&url)
        .await
        .batch_execute(&SCHEMA_V3.replace(PLACEHOLDER_V3, &schema))
        .await
        .expect("restore tests/fixtures/schema_v3.sql");
    let store = PostgresStore::connect(common::options(&url, &schema))
        .await
        .expect("open (and migrate) the restored schema");
    check_scenario(&store).await;
    let claims = store
        .read_query(
            &Query::from_items([QueryItem::new().tags(["student:ada"])]),
            ReadQueryOptions::new(),
        )
        .await
        .expect("read_query");
    assert_eq!(claims.len(), 1, "the tag index survived");
    assert_eq!(claims[0].tags, ["course:c1", "student:ada"]);
    let snapshot = store
        .load_snapshot(&StreamName::new("account-1").expect("valid"), "Balance")
        .await
        .expect("load_snapshot")
        .expect("the snapshot survived");
    assert_eq!(snapshot.revision, 2);
    // Migrated to version 4: transactions with tracking work on it.
    assert_eq!(store.tracking("mirror").await.expect("tracking"), None);
    let claim = NewEvent::json("Released", &1).expect("JSON");
    let released = store
        .append_transaction(
            foldstore_core::AppendTransaction::new()
                .stream(
                    StreamName::new("claim-1").expect("valid"),
                    ExpectedRevision::Exact(0),
                    vec![claim],
                )
                .tracking("mirror", foldstore_core::Position::new(3)),
        )
        .await
        .expect("a transaction on the migrated schema");
    assert_eq!(released.streams[0].next_expected_revision, 1);
    assert_eq!(
        store.tracking("mirror").await.expect("tracking"),
        Some(foldstore_core::Position::new(3))
    );
    let version: i32 = raw(&url)
        .await
        .query_one(
            &format!("SELECT max(version) FROM \"{schema}\".schema_version"),
            &[],
        )
        .await
        .expect("read the schema version")
        .get(0);
    assert_eq!(version, 4, "the migration is stored");
}
