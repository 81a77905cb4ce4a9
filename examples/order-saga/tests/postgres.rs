//! The sale's rules on the PostgreSQL store, in a schema of its own, dropped at
//! the end (`foldstore_postgres::testkit`). Skipped, with a SKIPPED line, when
//! `FOLDSTORE_TEST_POSTGRES_URL` is unset; failed instead with
//! `FOLDSTORE_REQUIRE_POSTGRES=1` (CI).

mod common;

use std::sync::Arc;

use foldstore_postgres::testkit;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_order_ends_once_and_no_stock_is_lost() {
    let Some(url) = testkit::test_url(
        "every_order_ends_once_and_no_stock_is_lost",
        "cargo test -p order-saga",
    ) else {
        return;
    };
    let (store, _schema) = testkit::fresh_store(&url).await;
    let report = common::run("postgres", Arc::new(store)).await;
    common::assert_sale_holds("postgres", &report);
}
