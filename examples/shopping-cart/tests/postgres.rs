//! The carts' rules on the PostgreSQL store, in a schema of its own, dropped at the
//! end (`foldstore_postgres::testkit`). Skipped, with a SKIPPED line, when
//! `FOLDSTORE_TEST_POSTGRES_URL` is unset; failed instead with
//! `FOLDSTORE_REQUIRE_POSTGRES=1` (CI).

mod common;

use std::sync::Arc;

use foldstore_postgres::testkit;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_changes_its_cart_once_and_checkouts_add_up() {
    let test = "every_request_changes_its_cart_once_and_checkouts_add_up";
    let Some(url) = testkit::test_url(test, "cargo test -p shopping-cart") else {
        return;
    };
    let (store, _schema) = testkit::fresh_store(&url).await;
    common::assert_carts_hold("postgres", Arc::new(store)).await;
}
