//! The stream-name cache: event rows carry their stream's id, and readers name the
//! stream from here (a name never changes, so nothing is ever invalidated).
//!
//! A miss costs a query, so a miss also reads ahead: the names of the
//! [`NAME_READ_AHEAD`] stream ids after the highest id missed. Stream ids follow
//! creation order and a stream is created by its first append, so a reader going
//! forwards through the log meets new streams roughly in id order: one query then
//! names the new streams of many pages to come. Without it, a log whose pages each
//! bring one new stream (appends of many events each) cost one extra round trip per
//! page: `bench read-all` on PostgreSQL spent a tenth of its time there.

use std::collections::HashMap;
use std::sync::RwLock;

use foldstore_core::{BackendError, BackendErrorKind, StreamName};

/// The most stream names the cache holds; it starts over when full.
const NAME_CACHE_LIMIT: usize = 200_000;

/// How many stream ids past the highest one missed a miss also reads.
pub(crate) const NAME_READ_AHEAD: i64 = 1024;

/// Stream names by stream id, shared by a store's readers.
pub(crate) struct NameCache {
    names: RwLock<HashMap<i64, StreamName>>,
    limit: usize,
}

impl Default for NameCache {
    fn default() -> Self {
        Self::with_limit(NAME_CACHE_LIMIT)
    }
}

/// What the cache knew of a page's stream ids.
pub(crate) struct Lookup {
    /// Per id, in order: its name, or `None` when the cache lacks it.
    names: Vec<Option<StreamName>>,
    /// The ids lacking a name, sorted, each once.
    pub(crate) missing: Vec<i64>,
}

impl NameCache {
    fn with_limit(limit: usize) -> Self {
        Self {
            names: RwLock::default(),
            limit,
        }
    }

    /// The cached names of `ids`, and the ids it lacks.
    pub(crate) fn lookup(&self, ids: &[i64]) -> Lookup {
        let cache = self.names.read().unwrap_or_else(|p| p.into_inner());
        let names: Vec<Option<StreamName>> = ids.iter().map(|id| cache.get(id).cloned()).collect();
        drop(cache);
        let mut missing: Vec<i64> = ids
            .iter()
            .zip(&names)
            .filter(|(_, name)| name.is_none())
            .map(|(&id, _)| id)
            .collect();
        missing.sort_unstable();
        missing.dedup();
        Lookup { names, missing }
    }

    /// Completes `lookup` with `found` (names read for its missing ids, and more),
    /// keeps `found` for later reads, and returns one name per id looked up. An id
    /// still without a name is an error: an event row names a stream that has no row.
    pub(crate) fn complete(
        &self,
        lookup: Lookup,
        ids: &[i64],
        found: HashMap<i64, StreamName>,
    ) -> Result<Vec<StreamName>, BackendError> {
        let names = lookup
            .names
            .into_iter()
            .zip(ids)
            .map(|(name, id)| {
                name.or_else(|| found.get(id).cloned()).ok_or_else(|| {
                    BackendError::new(
                        BackendErrorKind::Incompatible,
                        format!("an event names stream id {id}, which has no row in streams"),
                    )
                })
            })
            .collect();
        if !found.is_empty() {
            let mut cache = self.names.write().unwrap_or_else(|p| p.into_inner());
            if cache.len() + found.len() > self.limit {
                cache.clear();
            }
            cache.extend(found);
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(id: i64) -> StreamName {
        StreamName::new(format!("s-{id}")).unwrap()
    }

    fn found(ids: impl IntoIterator<Item = i64>) -> HashMap<i64, StreamName> {
        ids.into_iter().map(|id| (id, name(id))).collect()
    }

    #[test]
    fn misses_are_listed_once_in_order_and_then_served_from_the_cache() {
        let cache = NameCache::default();
        let ids = [7, 3, 7, 5];
        let lookup = cache.lookup(&ids);
        assert_eq!(lookup.missing, vec![3, 5, 7]);
        let names = cache.complete(lookup, &ids, found(3..=8)).unwrap();
        assert_eq!(names, ids.map(name).to_vec());
        // Read ahead: 8 was not asked for, and is now known too.
        let lookup = cache.lookup(&[8, 3]);
        assert!(lookup.missing.is_empty());
        let names = cache.complete(lookup, &[8, 3], HashMap::new()).unwrap();
        assert_eq!(names, vec![name(8), name(3)]);
    }

    #[test]
    fn a_full_cache_starts_over_without_losing_the_page_being_named() {
        let cache = NameCache::with_limit(4);
        let first = [1, 2, 3];
        let lookup = cache.lookup(&first);
        cache.complete(lookup, &first, found(first)).unwrap();
        // 1 and 2 are cached; 9 and 10 are not, and adding them overflows the cache.
        let page = [1, 9, 2, 10];
        let lookup = cache.lookup(&page);
        assert_eq!(lookup.missing, vec![9, 10]);
        let names = cache.complete(lookup, &page, found([9, 10])).unwrap();
        assert_eq!(names, page.map(name).to_vec());
        assert_eq!(cache.lookup(&[9, 10]).missing, Vec::<i64>::new());
        assert_eq!(cache.lookup(&[1]).missing, vec![1]);
    }

    #[test]
    fn an_id_without_a_stream_row_is_an_error_that_says_so() {
        let cache = NameCache::default();
        let lookup = cache.lookup(&[4]);
        let err = cache.complete(lookup, &[4], HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("stream id 4"), "{err}");
    }
}
