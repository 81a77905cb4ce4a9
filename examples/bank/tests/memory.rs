//! The bank's invariants on the in-memory store, for both designs.

mod common;

use std::sync::Arc;

use bank::Design;
use foldstore_core::InMemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aggregates_with_a_transfer_saga_keep_the_invariants() {
    let store = Arc::new(InMemoryStore::new());
    common::assert_bank_holds("memory", store, Design::Aggregates).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dcb_keeps_the_invariants() {
    let store = Arc::new(InMemoryStore::new());
    common::assert_bank_holds("memory", store, Design::Dcb).await;
}
