//! The shop's rules on the in-memory store.

mod common;

use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_shop_never_overdraws_a_card() {
    let store = Arc::new(foldstore_core::InMemoryStore::new());
    let report = common::run("memory", store).await;
    common::assert_shop_holds("memory", &report);
}
