//! Test support for code that runs on this backend (feature `testkit`): the test
//! database from the environment, and a schema of its own for each test, dropped
//! afterwards, so that runs never collide and leave nothing behind; and a
//! [`PrivateCluster`] for tests that crash and restart a PostgreSQL server.
//!
//! The conventions every foldstore test follows:
//!
//! - `FOLDSTORE_TEST_POSTGRES_URL` names the database. Without it a test prints a
//!   `SKIPPED` line saying how to run it, and passes.
//! - `FOLDSTORE_REQUIRE_POSTGRES=1` (CI) turns that skip into a failure.
//!
//! ```no_run
//! use foldstore_postgres::testkit;
//!
//! # async fn a_test() {
//! let Some(url) = testkit::test_url("a_test", "cargo test -p my-app") else {
//!     return; // skipped, and said so
//! };
//! let (store, _schema) = testkit::fresh_store(&url).await;
//! // ... use the store; the schema is dropped when `_schema` is, even on a panic.
//! # drop(store);
//! # }
//! ```

use std::io::Write;
use std::time::Duration;

use crate::{PostgresOptions, PostgresStore};

mod cluster;
pub use cluster::{BIN_VAR, PrivateCluster};

/// The environment variable holding the test database's URL.
pub const URL_VAR: &str = "FOLDSTORE_TEST_POSTGRES_URL";

/// The environment variable that, set to `1`, fails tests that lack [`URL_VAR`].
pub const REQUIRE_VAR: &str = "FOLDSTORE_REQUIRE_POSTGRES";

/// The test database's URL; or `None`, after a `SKIPPED` line on stderr naming `test`
/// and `how` to run it, when [`URL_VAR`] is unset. With [`REQUIRE_VAR`] set to `1` an
/// unset URL panics instead.
pub fn test_url(test: &str, how: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var(REQUIRE_VAR).as_deref() != Ok("1"),
                "{test}: {REQUIRE_VAR}=1 but {URL_VAR} is not set; set it to a PostgreSQL 13+ \
                 database, e.g. `{URL_VAR}=postgres://root@127.0.0.1:5432/test {how}`"
            );
            // Written to stderr directly: the harness hides `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {URL_VAR} is not set. Run it with \
                 `{URL_VAR}=postgres://root@127.0.0.1:5432/test {how}`"
            );
            None
        }
    }
}

/// A fresh schema name, `foldstore_test_<16 hex digits>`.
pub fn fresh_schema_name() -> String {
    format!(
        "foldstore_test_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}

/// A test's schema: dropped, with everything in it, when this is dropped (a panicking
/// test included).
#[derive(Debug)]
pub struct TestSchema {
    /// The database.
    pub url: String,
    /// The schema.
    pub schema: String,
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Drop may run inside a Tokio runtime, where blocking on another is not
        // allowed: use a thread with a runtime of its own.
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(drop_schema(&url, &schema))
        })
        .join();
        if let Ok(Err(e)) | Err(e) = done.map_err(|_| "the cleanup thread panicked".to_owned()) {
            let _ = writeln!(
                std::io::stderr(),
                "could not drop test schema {}: {e}",
                self.schema
            );
        }
    }
}

/// Drops `schema` and everything in it (waiting up to 30 s for locks).
pub async fn drop_schema(url: &str, schema: &str) -> Result<(), String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let result = client
        .batch_execute(&format!(
            "SET lock_timeout = '30s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        ))
        .await
        .map_err(|e| e.to_string());
    drop(client);
    let _ = driver.await;
    result
}

/// A store in a fresh schema of `url` (default options, a 5 s connect timeout), and
/// the guard that drops the schema. Panics, naming the URL and schema, when it cannot
/// connect.
pub async fn fresh_store(url: &str) -> (PostgresStore, TestSchema) {
    let schema = TestSchema {
        url: url.to_owned(),
        schema: fresh_schema_name(),
    };
    let options = PostgresOptions::new(url)
        .schema(&schema.schema)
        .connect_timeout(Duration::from_secs(5));
    let store = PostgresStore::connect(options)
        .await
        .unwrap_or_else(|e| panic!("connect to {url} (schema {}): {e}", schema.schema));
    (store, schema)
}
