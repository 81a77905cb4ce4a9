//! The shop's rules on the PostgreSQL store, in a schema of its own that the test
//! drops. Skipped, with a SKIPPED line, when `FOLDSTORE_TEST_POSTGRES_URL` is unset;
//! failed instead with `FOLDSTORE_REQUIRE_POSTGRES=1` (CI).

mod common;

use std::io::Write;
use std::sync::Arc;

use foldstore_postgres::{PostgresOptions, PostgresStore};

const HOW: &str =
    "FOLDSTORE_TEST_POSTGRES_URL=postgres://root@127.0.0.1:5432/test cargo test -p gift-card";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_shop_never_overdraws_a_card() {
    let test = "a_busy_shop_never_overdraws_a_card";
    let url = match std::env::var("FOLDSTORE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                std::env::var("FOLDSTORE_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "{test}: FOLDSTORE_REQUIRE_POSTGRES=1 but FOLDSTORE_TEST_POSTGRES_URL is not set; run `{HOW}`"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED gift-card {test}: FOLDSTORE_TEST_POSTGRES_URL is not set. Run it with `{HOW}`"
            );
            return;
        }
    };
    let schema = format!("foldstore_test_{:016x}", rand::random::<u64>());
    let store = PostgresStore::connect(PostgresOptions::new(&url).schema(&schema))
        .await
        .unwrap_or_else(|e| panic!("connect to {url} (schema {schema}): {e}"));
    // The rules are checked after the schema is dropped, so a failure leaves nothing.
    let report = tokio::spawn(common::run("postgres", Arc::new(store.clone()))).await;
    drop(store);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("a connection to drop the test schema");
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "SET lock_timeout = '30s'; DROP SCHEMA \"{schema}\" CASCADE"
        ))
        .await
        .expect("drop the test schema");
    let report = report.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    common::assert_shop_holds("postgres", &report);
}
