//! The sale's rules on the in-memory store.

mod common;

use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_order_ends_once_and_no_stock_is_lost() {
    let store = Arc::new(foldstore_core::InMemoryStore::new());
    let report = common::run("memory", store).await;
    common::assert_sale_holds("memory", &report);
}
