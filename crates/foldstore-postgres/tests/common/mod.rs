//! Test support: the PostgreSQL URL, one fresh schema per test, and its cleanup.
//!
//! Every test runs in its own schema `foldstore_test_<random>`, dropped when the
//! test's [`SchemaGuard`] is dropped, so runs never collide (STYLE practice 13).

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::time::Duration;

use foldstore_postgres::{PostgresOptions, PostgresStore};

/// How to run these tests, printed when they are skipped.
const HOW: &str = "FOLDSTORE_TEST_POSTGRES_URL=postgres://root@127.0.0.1:5432/test cargo test -p foldstore-postgres";

/// The PostgreSQL URL for tests, or `None` (after saying so on stderr) when the test
/// should be skipped. With `FOLDSTORE_REQUIRE_POSTGRES=1` (CI) a missing URL fails the
/// test instead.
pub fn test_url(test: &str) -> Option<String> {
    match std::env::var("FOLDSTORE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("FOLDSTORE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "{test}: FOLDSTORE_REQUIRE_POSTGRES=1 but FOLDSTORE_TEST_POSTGRES_URL is not set; \
                     set it to a PostgreSQL 13+ database, e.g. `{HOW}`"
                );
            }
            // Written to stderr directly: the test harness hides `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: FOLDSTORE_TEST_POSTGRES_URL is not set. Run it with `{HOW}`"
            );
            None
        }
    }
}

/// A fresh schema name.
pub fn fresh_schema() -> String {
    format!("foldstore_test_{:016x}", rand::random::<u64>())
}

/// Drops its schema when dropped.
pub struct SchemaGuard {
    pub url: String,
    pub schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let url = self.url.clone();
        let schema = self.schema.clone();
        // Drop may run inside a Tokio runtime: use a thread with a runtime of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for schema cleanup");
            rt.block_on(drop_schema(&url, &schema))
        })
        .join();
        if let Ok(Err(e)) | Err(e) = done.map_err(|_| "cleanup thread panicked".to_owned()) {
            eprintln!("could not drop test schema {}: {e}", self.schema);
        }
    }
}

/// Drops `schema` (and everything in it).
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
