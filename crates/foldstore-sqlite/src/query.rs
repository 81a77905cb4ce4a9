//! Dynamic Consistency Boundary queries as SQL over the schema-v2 indexes.
//!
//! A [`Query`] becomes a compound `SELECT` of event positions, one member per query
//! item, each served by an index so that its cost follows the events it matches, never
//! the size of the log:
//!
//! - an item with tags walks `event_tags` for its first tag (rows of one tag are
//!   adjacent and in position order) and checks its other tags by primary-key lookups
//!   and its types by a row-id lookup of the event;
//! - an item with types only walks `events_by_type` (ordered by position within a type);
//! - an item with neither matches every event: the whole query is then a plain range
//!   read of `events`, which callers do themselves ([`positions`] returns `None`).
//!
//! The reader uses the member union to select events; the writer asks each member for
//! its first position only, to check an append condition.

use foldstore_core::dcb::{Query, QueryItem};
use rusqlite::types::Value;

/// Binds `value` and returns its placeholder.
fn bind(values: &mut Vec<Value>, value: Value) -> String {
    values.push(value);
    format!("?{}", values.len())
}

/// Whether the query matches every event (it has no item, or an item without tags and
/// types).
pub(crate) fn matches_everything(query: &Query) -> bool {
    query.is_all()
        || query
            .items
            .iter()
            .any(|i| i.tags.is_empty() && i.types.is_empty())
}

/// One item's positions after `after` (a bound placeholder), as a `SELECT position`.
fn member(item: &QueryItem, after: &str, values: &mut Vec<Value>) -> String {
    let types = |values: &mut Vec<Value>| -> String {
        let mut list = Vec::with_capacity(item.types.len());
        for t in &item.types {
            list.push(bind(values, Value::Text(t.clone())));
        }
        list.join(", ")
    };
    let mut tags: Vec<&String> = item.tags.iter().collect();
    tags.sort();
    tags.dedup();
    match tags.split_first() {
        None => {
            let list = types(values);
            format!(
                "SELECT position FROM events INDEXED BY events_by_type \
                 WHERE event_type IN ({list}) AND position > {after}"
            )
        }
        Some((first, rest)) => {
            let first = bind(values, Value::Text((*first).clone()));
            let mut q = format!(
                "SELECT t0.position AS position FROM event_tags AS t0 \
                 WHERE t0.tag = {first} AND t0.position > {after}"
            );
            for tag in rest {
                let p = bind(values, Value::Text((*tag).clone()));
                q.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM event_tags AS tn \
                     WHERE tn.tag = {p} AND tn.position = t0.position)"
                ));
            }
            if !item.types.is_empty() {
                let list = types(values);
                q.push_str(&format!(
                    " AND (SELECT et.event_type FROM events AS et \
                     WHERE et.position = t0.position) IN ({list})"
                ));
            }
            q
        }
    }
}

/// The positions of the events matching `query` strictly after `after`, as a compound
/// `SELECT` of one column, with its parameters pushed onto `values`. With `first_only`
/// each member yields at most its first position (for `min()` over the union). `None`
/// when the query matches every event.
pub(crate) fn positions(
    query: &Query,
    after: i64,
    first_only: bool,
    values: &mut Vec<Value>,
) -> Option<String> {
    if matches_everything(query) {
        return None;
    }
    let after = bind(values, Value::Integer(after));
    let mut members = Vec::with_capacity(query.items.len());
    for item in &query.items {
        if !first_only {
            members.push(member(item, &after, values));
            continue;
        }
        // For a first position, an item with types only probes each type on its own:
        // one type's index entries are in position order, so each probe stops at its
        // first entry (several types in one `IN` would have to be sorted first).
        let probes: Vec<QueryItem> = if item.tags.is_empty() {
            item.types
                .iter()
                .map(|t| QueryItem::new().types([t.clone()]))
                .collect()
        } else {
            vec![item.clone()]
        };
        for probe in &probes {
            let m = member(probe, &after, values);
            members.push(format!(
                "SELECT position FROM ({m} ORDER BY position LIMIT 1)"
            ));
        }
    }
    Some(members.join(if first_only { " UNION ALL " } else { " UNION " }))
}

/// The SQL answering "the first position after `after` of an event matching `query`"
/// (one row, one possibly NULL column), with its parameters.
pub(crate) fn first_match(query: &Query, after: i64) -> (String, Vec<Value>) {
    let mut values = Vec::new();
    match positions(query, after, true, &mut values) {
        Some(union) => (format!("SELECT min(position) FROM ({union})"), values),
        None => {
            values.push(Value::Integer(after));
            (
                "SELECT min(position) FROM events WHERE position > ?1".to_owned(),
                values,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteOptions;

    /// The query plan of `sql` (one line per step), on a fresh schema.
    fn plan(sql: &str, values: &[Value]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::schema::open_writer(&dir.path().join("p.db"), &SqliteOptions::default())
            .unwrap();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        stmt.query_map(rusqlite::params_from_iter(values.iter()), |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// A tagged or typed query, read or checked, only searches indexes: no step scans
    /// the events table (a scan would make its cost follow the log, not the matches).
    #[test]
    fn tagged_and_typed_queries_never_scan_the_log() {
        let q = Query::from_items([
            QueryItem::new()
                .tags(["course:c1", "student:7"])
                .types(["Enrolled"]),
            QueryItem::new().tags(["course:c1"]),
            QueryItem::new().types(["Opened", "Closed"]),
        ]);
        let mut values = Vec::new();
        let union = positions(&q, 5, false, &mut values).unwrap();
        let read = format!(
            "SELECT e.position FROM events AS e WHERE e.position IN ({union}) \
             ORDER BY e.position LIMIT 10"
        );
        let (check, check_values) = first_match(&q, 5);
        for (sql, values) in [(read, values), (check, check_values)] {
            let steps = plan(&sql, &values);
            assert!(
                steps.iter().all(|s| !s.starts_with("SCAN")
                    || s.starts_with("SCAN (subquery")
                    || s.contains("USING")),
                "a step scans a table: {steps:#?}"
            );
            assert!(
                steps
                    .iter()
                    .any(|s| s.contains("SEARCH t0 USING PRIMARY KEY (tag=? AND position>?)")),
                "the tag index is used: {steps:#?}"
            );
            assert!(
                steps.iter().any(|s| s.contains("events_by_type")),
                "the type index is used: {steps:#?}"
            );
            if sql.starts_with("SELECT min(") {
                // The condition check stops at each probe's first entry: nothing sorted.
                assert!(
                    !steps.iter().any(|s| s.contains("FOR ORDER BY")),
                    "a condition probe sorts: {steps:#?}"
                );
            }
        }
    }

    #[test]
    fn an_item_without_tags_and_types_matches_everything() {
        assert!(matches_everything(&Query::all()));
        let q = Query::from_items([QueryItem::new().tags(["a"]), QueryItem::new()]);
        assert!(matches_everything(&q));
        let mut values = Vec::new();
        assert!(positions(&q, 0, false, &mut values).is_none());
    }

    #[test]
    fn members_are_joined_and_bound_in_order() {
        let q = Query::from_items([
            QueryItem::new().tags(["b", "a", "a"]).types(["X"]),
            QueryItem::new().types(["Y", "Z"]),
        ]);
        let mut values = Vec::new();
        let sql = positions(&q, 7, false, &mut values).unwrap();
        assert_eq!(sql.matches(" UNION ").count(), 1);
        // after, first tag (sorted), second tag, type X, types Y and Z.
        assert_eq!(values.len(), 6);
        assert_eq!(values[0], Value::Integer(7));
        assert_eq!(values[1], Value::Text("a".into()));
        assert_eq!(values[2], Value::Text("b".into()));
        assert!(sql.contains("INDEXED BY events_by_type"));
    }
}
