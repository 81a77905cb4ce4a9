//! The board's rules on the in-memory store.

mod common;

use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn doing_never_exceeds_its_limit_however_many_move_cards() {
    common::assert_board_holds("memory", Arc::new(foldstore_core::InMemoryStore::new())).await;
}
