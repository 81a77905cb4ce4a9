//! The conformance kit: one suite every backend runs unchanged.
//!
//! A backend's `tests/conformance.rs` supplies a factory that makes a fresh, empty store
//! (and a guard, such as a temporary directory, that lives until the test ends) and
//! calls [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! async fn make_store() -> (MyStore, tempfile::TempDir) {
//!     let dir = tempfile::tempdir().expect("temp dir");
//!     (MyStore::open(dir.path()).await.expect("open"), dir)
//! }
//! foldstore_core::conformance_tests!(make_store);
//! ```
//!
//! The macro expands to one `#[test]` per rule of `docs/semantics.md` (over a hundred),
//! each named after the rule and running [`cases`]`::<name>` through [`run_case`] on a
//! multi-threaded Tokio runtime with two workers, as
//! `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` would (so backends with
//! blocking threads work), under a [`CASE_TIMEOUT`] so a hang fails.
//!
//! It also expands `conformance_reference_model`: random operation sequences run
//! against the store and against [`model::Model`], comparing every answer
//! ([`model_test`]). Set `FOLDSTORE_PROPTEST_CASES` to change the number of sequences
//! (default 64), `FOLDSTORE_PROPTEST_SEED` (printed on failure) to replay a run, and
//! `FOLDSTORE_PROPTEST_STATS=1` to print how the operations ended.
//!
//! The cases include the concurrency cases (`concurrent_*`): 32 writers doing
//! read → decide → append on shared streams while subscribers and a tailing reader
//! must see every event once, in order; racing `NoStream` appends; concurrent identical
//! retries; refused appends beside accepted ones; bank transfers in two-stream
//! transactions that must keep the total and every revision; racing tracking
//! positions of one source.
//!
//! To run one case by hand, call it with a store: `cases::append_is_atomic(store).await`.
//! Every panic message names the rule (`§3.1 ...`) it checks.
//!
//! The calling crate needs nothing but `foldstore-core` with the `testkit` feature as a
//! dev-dependency: the macro reaches Tokio and proptest through this crate.

use std::future::Future;
use std::time::Duration;

use crate::{EventStore, SnapshotStore};

pub mod cases;
pub mod child;
pub mod hooked;
pub mod model;
pub mod model_test;
pub mod old_format;

#[doc(hidden)]
pub use proptest;
#[doc(hidden)]
pub use tokio;

/// What the kit needs of a store: an [`EventStore`] and [`SnapshotStore`] that can be
/// cloned into tasks.
pub trait TestStore: EventStore + SnapshotStore + Clone + Send + Sync + 'static {}

impl<T: EventStore + SnapshotStore + Clone + Send + Sync + 'static> TestStore for T {}

/// How long one case may run before it fails instead of hanging.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// Builds the runtime every case runs on: multi-threaded, two workers, timers on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the conformance kit could not build a Tokio runtime")
}

/// Runs one case: makes a fresh store with `factory`, runs `case` on it, then drops the
/// store and, after it, the guard. Used by [`conformance_tests!`](crate::conformance_tests).
pub fn run_case<F, Fut, S, G, C, CFut>(factory: F, case: C)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = (S, G)>,
    S: TestStore,
    G: Send + 'static,
    C: FnOnce(S) -> CFut,
    CFut: Future<Output = ()>,
{
    let rt = runtime();
    rt.block_on(async move {
        let (store, guard) = factory().await;
        tokio::time::timeout(CASE_TIMEOUT, case(store))
            .await
            .expect(
                "the case did not finish within CASE_TIMEOUT: a read, append or subscription hangs",
            );
        drop(guard);
    });
}

/// Expands to the whole conformance suite for a store factory.
///
/// `$factory` is an `async fn() -> (S, G)` making a fresh, empty store per test, where
/// `S: EventStore + Clone + Send + Sync + 'static` and `G: Send + 'static` is dropped at
/// the end of the test. See [`testkit`](crate::testkit).
///
/// A backend that needs an outside service adds `enabled_if = fn_path`, a `fn() -> bool`
/// called at the start of every test: when it returns `false` the test returns at once
/// (it should say on stderr why, once). The PostgreSQL crate uses it to skip the suite
/// when no database URL is set.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path) => {
        $crate::conformance_tests!($factory, enabled_if = $crate::testkit::always);
    };
    ($factory:path, enabled_if = $enabled:path) => {
        $crate::__foldstore_for_each_case!(__foldstore_case_tests!($factory, $enabled));

        /// The reference-model test: random operation sequences against the store and
        /// against `foldstore_core::testkit::model::Model`.
        #[test]
        fn conformance_reference_model() {
            if !$enabled() {
                return;
            }
            $crate::testkit::model_test::run($factory);
        }
    };
}

/// Always `true`: the default `enabled_if` of [`conformance_tests!`](crate::conformance_tests).
pub fn always() -> bool {
    true
}

/// Expands one test per case name. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __foldstore_case_tests {
    ($factory:path, $enabled:path ; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if !$enabled() {
                    return;
                }
                $crate::testkit::run_case($factory, $crate::testkit::cases::$name);
            }
        )*
    };
}
