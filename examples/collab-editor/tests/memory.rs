//! Concurrent edits on the in-memory store.

mod common;

use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edits_from_stale_versions_land_where_their_writers_meant() {
    common::assert_edits_land("memory", Arc::new(foldstore_core::InMemoryStore::new())).await;
}
