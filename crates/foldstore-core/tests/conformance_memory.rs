//! The conformance kit run against [`InMemoryStore`]: the reference backend must keep
//! the whole contract of `docs/semantics.md`.

use foldstore_core::InMemoryStore;

/// A fresh, empty in-memory store per test; nothing to clean up.
async fn make_store() -> (InMemoryStore, ()) {
    (InMemoryStore::new(), ())
}

foldstore_core::conformance_tests!(make_store);
