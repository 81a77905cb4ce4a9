//! Shared by every backend's test file: run the sale, check its rules, and say what
//! it exercised.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::sync::Arc;

use foldstore_core::EventStore;
use order_saga::scenario::{SaleConfig, SaleReport, run_sale};

/// The seed: `FOLDSTORE_ORDER_SAGA_SEED` to replay a run, else a fixed one.
pub fn seed() -> u64 {
    std::env::var("FOLDSTORE_ORDER_SAGA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x05a9_a2b1)
}

/// Runs the standard sale over `store`.
pub async fn run(backend: &str, store: Arc<dyn EventStore>) -> SaleReport {
    let seed = seed();
    run_sale(store, &SaleConfig::standard(seed))
        .await
        .unwrap_or_else(|e| panic!("{backend} (seed {seed}): {e}"))
}

/// Checks every rule of the report, and that the sale took every path: orders
/// confirmed, cancelled for lack of stock, for a declined card and for a payment
/// that timed out.
pub fn assert_sale_holds(backend: &str, report: &SaleReport) {
    let counts = report.assert_holds();
    let _ = writeln!(
        std::io::stderr(),
        "{backend} seed {}: {counts:?}, {} dead letters",
        seed(),
        report.dead_letters.len()
    );
    for path in ["confirmed", "out_of_stock", "declined", "timed_out"] {
        assert!(
            counts.get(path).copied().unwrap_or(0) > 0,
            "{backend}: no order ended {path:?}, so that path went untested: {counts:?}"
        );
    }
}
