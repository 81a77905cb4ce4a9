//! Shared by every backend's test file: run the shoppers, check the carts' rules,
//! and say what the run exercised.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::sync::Arc;

use foldstore_core::{EventStore, SnapshotStore};
use shopping_cart::scenario::{ShoppersConfig, run_shoppers};

/// The seed: `FOLDSTORE_CART_SEED` to replay a run, else a fixed one.
pub fn seed() -> u64 {
    std::env::var("FOLDSTORE_CART_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00ca_2700)
}

/// Runs the standard shoppers over `store` and checks every rule, and that the run
/// took every path.
pub async fn assert_carts_hold<S: EventStore + SnapshotStore + 'static>(
    backend: &str,
    store: Arc<S>,
) {
    let seed = seed();
    let report = run_shoppers(store, &ShoppersConfig::standard(seed))
        .await
        .unwrap_or_else(|e| panic!("{backend} (seed {seed}): {e}"));
    let counts = report.assert_holds();
    let _ = writeln!(std::io::stderr(), "{backend} seed {seed}: {counts:?}");
    for path in [
        "done",
        "refused_checked_out",
        "refused_not_in_cart",
        "resent",
        "checked_out",
    ] {
        assert!(
            counts.get(path).copied().unwrap_or(0) > 0,
            "{backend}: nothing took the path {path:?}, so it went untested: {counts:?}"
        );
    }
}
