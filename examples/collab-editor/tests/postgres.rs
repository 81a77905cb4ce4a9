//! Concurrent edits on the PostgreSQL store, in a schema of its own, dropped at the
//! end (`foldstore_postgres::testkit`). Skipped, with a SKIPPED line, when
//! `FOLDSTORE_TEST_POSTGRES_URL` is unset; failed instead with
//! `FOLDSTORE_REQUIRE_POSTGRES=1` (CI).

mod common;

use std::sync::Arc;

use foldstore_postgres::testkit;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edits_from_stale_versions_land_where_their_writers_meant() {
    let test = "edits_from_stale_versions_land_where_their_writers_meant";
    let Some(url) = testkit::test_url(test, "cargo test -p collab-editor") else {
        return;
    };
    let (store, _schema) = testkit::fresh_store(&url).await;
    common::assert_edits_land("postgres", Arc::new(store)).await;
}
