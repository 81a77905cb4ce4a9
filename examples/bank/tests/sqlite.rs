//! The bank's invariants on the SQLite store (a file in a temporary directory), for
//! both designs.

mod common;

use std::sync::Arc;

use bank::Design;
use foldstore_sqlite::{SqliteOptions, SqliteStore};

async fn run(design: Design) {
    let dir = tempfile::tempdir().expect("temporary directory");
    // More readers than saga runners: a runner whose subscription has a read queued
    // for a reader while the runner dispatches (which also reads) holds that reader,
    // so with as many runners as readers they can all wait on each other. The toolkit's
    // SagaRunner should not keep a read in flight while it dispatches; until it does,
    // the pool must be larger than the number of runners.
    let options = SqliteOptions {
        readers: 24,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(dir.path().join("bank.db"), options)
        .await
        .expect("open the SQLite store");
    common::assert_bank_holds("sqlite", Arc::new(store.clone()), design).await;
    store.close().await.expect("close the SQLite store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aggregates_with_a_transfer_saga_keep_the_invariants() {
    run(Design::Aggregates).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dcb_keeps_the_invariants() {
    run(Design::Dcb).await;
}
