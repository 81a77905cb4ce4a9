//! The conformance kit (`foldstore_core::testkit`): every rule of `docs/semantics.md`,
//! the reference-model test and the concurrency cases, run against a fresh SQLite file
//! per test.

use foldstore_sqlite::{SqliteOptions, SqliteStore};

async fn make_store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("foldstore.db"), SqliteOptions::default())
        .await
        .expect("open a fresh SQLite store");
    (store, dir)
}

foldstore_core::conformance_tests!(make_store);
