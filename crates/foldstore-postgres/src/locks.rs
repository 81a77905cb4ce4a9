//! The advisory-lock keys that make conditional appends and tracking safe under READ
//! COMMITTED.
//!
//! The scheme is argued in `sql/0002_dcb_and_snapshots.sql` (above `lock_keys`) and in
//! `docs/semantics.md` §10: every append takes shared locks on the keys its events
//! could match (`tag:<t>`, `type:<T>`, `all`); a conditional append takes exclusive
//! locks on keys covering its query; a transaction with tracking takes its source's key
//! (`tracking:<source>`) exclusively (§13). A transaction takes all its keys at once,
//! sorted, each in its strongest mode, before it locks any stream row, so these locks
//! cannot deadlock.

use std::collections::BTreeMap;

use foldstore_core::dcb::Query;
use foldstore_core::{NewEvent, group_hash};

/// A transaction's advisory-lock keys: key → exclusive.
#[derive(Debug, Default)]
pub(crate) struct LockSet {
    keys: BTreeMap<i64, bool>,
}

/// The key of `kind:value` in `schema` (63 bits of FNV-1a, so schemas sharing a
/// database do not make each other wait).
fn key(schema: &str, kind: &str, value: &str) -> i64 {
    let h = group_hash(&format!("foldstore-dcb\u{0}{schema}\u{0}{kind}:{value}"));
    i64::try_from(h).unwrap_or(i64::MAX)
}

impl LockSet {
    fn add(&mut self, key: i64, exclusive: bool) {
        let entry = self.keys.entry(key).or_insert(exclusive);
        *entry |= exclusive;
    }

    /// Shared locks for a writer of `events`.
    pub(crate) fn writer(&mut self, schema: &str, events: &[NewEvent]) {
        self.add(key(schema, "all", ""), false);
        for e in events {
            self.add(key(schema, "type", &e.event_type), false);
            for t in &e.tags {
                self.add(key(schema, "tag", t), false);
            }
        }
    }

    /// Exclusive locks covering `query`, for a conditional append.
    pub(crate) fn condition(&mut self, schema: &str, query: &Query) {
        if matches_everything(query) {
            self.add(key(schema, "all", ""), true);
            return;
        }
        for item in &query.items {
            // Any one of an item's tags covers it: a matching event carries them all.
            if let Some(tag) = item.tags.iter().min() {
                self.add(key(schema, "tag", tag), true);
            } else {
                for t in &item.types {
                    self.add(key(schema, "type", t), true);
                }
            }
        }
    }

    /// The exclusive lock of a tracking source, for a transaction that carries its
    /// tracking: transactions tracking one source take turns, so each reads the
    /// position the one before it stored.
    pub(crate) fn tracking(&mut self, schema: &str, source: &str) {
        self.add(key(schema, "tracking", source), true);
    }

    /// How many keys the set holds.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys in ascending order, and whether each is taken exclusively.
    pub(crate) fn arrays(&self) -> (Vec<i64>, Vec<bool>) {
        self.keys.iter().map(|(k, x)| (*k, *x)).unzip()
    }
}

/// Whether `query` matches every event: no items, or an item with neither types nor
/// tags.
pub(crate) fn matches_everything(query: &Query) -> bool {
    query.is_all()
        || query
            .items
            .iter()
            .any(|i| i.types.is_empty() && i.tags.is_empty())
}

#[cfg(test)]
mod tests {
    use foldstore_core::dcb::QueryItem;

    use super::*;

    #[test]
    fn a_conditional_writer_takes_its_query_keys_exclusively_and_sorted() {
        let mut set = LockSet::default();
        let events = vec![NewEvent::raw("Claimed", "{}", "application/json").with_tags(["b", "a"])];
        set.writer("s", &events);
        assert_eq!(set.len(), 4, "all, type and two tags");
        set.condition(
            "s",
            &Query::from_items([
                QueryItem::new().tags(["b", "a"]),
                QueryItem::new().types(["X"]),
            ]),
        );
        let (keys, exclusive) = set.arrays();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
        assert_eq!(keys.len(), 5, "the type X key is new");
        let tag_a = keys
            .iter()
            .position(|k| *k == key("s", "tag", "a"))
            .unwrap();
        let tag_b = keys
            .iter()
            .position(|k| *k == key("s", "tag", "b"))
            .unwrap();
        assert!(exclusive[tag_a], "the item's smallest tag is exclusive");
        assert!(!exclusive[tag_b], "one tag covers the item");
        let all = keys.iter().position(|k| *k == key("s", "all", "")).unwrap();
        assert!(!exclusive[all]);
        set.condition("s", &Query::all());
        let (keys, exclusive) = set.arrays();
        let all = keys.iter().position(|k| *k == key("s", "all", "")).unwrap();
        assert!(exclusive[all], "Query::all locks everything");
        assert_ne!(key("s", "tag", "a"), key("t", "tag", "a"), "per schema");
        set.tracking("s", "a");
        let (keys, exclusive) = set.arrays();
        let tracked = keys
            .iter()
            .position(|k| *k == key("s", "tracking", "a"))
            .unwrap();
        assert!(exclusive[tracked], "a tracking source is taken exclusively");
        assert_ne!(key("s", "tracking", "a"), key("s", "tag", "a"), "per kind");
    }
}
