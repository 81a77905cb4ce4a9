//! The conformance kit (`foldstore_core::testkit`): every rule of `docs/semantics.md`,
//! the reference-model test and the concurrency cases, each run against a fresh
//! PostgreSQL schema that is dropped when the test ends.

mod common;

use std::sync::OnceLock;

use foldstore_postgres::PostgresStore;

/// The test URL, looked up (and a missing one reported) once for the whole suite.
fn url() -> Option<&'static str> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| common::test_url("the conformance kit (tests/conformance.rs)"))
        .as_deref()
}

/// Whether PostgreSQL is configured: without it every case returns at once.
fn postgres_configured() -> bool {
    url().is_some()
}

async fn make_store() -> (PostgresStore, common::SchemaGuard) {
    let url = url().expect("make_store runs only when postgres_configured()");
    common::fresh_store(url).await
}

foldstore_core::conformance_tests!(make_store, enabled_if = postgres_configured);
