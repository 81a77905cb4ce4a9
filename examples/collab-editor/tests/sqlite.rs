//! Concurrent edits on the SQLite store (a file in a temporary directory).

mod common;

use std::sync::Arc;

use foldstore_sqlite::{SqliteOptions, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edits_from_stale_versions_land_where_their_writers_meant() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("editor.db"), SqliteOptions::default())
        .await
        .expect("open the SQLite store");
    common::assert_edits_land("sqlite", Arc::new(store.clone())).await;
    store.close().await.expect("close the SQLite store");
}
