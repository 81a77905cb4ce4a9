//! §10 Dynamic Consistency Boundary: tags, `read_query` and `append_if`.

use std::collections::HashSet;
use std::sync::Arc;

use uuid::Uuid;

use super::{
    TestStore, all, append, event, ids, ids_of_new, name, next, read, subscribe_all,
    subscribe_stream,
};
use crate::dcb::{AppendCondition, InvalidTag, MAX_TAG_BYTES, Query, QueryItem, ReadQueryOptions};
use crate::{
    AppendError, AppendResult, CurrentRevision, EventFilter, ExpectedRevision, InvalidEvent,
    NewEvent, Position, ReadAllOptions, ReadError, RecordedEvent, StreamName, SubscribeFrom,
    SubscribeStreamFrom,
};

fn tagged(event_type: &str, n: u64, tags: &[&str]) -> NewEvent {
    event(event_type, n).with_tags(tags.iter().copied())
}

fn tags_of(events: &[RecordedEvent]) -> Vec<Vec<String>> {
    events.iter().map(|e| e.tags.clone()).collect()
}

fn item(types: &[&str], tags: &[&str]) -> QueryItem {
    QueryItem::new()
        .types(types.iter().copied())
        .tags(tags.iter().copied())
}

fn query(items: impl IntoIterator<Item = QueryItem>) -> Query {
    Query::from_items(items)
}

fn condition(q: &Query, after: Option<Position>) -> AppendCondition {
    AppendCondition::new(q.clone(), after)
}

async fn read_query<S: TestStore>(
    store: &S,
    q: &Query,
    options: ReadQueryOptions,
) -> Vec<RecordedEvent> {
    match store.read_query(q, options.clone()).await {
        Ok(r) => r,
        Err(e) => panic!("read_query({q:?}, {options:?}) should succeed, got: {e:?}"),
    }
}

async fn matching<S: TestStore>(store: &S, q: &Query) -> Vec<RecordedEvent> {
    read_query(store, q, ReadQueryOptions::new()).await
}

async fn append_if<S: TestStore>(
    store: &S,
    stream: &StreamName,
    expected: ExpectedRevision,
    events: Vec<NewEvent>,
    condition: AppendCondition,
) -> AppendResult {
    match store
        .append_if(stream, expected, events, condition.clone())
        .await
    {
        Ok(r) => r,
        Err(e) => panic!("append_if to {stream} with {condition:?} should succeed, got: {e:?}"),
    }
}

fn assert_condition_failed(
    result: Result<AppendResult, AppendError>,
    position: Position,
    rule: &str,
) {
    match result {
        Err(AppendError::ConditionFailed { position: p }) => assert_eq!(
            p, position,
            "{rule}: ConditionFailed names the first matching event after `after`"
        ),
        other => panic!("{rule}: expected ConditionFailed at {position}, got {other:?}"),
    }
}

/// A small log for query cases: four streams, types A/B/C, tags over `x:1`, `y:1`,
/// `y:2`. Returns it in `$all` order.
async fn query_log<S: TestStore>(store: &S) -> Vec<RecordedEvent> {
    append(
        store,
        &name("q-1"),
        ExpectedRevision::NoStream,
        vec![
            tagged("A", 0, &["x:1"]),
            tagged("B", 1, &["x:1", "y:1"]),
            tagged("C", 2, &[]),
        ],
    )
    .await;
    append(
        store,
        &name("q-2"),
        ExpectedRevision::NoStream,
        vec![tagged("A", 3, &["y:1", "x:1"]), tagged("B", 4, &["y:2"])],
    )
    .await;
    append(
        store,
        &name("other-1"),
        ExpectedRevision::NoStream,
        vec![tagged("C", 5, &["x:1"]), tagged("A", 6, &["y:2"])],
    )
    .await;
    all(store).await
}

/// The events of `log` at `indexes`, by id.
fn pick(log: &[RecordedEvent], indexes: &[usize]) -> Vec<Uuid> {
    indexes.iter().map(|&i| log[i].id).collect()
}

/// §10.1: an event's tags are stored as given (order and duplicates too) and come back
/// on stream reads, `$all` and category reads and `read_query`; untagged events have
/// none. A query finds an event with a repeated tag once.
pub async fn dcb_tags_round_trip_on_reads<S: TestStore>(store: S) {
    let rule = "§10.1 tags round-trip on every read";
    let s = name("tagged-1");
    let written = vec![
        tagged("A", 0, &["student:7", "course:c1"]),
        tagged("B", 1, &[]),
        tagged("C", 2, &["z", "a:b:c", "ünïcode tag", "z"]),
    ];
    let expected: Vec<Vec<String>> = written.iter().map(|e| e.tags.clone()).collect();
    append(&store, &s, ExpectedRevision::NoStream, written).await;
    assert_eq!(
        tags_of(&read(&store, &s).await),
        expected,
        "{rule}: read_stream"
    );
    assert_eq!(tags_of(&all(&store).await), expected, "{rule}: read_all");
    let cat = store
        .read_category("tagged", ReadAllOptions::forwards())
        .await
        .expect("read_category");
    assert_eq!(tags_of(&cat), expected, "{rule}: read_category");
    assert_eq!(
        tags_of(&matching(&store, &Query::all()).await),
        expected,
        "{rule}: read_query"
    );
    let mut backwards = tags_of(
        &store
            .read_all(ReadAllOptions::backwards())
            .await
            .expect("read_all backwards"),
    );
    backwards.reverse();
    assert_eq!(backwards, expected, "{rule}: read_all backwards");
    let z = matching(&store, &query([item(&[], &["z"])])).await;
    assert_eq!(z.len(), 1, "{rule}: a repeated tag matches once");
}

/// §10.1: subscriptions deliver an event's tags, in catch-up and live.
pub async fn dcb_tags_round_trip_on_subscriptions<S: TestStore>(store: S) {
    let rule = "§10.1 tags round-trip on subscriptions";
    let s = name("subtag-1");
    append(
        &store,
        &s,
        ExpectedRevision::NoStream,
        vec![tagged("A", 0, &["t:1", "t:2"])],
    )
    .await;
    let mut to_all = subscribe_all(&store, SubscribeFrom::Start, EventFilter::all()).await;
    let mut to_stream = subscribe_stream(&store, &s, SubscribeStreamFrom::Start).await;
    assert_eq!(next(&mut to_all, rule).await.tags, ["t:1", "t:2"], "{rule}");
    assert_eq!(
        next(&mut to_stream, rule).await.tags,
        ["t:1", "t:2"],
        "{rule}"
    );
    append(
        &store,
        &s,
        ExpectedRevision::Exact(0),
        vec![tagged("B", 1, &["live"])],
    )
    .await;
    assert_eq!(next(&mut to_all, rule).await.tags, ["live"], "{rule}: live");
    assert_eq!(
        next(&mut to_stream, rule).await.tags,
        ["live"],
        "{rule}: live"
    );
}

/// §10.2: an item's types are OR-combined.
pub async fn dcb_query_item_types_are_alternatives<S: TestStore>(store: S) {
    let rule = "§10.2 an item matches any of its types";
    let log = query_log(&store).await;
    let got = matching(&store, &query([item(&["A", "C"], &[])])).await;
    assert_eq!(ids(&got), pick(&log, &[0, 2, 3, 5, 6]), "{rule}");
    let got = matching(&store, &query([item(&["Nope"], &[])])).await;
    assert!(got.is_empty(), "{rule}: an unknown type matches nothing");
}

/// §10.2: an item's tags are AND-combined; an event with more tags still matches.
pub async fn dcb_query_item_tags_must_all_be_present<S: TestStore>(store: S) {
    let rule = "§10.2 an item matches events carrying all of its tags";
    let log = query_log(&store).await;
    let got = matching(&store, &query([item(&[], &["x:1", "y:1"])])).await;
    assert_eq!(ids(&got), pick(&log, &[1, 3]), "{rule}");
    let got = matching(&store, &query([item(&[], &["y:1", "x:1"])])).await;
    assert_eq!(
        ids(&got),
        pick(&log, &[1, 3]),
        "{rule}: order does not matter"
    );
    let got = matching(&store, &query([item(&[], &["x:1", "y:2"])])).await;
    assert!(got.is_empty(), "{rule}: no event has both");
    let got = matching(&store, &query([item(&["A"], &["x:1"])])).await;
    assert_eq!(ids(&got), pick(&log, &[0, 3]), "{rule}: types AND tags");
}

/// §10.2: an item without types matches events of any type with its tags.
pub async fn dcb_query_item_without_types_matches_any_type<S: TestStore>(store: S) {
    let rule = "§10.2 an item without types matches any type";
    let log = query_log(&store).await;
    let got = matching(&store, &query([item(&[], &["x:1"])])).await;
    assert_eq!(ids(&got), pick(&log, &[0, 1, 3, 5]), "{rule}");
}

/// §10.2: items are OR-combined; an event matching several items comes once; results
/// are in global order.
pub async fn dcb_query_items_are_alternatives<S: TestStore>(store: S) {
    let rule = "§10.2 a query matches any of its items";
    let log = query_log(&store).await;
    let q = query([
        item(&["B"], &[]),
        item(&[], &["y:2"]),
        item(&["A"], &["x:1"]),
    ]);
    let got = matching(&store, &q).await;
    assert_eq!(ids(&got), pick(&log, &[0, 1, 3, 4, 6]), "{rule}");
    assert!(
        got.windows(2).all(|w| w[0].position < w[1].position),
        "{rule}: in global order"
    );
}

/// §10.2: `Query::all()`, and an item with neither types nor tags, match every event,
/// as `read_all` returns them.
pub async fn dcb_query_all_matches_every_event<S: TestStore>(store: S) {
    let rule = "§10.2 Query::all matches every event";
    assert!(
        matching(&store, &Query::all()).await.is_empty(),
        "{rule}: an empty store"
    );
    let log = query_log(&store).await;
    assert_eq!(
        ids(&matching(&store, &Query::all()).await),
        ids(&log),
        "{rule}"
    );
    let q = query([item(&["B"], &[]), QueryItem::new()]);
    assert_eq!(
        ids(&matching(&store, &q).await),
        ids(&log),
        "{rule}: an empty item"
    );
}

/// §10.3: `read_query` includes events of soft-deleted, truncated and tombstoned
/// streams, like `$all`.
pub async fn dcb_read_query_includes_deleted_and_tombstoned_streams<S: TestStore>(store: S) {
    let rule = "§10.3 read_query reads the log, like $all";
    let (a, b) = (name("gone-1"), name("gone-2"));
    append(
        &store,
        &a,
        ExpectedRevision::NoStream,
        vec![tagged("A", 0, &["k"])],
    )
    .await;
    append(
        &store,
        &b,
        ExpectedRevision::NoStream,
        vec![tagged("A", 1, &["k"])],
    )
    .await;
    store
        .delete_stream(&a, ExpectedRevision::Any)
        .await
        .expect("delete");
    store
        .tombstone_stream(&b, ExpectedRevision::Any)
        .await
        .expect("tombstone");
    let got = matching(&store, &query([item(&[], &["k"])])).await;
    assert_eq!(got.len(), 2, "{rule}");
    assert_eq!(
        got.iter().map(|e| e.stream.as_str()).collect::<Vec<_>>(),
        ["gone-1", "gone-2"],
        "{rule}"
    );
}

/// §10.3: `after` is exclusive: only events at positions strictly after it.
pub async fn dcb_read_query_after_is_exclusive<S: TestStore>(store: S) {
    let rule = "§10.3 read_query `after` is exclusive";
    let log = query_log(&store).await;
    let q = query([item(&[], &["x:1"])]);
    let got = read_query(&store, &q, ReadQueryOptions::new().after(log[1].position)).await;
    assert_eq!(ids(&got), pick(&log, &[3, 5]), "{rule}");
    let got = read_query(
        &store,
        &Query::all(),
        ReadQueryOptions::new().after(log[5].position),
    )
    .await;
    assert_eq!(ids(&got), pick(&log, &[6]), "{rule}: Query::all");
    let got = read_query(&store, &q, ReadQueryOptions::new().after(log[6].position)).await;
    assert!(got.is_empty(), "{rule}: after the last event");
}

/// §10.3: `limit` caps the result at the first matching events; with `after` it pages.
pub async fn dcb_read_query_limit_pages_through_matches<S: TestStore>(store: S) {
    let rule = "§10.3 read_query `limit` caps the result";
    let log = query_log(&store).await;
    let q = query([item(&["A", "B"], &[])]);
    let every = matching(&store, &q).await;
    assert_eq!(ids(&every), pick(&log, &[0, 1, 3, 4, 6]), "{rule}");
    assert!(
        read_query(&store, &q, ReadQueryOptions::new().limit(0))
            .await
            .is_empty(),
        "{rule}: limit 0"
    );
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let mut options = ReadQueryOptions::new().limit(2);
        options.after = after;
        let page = read_query(&store, &q, options).await;
        assert!(page.len() <= 2, "{rule}: at most `limit` events");
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        paged.extend(ids(&page));
    }
    assert_eq!(
        paged,
        ids(&every),
        "{rule}: pages join up without gaps or repeats"
    );
}

/// §10.1: an invalid tag on an event (empty, too long, a control character, too many)
/// refuses the append with `InvalidEvent::Tag`, conditional or not, and writes nothing.
pub async fn dcb_invalid_tags_on_events_are_refused<S: TestStore>(store: S) {
    let rule = "§10.1 invalid tags on events are refused";
    let s = name("badtag-1");
    let long = "t".repeat(MAX_TAG_BYTES + 1);
    let many: Vec<String> = (0..=crate::dcb::MAX_TAGS_PER_EVENT)
        .map(|i| format!("t:{i}"))
        .collect();
    let bad: Vec<Vec<String>> = vec![vec![String::new()], vec![long], vec!["a\nb".into()], many];
    for tags in bad {
        let events = vec![
            tagged("A", 0, &["ok"]),
            event("B", 1).with_tags(tags.clone()),
        ];
        for conditional in [false, true] {
            let r = if conditional {
                store
                    .append_if(
                        &s,
                        ExpectedRevision::Any,
                        events.clone(),
                        condition(&Query::all(), None),
                    )
                    .await
            } else {
                store
                    .append(&s, ExpectedRevision::Any, events.clone())
                    .await
            };
            match r {
                Err(AppendError::InvalidEvent {
                    index: 1,
                    reason: InvalidEvent::Tag(_),
                }) => {}
                other => panic!("{rule}: tags {tags:?} should be refused, got {other:?}"),
            }
        }
    }
    assert!(all(&store).await.is_empty(), "{rule}: nothing written");
}

/// §10.2: an invalid tag in a query is `ReadError::InvalidTag` for `read_query` and
/// `AppendError::InvalidTag` for a condition, which writes nothing.
pub async fn dcb_invalid_tags_in_queries_are_refused<S: TestStore>(store: S) {
    let rule = "§10.2 invalid tags in queries are refused";
    for bad in ["", "a\u{7}b"] {
        let q = query([item(&["A"], &["fine", bad])]);
        match store.read_query(&q, ReadQueryOptions::new()).await {
            Err(ReadError::InvalidTag(_)) => {}
            other => panic!("{rule}: read_query with tag {bad:?} got {other:?}"),
        }
        match store
            .append_if(
                &name("cond-1"),
                ExpectedRevision::Any,
                vec![event("A", 0)],
                condition(&q, None),
            )
            .await
        {
            Err(AppendError::InvalidTag(InvalidTag::Empty | InvalidTag::ControlCharacter(_))) => {}
            other => panic!("{rule}: a condition with tag {bad:?} got {other:?}"),
        }
    }
    assert!(all(&store).await.is_empty(), "{rule}: nothing written");
}

/// §10.4: a condition whose query matches nothing after `after` lets the append through;
/// events at or before `after` do not count.
pub async fn dcb_condition_passes_when_nothing_matches_after<S: TestStore>(store: S) {
    let rule = "§10.4 a condition passes when nothing matches after `after`";
    let log = query_log(&store).await;
    let q = query([item(&[], &["x:1"])]);
    // log[5] is the last x:1 event; log[6] comes after it but does not match.
    let r = append_if(
        &store,
        &name("q-3"),
        ExpectedRevision::NoStream,
        vec![tagged("A", 9, &["x:1"])],
        condition(&q, Some(log[5].position)),
    )
    .await;
    assert!(r.position > log[6].position, "{rule}: written at the end");
    let got = matching(&store, &q).await;
    assert_eq!(got.len(), 5, "{rule}");
    assert_eq!(
        got[4].tags,
        ["x:1"],
        "{rule}: the new event carries its tags"
    );
}

/// §10.4: a condition fails with `ConditionFailed` naming the first matching event after
/// `after`, in any stream, and the append writes nothing.
pub async fn dcb_condition_fails_with_the_first_matching_position<S: TestStore>(store: S) {
    let rule = "§10.4 a failing condition names the first match after `after`";
    let log = query_log(&store).await;
    let q = query([item(&["A", "C"], &["x:1"])]);
    // Matches after log[0]: log[3] (A, x:1) and log[5] (C, x:1); log[1] is B.
    let s = name("fresh-1");
    let r = store
        .append_if(
            &s,
            ExpectedRevision::NoStream,
            vec![tagged("A", 9, &["x:1"])],
            condition(&q, Some(log[0].position)),
        )
        .await;
    assert_condition_failed(r, log[3].position, rule);
    let r = store
        .append_if(
            &s,
            ExpectedRevision::NoStream,
            vec![tagged("A", 9, &["x:1"])],
            condition(&q, Some(log[3].position)),
        )
        .await;
    assert_condition_failed(r, log[5].position, rule);
    assert_eq!(
        all(&store).await.len(),
        log.len(),
        "{rule}: nothing written"
    );
    super::assert_not_found(&store, &s, rule).await;
}

/// §10.4: events after `after` that do not match the query (other tags, other types)
/// never fail the condition.
pub async fn dcb_condition_ignores_events_that_do_not_match<S: TestStore>(store: S) {
    let rule = "§10.4 only matching events fail a condition";
    let s = name("acct-1");
    let first = append(
        &store,
        &s,
        ExpectedRevision::NoStream,
        vec![tagged("Opened", 0, &["acct:1"])],
    )
    .await;
    append(
        &store,
        &name("acct-2"),
        ExpectedRevision::NoStream,
        vec![
            tagged("Opened", 1, &["acct:2"]),
            tagged("Deposited", 2, &["acct:2"]),
        ],
    )
    .await;
    append(
        &store,
        &s,
        ExpectedRevision::Exact(0),
        vec![tagged("Noted", 3, &["acct:1"])],
    )
    .await;
    let q = query([item(&["Opened", "Deposited"], &["acct:1"])]);
    let r = append_if(
        &store,
        &s,
        ExpectedRevision::Any,
        vec![tagged("Deposited", 4, &["acct:1"])],
        condition(&q, Some(first.position)),
    )
    .await;
    assert_eq!(r.next_expected_revision, 2, "{rule}");
}

/// §10.4: with `after: None` every event counts: a uniqueness check. The first claim
/// passes, every later one fails naming it.
pub async fn dcb_condition_without_after_is_a_uniqueness_check<S: TestStore>(store: S) {
    let rule = "§10.4 `after: None` makes a uniqueness check";
    let q = query([item(&["UsernameClaimed"], &["username:ada"])]);
    let first = append_if(
        &store,
        &name("user-1"),
        ExpectedRevision::NoStream,
        vec![tagged("UsernameClaimed", 0, &["username:ada"])],
        condition(&q, None),
    )
    .await;
    let r = store
        .append_if(
            &name("user-2"),
            ExpectedRevision::NoStream,
            vec![tagged("UsernameClaimed", 1, &["username:ada"])],
            condition(&q, None),
        )
        .await;
    assert_condition_failed(r, first.position, rule);
    append_if(
        &store,
        &name("user-2"),
        ExpectedRevision::NoStream,
        vec![tagged("UsernameClaimed", 2, &["username:bob"])],
        condition(
            &query([item(&["UsernameClaimed"], &["username:bob"])]),
            None,
        ),
    )
    .await;
    assert_eq!(all(&store).await.len(), 2, "{rule}");
}

/// §10.4: a `Query::all()` condition fails on any event after `after` and passes when
/// `after` is the head.
pub async fn dcb_condition_on_query_all_fails_on_any_later_event<S: TestStore>(store: S) {
    let rule = "§10.4 a Query::all condition counts every event";
    let log = query_log(&store).await;
    let s = name("all-1");
    let r = store
        .append_if(
            &s,
            ExpectedRevision::Any,
            vec![event("X", 0)],
            condition(&Query::all(), Some(log[4].position)),
        )
        .await;
    assert_condition_failed(r, log[5].position, rule);
    append_if(
        &store,
        &s,
        ExpectedRevision::Any,
        vec![event("X", 0)],
        condition(&Query::all(), Some(log[6].position)),
    )
    .await;
}

/// §10.5: a retry of a conditional append that is already stored returns the first
/// result and writes nothing, without checking the condition again (its own events
/// match it now).
pub async fn dcb_retry_of_a_conditional_append_returns_the_first_result<S: TestStore>(store: S) {
    let rule = "§10.5 a conditional append's retry returns the first result";
    let q = query([item(&[], &["seat:1"])]);
    let batch = vec![
        tagged("SeatBooked", 0, &["seat:1"]),
        tagged("Paid", 1, &["seat:1"]),
    ];
    let s = name("booking-1");
    let first = append_if(
        &store,
        &s,
        ExpectedRevision::NoStream,
        batch.clone(),
        condition(&q, None),
    )
    .await;
    let again = append_if(
        &store,
        &s,
        ExpectedRevision::NoStream,
        batch.clone(),
        condition(&q, None),
    )
    .await;
    assert_eq!(again, first, "{rule}");
    assert_eq!(
        ids(&all(&store).await),
        ids_of_new(&batch),
        "{rule}: written once"
    );
}

/// §10.5: checks run in order: the events' validity, idempotent retry, expected
/// revision, then the condition. When the expected revision and the condition both
/// fail, the error is `WrongExpectedRevision`.
pub async fn dcb_condition_is_checked_after_the_expected_revision<S: TestStore>(store: S) {
    let rule = "§10.5 validation, then expected revision, then the condition";
    let s = name("order-1");
    let first = append(
        &store,
        &s,
        ExpectedRevision::NoStream,
        vec![tagged("A", 0, &["k"])],
    )
    .await;
    let q = query([item(&[], &["k"])]);
    let failing = condition(&q, None);
    // Invalid event and failing condition: the event is reported.
    let r = store
        .append_if(
            &s,
            ExpectedRevision::Exact(5),
            vec![NewEvent::raw("", "{}", crate::JSON)],
            failing.clone(),
        )
        .await;
    assert!(
        matches!(r, Err(AppendError::InvalidEvent { index: 0, .. })),
        "{rule}: validation first, got {r:?}"
    );
    // Wrong revision and failing condition: the revision is reported.
    let r = store
        .append_if(
            &s,
            ExpectedRevision::Exact(5),
            vec![tagged("A", 1, &["k"])],
            failing.clone(),
        )
        .await;
    match r {
        Err(AppendError::WrongExpectedRevision { actual, .. }) => {
            assert_eq!(actual, CurrentRevision::Current(0), "{rule}");
        }
        other => panic!("{rule}: expected WrongExpectedRevision, got {other:?}"),
    }
    // Right revision, failing condition.
    let r = store
        .append_if(
            &s,
            ExpectedRevision::Exact(0),
            vec![tagged("A", 1, &["k"])],
            failing,
        )
        .await;
    assert_condition_failed(r, first.position, rule);
    // Both hold.
    let r = append_if(
        &store,
        &s,
        ExpectedRevision::Exact(0),
        vec![tagged("A", 1, &["k"])],
        condition(&q, Some(first.position)),
    )
    .await;
    assert_eq!(r.next_expected_revision, 1, "{rule}");
}

/// §10.4, §3.1: in one burst of concurrent appends (a group commit, on backends that
/// have one), conditional appends whose condition fails get `ConditionFailed` and write
/// nothing, while their neighbours (conditional or not) are written.
pub async fn dcb_concurrent_failing_conditions_do_not_affect_neighbours<S: TestStore>(store: S) {
    const TASKS: usize = 18;
    let rule = "§10.4 a failing condition does not affect concurrent appends";
    let first = tagged("Claimed", 0, &["thing:taken"]);
    let mut written = vec![first.id];
    let taken = append(
        &store,
        &name("taken-1"),
        ExpectedRevision::NoStream,
        vec![first],
    )
    .await;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let s = name(&format!("burst-{t}"));
            let free = format!("thing:free-{t}");
            let (events, cond) = match t % 3 {
                0 => (
                    vec![tagged("Claimed", t as u64, &["thing:taken"])],
                    Some(condition(&query([item(&[], &["thing:taken"])]), None)),
                ),
                1 => (
                    vec![tagged("Claimed", t as u64, &[free.as_str()])],
                    Some(condition(&query([item(&[], &[free.as_str()])]), None)),
                ),
                _ => (vec![tagged("Noted", t as u64, &["thing:taken"])], None),
            };
            let ids = ids_of_new(&events);
            barrier.wait().await;
            let r = match cond {
                Some(c) => {
                    store
                        .append_if(&s, ExpectedRevision::NoStream, events, c)
                        .await
                }
                None => store.append(&s, ExpectedRevision::NoStream, events).await,
            };
            (t, ids, r)
        }));
    }
    for task in tasks {
        let (t, task_ids, r) = task.await.expect("task");
        match (t % 3, r) {
            (0, Err(AppendError::ConditionFailed { position })) => {
                assert!(position >= taken.position, "{rule}: {position}");
            }
            (1 | 2, Ok(_)) => written.extend(task_ids),
            (_, r) => panic!("{rule}: task {t} got {r:?}"),
        }
    }
    let mut stored = ids(&all(&store).await);
    stored.sort();
    written.sort();
    assert_eq!(stored, written, "{rule}: exactly the accepted events");
}

/// §10.4: of many concurrent uniqueness claims (`after: None`) on one tag, exactly one
/// wins; the others fail naming the winner's event.
pub async fn dcb_concurrent_unique_claims_let_exactly_one_win<S: TestStore>(store: S) {
    const TASKS: usize = 16;
    let rule = "§10.4 exactly one of racing uniqueness claims wins";
    let q = query([item(&["Claimed"], &["email:ada@example.com"])]);
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, barrier, q) = (store.clone(), barrier.clone(), q.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .append_if(
                    &name(&format!("signup-{t}")),
                    ExpectedRevision::NoStream,
                    vec![tagged("Claimed", t as u64, &["email:ada@example.com"])],
                    condition(&q, None),
                )
                .await
        }));
    }
    let mut wins = Vec::new();
    let mut losses = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Ok(r) => wins.push(r.position),
            Err(AppendError::ConditionFailed { position }) => losses.push(position),
            Err(e) => panic!("{rule}: unexpected error {e:?}"),
        }
    }
    assert_eq!(wins.len(), 1, "{rule}: one winner, got {wins:?}");
    assert!(
        losses.iter().all(|p| *p == wins[0]),
        "{rule}: every loser names the winner"
    );
    assert_eq!(matching(&store, &q).await.len(), 1, "{rule}");
}

/// §10.4 (no lost updates): 16 tasks each loop read_query → decide → append_if to claim
/// seats from a pool of 50 on a shared tag. No more than 50 are claimed, and every
/// acknowledged claim is stored exactly once.
pub async fn dcb_concurrent_claims_never_exceed_a_limited_pool<S: TestStore>(store: S) {
    const TASKS: usize = 16;
    const SEATS: usize = 50;
    let rule = "§10.4 read-decide-append_if never loses an update";
    let q = query([item(&["SeatClaimed"], &["course:c1"])]);
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, barrier, q) = (store.clone(), barrier.clone(), q.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut claimed = Vec::new();
            let mut conflicts = 0usize;
            for n in 0u64.. {
                let seen = read_query(&store, &q, ReadQueryOptions::new()).await;
                if seen.len() >= SEATS {
                    break;
                }
                let after = seen.last().map(|e| e.position);
                let student = format!("student:{t}-{n}");
                let claim = tagged("SeatClaimed", n, &["course:c1", student.as_str()]);
                let id = claim.id;
                match store
                    .append_if(
                        &name(&format!("enrolment-{t}")),
                        ExpectedRevision::Any,
                        vec![claim],
                        condition(&q, after),
                    )
                    .await
                {
                    Ok(_) => claimed.push(id),
                    Err(AppendError::ConditionFailed { position }) => {
                        assert!(
                            after.is_none_or(|a| position > a),
                            "{rule}: the failing event comes after `after`"
                        );
                        conflicts += 1;
                    }
                    Err(e) => panic!("{rule}: task {t}: {e:?}"),
                }
            }
            (claimed, conflicts)
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        let (ids, _conflicts) = task.await.expect("task");
        claimed.extend(ids);
    }
    assert!(
        claimed.len() <= SEATS,
        "{rule}: {} seats claimed from a pool of {SEATS}",
        claimed.len()
    );
    assert_eq!(claimed.len(), SEATS, "{rule}: the tasks fill the pool");
    let stored = matching(&store, &q).await;
    let stored_ids: Vec<Uuid> = ids(&stored);
    let unique: HashSet<Uuid> = stored_ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        stored_ids.len(),
        "{rule}: no claim stored twice"
    );
    let claimed_set: HashSet<Uuid> = claimed.iter().copied().collect();
    assert_eq!(
        unique, claimed_set,
        "{rule}: exactly the acknowledged claims"
    );
}
