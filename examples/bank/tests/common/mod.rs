//! Shared by every backend's test file: run the scenario, assert the invariants, and
//! (for PostgreSQL) the URL and a fresh schema per test.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::sync::Arc;

use bank::Design;
use bank::scenario::{Config, run_bank_scenario};
use foldstore_core::EventStore;

/// The seed: `FOLDSTORE_BANK_SEED` to replay a run, else a fixed one.
pub fn seed() -> u64 {
    std::env::var("FOLDSTORE_BANK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0ba4_2026)
}

/// Runs the standard scenario and asserts every invariant; also asserts that the run
/// exercised every path (some transfers completed, some failed, and with the saga some
/// were compensated).
pub async fn assert_bank_holds(backend: &str, store: Arc<dyn EventStore>, design: Design) {
    let seed = seed();
    let started = std::time::Instant::now();
    let report = run_bank_scenario(store, design, &Config::standard(seed))
        .await
        .unwrap_or_else(|e| panic!("{backend} {design:?} (seed {seed}): {e}"));
    let counts = report.assert_holds();
    let _ = writeln!(
        std::io::stderr(),
        "{backend} {design:?} seed {seed}: {counts:?}, {} conflicts retried, {} events, {:?}",
        report.conflicts,
        report.verdict.events,
        started.elapsed()
    );
    assert!(counts["completed"] > 0, "no transfer completed: {counts:?}");
    assert!(counts["failed"] > 0, "no transfer failed: {counts:?}");
    match design {
        Design::Aggregates => assert!(
            counts["compensated"] > 0,
            "no transfer was compensated, so compensation went untested: {counts:?}"
        ),
        Design::Dcb => assert_eq!(counts["compensated"], 0, "DCB never compensates"),
    }
    let total: usize = counts.values().sum();
    assert_eq!(total, 64 * 8);
}

/// How to run the PostgreSQL tests, printed when they are skipped.
const HOW: &str =
    "FOLDSTORE_TEST_POSTGRES_URL=postgres://root@127.0.0.1:5432/test cargo test -p bank";

/// The PostgreSQL URL, or `None` (after a SKIPPED line) when it is not set; fails
/// instead with `FOLDSTORE_REQUIRE_POSTGRES=1`.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("FOLDSTORE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("FOLDSTORE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "{test}: FOLDSTORE_REQUIRE_POSTGRES=1 but FOLDSTORE_TEST_POSTGRES_URL is not set; run `{HOW}`"
                );
            }
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: FOLDSTORE_TEST_POSTGRES_URL is not set. Run it with `{HOW}`"
            );
            None
        }
    }
}

/// Drops its schema when dropped.
pub struct SchemaGuard {
    pub url: String,
    pub schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Drop may run inside a Tokio runtime: use a thread with a runtime of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for schema cleanup");
            rt.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                let driver = tokio::spawn(connection);
                let sql =
                    format!("SET lock_timeout = '30s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                let result = client.batch_execute(&sql).await.map_err(|e| e.to_string());
                drop(client);
                let _ = driver.await;
                result
            })
        })
        .join();
        if let Ok(Err(e)) | Err(e) = done.map_err(|_| "cleanup thread panicked".to_owned()) {
            eprintln!("could not drop test schema {}: {e}", self.schema);
        }
    }
}

/// A fresh PostgreSQL store in its own schema, and the guard that drops the schema.
pub async fn fresh_postgres(url: &str) -> (foldstore_postgres::PostgresStore, SchemaGuard) {
    let schema = format!("foldstore_test_{:016x}", rand::random::<u64>());
    let guard = SchemaGuard {
        url: url.to_owned(),
        schema: schema.clone(),
    };
    let options = foldstore_postgres::PostgresOptions::new(url)
        .schema(&schema)
        .connect_timeout(std::time::Duration::from_secs(5));
    let store = foldstore_postgres::PostgresStore::connect(options)
        .await
        .unwrap_or_else(|e| panic!("connect to {url} (schema {schema}): {e}"));
    (store, guard)
}
