//! The shop's rules on the PostgreSQL store, in a schema of its own, dropped at
//! the end (`foldstore_postgres::testkit`). Skipped, with a SKIPPED line, when
//! `FOLDSTORE_TEST_POSTGRES_URL` is unset; failed instead with
//! `FOLDSTORE_REQUIRE_POSTGRES=1` (CI).

mod common;

use std::sync::Arc;

use foldstore_postgres::testkit;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_shop_never_overdraws_a_card() {
    let Some(url) = testkit::test_url(
        "a_busy_shop_never_overdraws_a_card",
        "cargo test -p gift-card",
    ) else {
        return;
    };
    let (store, _schema) = testkit::fresh_store(&url).await;
    let report = common::run("postgres", Arc::new(store)).await;
    common::assert_shop_holds("postgres", &report);
}
