//! Old schemas keep opening (guarantee G9): a dump of a schema written by each released
//! schema version is checked in under `tests/fixtures/` and must restore, open (migrating
//! as needed), read back exactly, and accept new appends. It guards against a schema
//! change without a migration, and against a migration that loses or reinterprets
//! stored data.
//!
//! `tests/fixtures/schema_v1.sql` was written by `write_schema_v1_dump` (ignored; run it
//! only to recreate the file, never after the schema moved on). The dump's schema is
//! named [`PLACEHOLDER`]; each run restores it under a fresh name. Its transaction ids
//! were renumbered to small values before dumping, so that the restored log sorts below
//! any cluster's new transactions (see docs/semantics.md, "Positions belong to one
//! cluster").

mod common;

use foldstore_core::testkit::old_format::{check_scenario, write_scenario};
use foldstore_postgres::PostgresStore;
use tokio_postgres::NoTls;

/// The schema name inside the checked-in dumps.
const PLACEHOLDER: &str = "foldstore_fixture_v1";

const SCHEMA_V1: &str = include_str!("fixtures/schema_v1.sql");

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("a raw connection");
    tokio::spawn(connection);
    client
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
    raw(&url)
        .await
        .batch_execute(&format!(
            "UPDATE {PLACEHOLDER}.events e SET tx = (100 + r.rank)::text::xid8 \
             FROM (SELECT tx AS old, dense_rank() OVER (ORDER BY tx) AS rank \
                   FROM {PLACEHOLDER}.events) r \
             WHERE e.tx = r.old"
        ))
        .await
        .expect("renumber transaction ids");
    let out = std::process::Command::new("pg_dump")
        .args([
            "--schema",
            PLACEHOLDER,
            "--no-owner",
            "--no-privileges",
            "--inserts",
            &url,
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
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema_v1.sql");
    std::fs::write(path, dump).expect("write the dump");
    common::drop_schema(&url, PLACEHOLDER)
        .await
        .expect("drop the fixture schema");
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
