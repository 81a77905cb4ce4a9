//! The carts' rules on the in-memory store.

mod common;

use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_changes_its_cart_once_and_checkouts_add_up() {
    common::assert_carts_hold("memory", Arc::new(foldstore_core::InMemoryStore::new())).await;
}
