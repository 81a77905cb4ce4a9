//! The carts' rules on the SQLite store (a file in a temporary directory).

mod common;

use std::sync::Arc;

use foldstore_sqlite::{SqliteOptions, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_changes_its_cart_once_and_checkouts_add_up() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("carts.db"), SqliteOptions::default())
        .await
        .expect("open the SQLite store");
    common::assert_carts_hold("sqlite", Arc::new(store.clone())).await;
    store.close().await.expect("close the SQLite store");
}
