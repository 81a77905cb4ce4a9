//! Shared by every backend's test file: run the shop, check its rules, and say what
//! it exercised.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::sync::Arc;

use foldstore_core::EventStore;
use gift_card::scenario::{ShopConfig, ShopReport, run_shop};

/// The seed: `FOLDSTORE_GIFT_CARD_SEED` to replay a run, else a fixed one.
pub fn seed() -> u64 {
    std::env::var("FOLDSTORE_GIFT_CARD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6c1f_7ca2)
}

/// Runs the standard shop over `store` (read model in a temporary directory).
pub async fn run(backend: &str, store: Arc<dyn EventStore>) -> ShopReport {
    let seed = seed();
    let dir = tempfile::tempdir().expect("temporary directory");
    run_shop(
        store,
        &dir.path().join("read-model.db"),
        &ShopConfig::standard(seed),
    )
    .await
    .unwrap_or_else(|e| panic!("{backend} (seed {seed}): {e}"))
}

/// Checks every rule of the report, and that the run took every path: redemptions
/// charged, refused for the balance, refused after the cancellation, and resent.
pub fn assert_shop_holds(backend: &str, report: &ShopReport) {
    let counts = report.assert_holds();
    let _ = writeln!(
        std::io::stderr(),
        "{backend} seed {}: {counts:?}, {} appends retried after losing a race, {} gift-card events",
        seed(),
        report.retried,
        report.log.len()
    );
    for path in ["charged", "insufficient", "cancelled", "resent"] {
        assert!(
            counts.get(path).copied().unwrap_or(0) > 0,
            "{backend}: no redemption took the path {path:?}, so it went untested: {counts:?}"
        );
    }
    let config = &report.config;
    assert_eq!(
        report.attempts.len(),
        config.tills * config.redemptions,
        "every redemption has an answer"
    );
}
