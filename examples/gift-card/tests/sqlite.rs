//! The shop's rules on the SQLite store (a file in a temporary directory).

mod common;

use std::sync::Arc;

use foldstore_sqlite::{SqliteOptions, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_shop_never_overdraws_a_card() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("shop.db"), SqliteOptions::default())
        .await
        .expect("open the SQLite store");
    let report = common::run("sqlite", Arc::new(store.clone())).await;
    store.close().await.expect("close the SQLite store");
    common::assert_shop_holds("sqlite", &report);
}
