//! An event store that lets a test slip writes in just before the next append: the
//! interleaving "someone wrote between my load and my append", forced, not timed.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use foldstore_core::testkit::hooked::{AppendHook, HookedStore};
use foldstore_core::*;

/// The in-memory store with [`Sneaks`] before every append.
pub(crate) type Interleave = HookedStore<InMemoryStore, Sneaks>;

/// Writes queued by the test, made (with `Any`) at the start of the next append calls,
/// one per call; and how many appends were called.
#[derive(Clone, Default)]
pub(crate) struct Sneaks {
    pending: Arc<Mutex<Vec<(StreamName, NewEvent)>>>,
    pub(crate) appends: Arc<Mutex<u32>>,
}

impl Sneaks {
    /// Before each of the next appends, write `event` to `stream` first.
    pub(crate) fn sneak_in(&self, stream: &StreamName, event: NewEvent) {
        self.pending.lock().unwrap().push((stream.clone(), event));
    }
}

#[async_trait]
impl AppendHook<InMemoryStore> for Sneaks {
    async fn before_append(&self, inner: &InMemoryStore) {
        *self.appends.lock().unwrap() += 1;
        let next = {
            let mut p = self.pending.lock().unwrap();
            (!p.is_empty()).then(|| p.remove(0))
        };
        if let Some((stream, event)) = next {
            inner
                .append(&stream, ExpectedRevision::Any, vec![event])
                .await
                .unwrap();
        }
    }
}
