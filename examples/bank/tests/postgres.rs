//! The bank's invariants on the PostgreSQL store (a fresh schema per test), for both
//! designs. Skipped, with a SKIPPED line, when `FOLDSTORE_TEST_POSTGRES_URL` is unset.

mod common;

use std::sync::Arc;

use bank::Design;

async fn run(test: &str, design: Design) {
    let Some(url) = common::postgres_url(test) else {
        return;
    };
    let (store, _schema) = common::fresh_postgres(&url).await;
    common::assert_bank_holds("postgres", Arc::new(store), design).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aggregates_with_a_transfer_saga_keep_the_invariants() {
    run(
        "aggregates_with_a_transfer_saga_keep_the_invariants",
        Design::Aggregates,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dcb_keeps_the_invariants() {
    run("dcb_keeps_the_invariants", Design::Dcb).await;
}
