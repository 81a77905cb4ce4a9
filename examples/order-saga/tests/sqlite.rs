//! The sale's rules on the SQLite store (a file in a temporary directory).

mod common;

use std::sync::Arc;

use foldstore_sqlite::{SqliteOptions, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_order_ends_once_and_no_stock_is_lost() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("shop.db"), SqliteOptions::default())
        .await
        .expect("open the SQLite store");
    let report = common::run("sqlite", Arc::new(store.clone())).await;
    store.close().await.expect("close the SQLite store");
    common::assert_sale_holds("sqlite", &report);
}
