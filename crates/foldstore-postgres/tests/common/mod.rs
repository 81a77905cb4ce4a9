//! Test support: the PostgreSQL URL, one fresh schema per test, and its cleanup.
//!
//! Every test runs in its own schema `foldstore_test_<random>`, dropped when the
//! test's [`SchemaGuard`] is dropped, so runs never collide (STYLE practice 13).

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use foldstore_postgres::{PostgresOptions, PostgresStore};

// Each test binary uses some of these.
#[allow(unused_imports)]
pub use foldstore_postgres::testkit::{
    TestSchema as SchemaGuard, drop_schema, fresh_schema_name as fresh_schema,
};

/// How to run these tests, printed when they are skipped.
const HOW: &str = "cargo test -p foldstore-postgres";

/// The PostgreSQL URL for tests, or `None` (after saying so on stderr) when the test
/// should be skipped. With `FOLDSTORE_REQUIRE_POSTGRES=1` (CI) a missing URL fails the
/// test instead.
pub fn test_url(test: &str) -> Option<String> {
    foldstore_postgres::testkit::test_url(test, HOW)
}

/// Test options: a small pool, a fresh schema.
pub fn options(url: &str, schema: &str) -> PostgresOptions {
    let mut options = PostgresOptions::new(url)
        .schema(schema)
        .pool_size(6)
        .connect_timeout(Duration::from_secs(5));
    options.read_your_writes_timeout = Duration::from_secs(30);
    options
}

/// A fresh store in a fresh schema, and the guard that drops the schema.
pub async fn fresh_store(url: &str) -> (PostgresStore, SchemaGuard) {
    fresh_store_with(url, |o| o).await
}

/// Like [`fresh_store`], with changed options.
pub async fn fresh_store_with(
    url: &str,
    change: impl FnOnce(PostgresOptions) -> PostgresOptions,
) -> (PostgresStore, SchemaGuard) {
    let schema = fresh_schema();
    let guard = SchemaGuard {
        url: url.to_owned(),
        schema: schema.clone(),
    };
    let store = PostgresStore::connect(change(options(url, &schema)))
        .await
        .unwrap_or_else(|e| panic!("connect to {url} (schema {schema}): {e}"));
    (store, guard)
}
