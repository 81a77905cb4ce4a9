//! The conformance kit (`foldstore_core::testkit`): every rule of `docs/semantics.md`,
//! the reference-model test and the concurrency cases, each run against a fresh
//! PostgreSQL schema that is dropped when the test ends.

mod common;

use foldstore_postgres::PostgresStore;

async fn make_store() -> (PostgresStore, common::SchemaGuard) {
    let Some(url) = common::test_url("conformance kit (tests/conformance.rs)") else {
        // The kit asks every factory call for a store; without PostgreSQL there is none
        // to give, so the whole binary stops here, successfully, after saying so.
        std::process::exit(0);
    };
    common::fresh_store(&url).await
}

foldstore_core::conformance_tests!(make_store);
