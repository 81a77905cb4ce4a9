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

/// The PostgreSQL URL, or `None` (after a SKIPPED line) when it is not set; fails
/// instead with `FOLDSTORE_REQUIRE_POSTGRES=1`.
pub fn postgres_url(test: &str) -> Option<String> {
    foldstore_postgres::testkit::test_url(test, "cargo test -p bank")
}

/// A fresh PostgreSQL store in its own schema, and the guard that drops the schema.
pub async fn fresh_postgres(
    url: &str,
) -> (
    foldstore_postgres::PostgresStore,
    foldstore_postgres::testkit::TestSchema,
) {
    foldstore_postgres::testkit::fresh_store(url).await
}
