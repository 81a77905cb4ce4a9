//! The bank's invariants on the SQLite store (a file in a temporary directory), for
//! both designs.

mod common;

use std::sync::Arc;

use bank::Design;
use foldstore_sqlite::{SqliteOptions, SqliteStore};

async fn run(design: Design) {
    let dir = tempfile::tempdir().expect("temporary directory");
    // Default options on purpose: 16 saga runners share the 4 readers. A runner's
    // subscription once kept a read queued for a reader while the runner dispatched
    // commands that read too, and the runners hung waiting on each other; subscriptions
    // now finish every read on a task of their own (foldstore_core::subscription).
    let store = SqliteStore::open(dir.path().join("bank.db"), SqliteOptions::default())
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
