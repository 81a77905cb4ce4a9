//! The board's rules on the SQLite store (a file in a temporary directory).

mod common;

use std::sync::Arc;

use foldstore_sqlite::{SqliteOptions, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn doing_never_exceeds_its_limit_however_many_move_cards() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("kanban.db"), SqliteOptions::default())
        .await
        .expect("open the SQLite store");
    common::assert_board_holds("sqlite", Arc::new(store.clone())).await;
    store.close().await.expect("close the SQLite store");
}
