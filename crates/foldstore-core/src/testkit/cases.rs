//! The conformance cases: one function per rule of `docs/semantics.md` (cited as
//! "§n"). Each takes a fresh, empty store and panics with a message naming the rule when
//! the store breaks it. [`conformance_tests!`](crate::conformance_tests) runs them all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use uuid::Uuid;

use super::TestStore;

mod dcb;
mod snapshots;
mod transactions;

use crate::{
    AppendError, AppendResult, ConsumerGroup, CurrentRevision, DeleteError, EventFilter,
    EventSubscription, ExpectedRevision, InvalidEvent, InvalidStreamName, JSON, Metadata,
    MetadataError, NewEvent, Position, ReadAllOptions, ReadError, ReadStreamOptions, RecordedEvent,
    StreamMetadata, StreamName, SubscribeFrom, SubscribeStreamFrom, SubscriptionError, group_hash,
    validate_category,
};
pub use dcb::*;
pub use snapshots::*;
pub use transactions::*;

/// How long a subscription may take to deliver an event that is already committed.
const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(200);
/// The default append limit, 16 MiB.
const MIB16: usize = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("the kit's stream names are valid")
}

fn event(event_type: &str, n: u64) -> NewEvent {
    NewEvent::json(event_type, &serde_json::json!({ "n": n })).expect("JSON event")
}

fn events(count: usize) -> Vec<NewEvent> {
    (0..count).map(|i| event("Happened", i as u64)).collect()
}

fn ids_of_new(events: &[NewEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.id).collect()
}

fn ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.id).collect()
}

fn revisions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.revision).collect()
}

fn streams_of(events: &[RecordedEvent]) -> Vec<String> {
    events.iter().map(|e| e.stream.to_string()).collect()
}

fn assert_strictly_increasing(events: &[RecordedEvent], rule: &str) {
    for w in events.windows(2) {
        assert!(
            w[0].position < w[1].position,
            "{rule}: positions must strictly increase in $all order, got {} then {}",
            w[0].position,
            w[1].position
        );
    }
}

async fn append<S: TestStore>(
    store: &S,
    stream: &StreamName,
    expected: ExpectedRevision,
    events: Vec<NewEvent>,
) -> AppendResult {
    match store.append(stream, expected, events).await {
        Ok(r) => r,
        Err(e) => panic!("append to {stream} expecting {expected} should succeed, got: {e:?}"),
    }
}

async fn read<S: TestStore>(store: &S, stream: &StreamName) -> Vec<RecordedEvent> {
    read_with(store, stream, ReadStreamOptions::forwards()).await
}

async fn read_with<S: TestStore>(
    store: &S,
    stream: &StreamName,
    options: ReadStreamOptions,
) -> Vec<RecordedEvent> {
    match store.read_stream(stream, options.clone()).await {
        Ok(r) => r,
        Err(e) => panic!("read_stream({stream}, {options:?}) should succeed, got: {e:?}"),
    }
}

async fn all<S: TestStore>(store: &S) -> Vec<RecordedEvent> {
    all_with(store, ReadAllOptions::forwards()).await
}

async fn all_with<S: TestStore>(store: &S, options: ReadAllOptions) -> Vec<RecordedEvent> {
    match store.read_all(options.clone()).await {
        Ok(r) => r,
        Err(e) => panic!("read_all({options:?}) should succeed, got: {e:?}"),
    }
}

async fn category<S: TestStore>(
    store: &S,
    category: &str,
    options: ReadAllOptions,
) -> Vec<RecordedEvent> {
    match store.read_category(category, options.clone()).await {
        Ok(r) => r,
        Err(e) => panic!("read_category({category}, {options:?}) should succeed, got: {e:?}"),
    }
}

async fn assert_not_found<S: TestStore>(store: &S, stream: &StreamName, rule: &str) {
    for options in [
        ReadStreamOptions::forwards(),
        ReadStreamOptions::backwards(),
    ] {
        match store.read_stream(stream, options).await {
            Err(ReadError::StreamNotFound { stream: s }) => assert_eq!(&s, stream, "{rule}"),
            other => panic!("{rule}: reading {stream} should be StreamNotFound, got {other:?}"),
        }
    }
}

async fn assert_all_len<S: TestStore>(store: &S, len: usize, rule: &str) {
    let got = all(store).await.len();
    assert_eq!(
        got, len,
        "{rule}: $all should hold {len} events, holds {got}"
    );
}

async fn subscribe_all<S: TestStore>(
    store: &S,
    from: SubscribeFrom,
    filter: EventFilter,
) -> EventSubscription {
    match store.subscribe_to_all(from, filter.clone()).await {
        Ok(s) => s,
        Err(e) => panic!("subscribe_to_all({from:?}, {filter:?}) should succeed, got: {e:?}"),
    }
}

async fn subscribe_stream<S: TestStore>(
    store: &S,
    stream: &StreamName,
    from: SubscribeStreamFrom,
) -> EventSubscription {
    match store.subscribe_to_stream(stream, from).await {
        Ok(s) => s,
        Err(e) => panic!("subscribe_to_stream({stream}, {from:?}) should succeed, got: {e:?}"),
    }
}

async fn next(sub: &mut EventSubscription, rule: &str) -> RecordedEvent {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Err(_) => panic!("{rule}: the subscription delivered nothing within {WAIT:?}"),
        Ok(None) => panic!("{rule}: the subscription ended, it should continue live"),
        Ok(Some(Err(e))) => panic!("{rule}: the subscription failed: {e:?}"),
        Ok(Some(Ok(e))) => e,
    }
}

async fn take(sub: &mut EventSubscription, n: usize, rule: &str) -> Vec<RecordedEvent> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next(sub, rule).await);
    }
    out
}

async fn assert_quiet(sub: &mut EventSubscription, rule: &str) {
    if let Ok(item) = tokio::time::timeout(QUIET, sub.next()).await {
        panic!("{rule}: the subscription should deliver nothing more, got {item:?}");
    }
}

fn assert_wrong_expected(
    result: Result<AppendResult, AppendError>,
    stream: &StreamName,
    expected: ExpectedRevision,
    actual: CurrentRevision,
    rule: &str,
) {
    match result {
        Err(AppendError::WrongExpectedRevision {
            stream: s,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(&s, stream, "{rule}: the error names the stream");
            assert_eq!(e, expected, "{rule}: the error carries the expectation");
            assert_eq!(a, actual, "{rule}: the error carries the actual revision");
        }
        other => panic!(
            "{rule}: expected WrongExpectedRevision {{ expected: {expected}, actual: {actual} }}, got {other:?}"
        ),
    }
}

fn assert_invalid_event(
    result: Result<AppendResult, AppendError>,
    index: usize,
    check: impl Fn(&InvalidEvent) -> bool,
    rule: &str,
) {
    match result {
        Err(AppendError::InvalidEvent { index: i, reason }) if i == index && check(&reason) => {}
        other => panic!("{rule}: expected InvalidEvent at index {index}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// §1 Streams
// ---------------------------------------------------------------------------------------

/// §1: an empty stream or category name is refused with `InvalidStreamName::Empty`,
/// also by `read_category`.
pub async fn stream_name_empty_is_refused<S: TestStore>(store: S) {
    let rule = "§1 a stream name is non-empty";
    assert_eq!(StreamName::new(""), Err(InvalidStreamName::Empty), "{rule}");
    assert_eq!(
        validate_category(""),
        Err(InvalidStreamName::Empty),
        "{rule}"
    );
    let r = store.read_category("", ReadAllOptions::forwards()).await;
    assert!(
        matches!(r, Err(ReadError::InvalidName(InvalidStreamName::Empty))),
        "{rule}: read_category(\"\") got {r:?}"
    );
}

/// §1: a name is at most 200 bytes of UTF-8 (bytes, not characters); 201 is refused
/// with `TooLong`.
pub async fn stream_name_over_200_bytes_is_refused<S: TestStore>(store: S) {
    let rule = "§1 a stream name is at most 200 bytes";
    assert!(StreamName::new("a".repeat(200)).is_ok(), "{rule}");
    assert!(
        matches!(
            StreamName::new("a".repeat(201)),
            Err(InvalidStreamName::TooLong { len: 201, max: 200 })
        ),
        "{rule}"
    );
    // 101 two-byte characters: 101 characters but 202 bytes.
    assert!(
        matches!(
            StreamName::new("é".repeat(101)),
            Err(InvalidStreamName::TooLong { len: 202, max: 200 })
        ),
        "{rule}: the limit counts bytes"
    );
    let r = store
        .read_category(&"c".repeat(201), ReadAllOptions::forwards())
        .await;
    assert!(
        matches!(
            r,
            Err(ReadError::InvalidName(InvalidStreamName::TooLong { .. }))
        ),
        "{rule}: read_category with a 201-byte category got {r:?}"
    );
}

/// §1: a name of exactly 200 bytes, multi-byte UTF-8 included, is stored and read back
/// unchanged.
pub async fn stream_name_of_200_bytes_is_stored_and_read_back<S: TestStore>(store: S) {
    let rule = "§1 names of up to 200 bytes are valid";
    let long = name(&format!("c-{}", "é".repeat(99)));
    assert_eq!(long.as_str().len(), 200);
    append(&store, &long, ExpectedRevision::NoStream, events(1)).await;
    let got = read(&store, &long).await;
    assert_eq!(got.len(), 1, "{rule}");
    assert_eq!(got[0].stream, long, "{rule}");
    assert_eq!(
        all(&store).await[0].stream,
        long,
        "{rule}: $all carries the name"
    );
}

/// §1: a name with a control character (newline, tab, NUL, DEL, C1) is refused.
pub async fn stream_name_with_control_character_is_refused<S: TestStore>(store: S) {
    let rule = "§1 a stream name has no control characters";
    for bad in ["a\nb", "a\tb", "a\0b", "a\u{7f}b", "a\u{85}b", "\r"] {
        assert!(
            matches!(
                StreamName::new(bad),
                Err(InvalidStreamName::ControlCharacter { .. })
            ),
            "{rule}: {bad:?}"
        );
    }
    let r = store
        .read_category("a\nb", ReadAllOptions::forwards())
        .await;
    assert!(
        matches!(r, Err(ReadError::InvalidName(_))),
        "{rule}: read_category got {r:?}"
    );
}

/// §1: names starting with `$` are reserved for the store; a `$` elsewhere is fine.
pub async fn stream_name_starting_with_dollar_is_reserved<S: TestStore>(store: S) {
    let rule = "§1 names starting with `$` are reserved";
    for bad in ["$all", "$x-1", "$"] {
        assert!(
            matches!(
                StreamName::new(bad),
                Err(InvalidStreamName::Reserved { .. })
            ),
            "{rule}: {bad:?}"
        );
    }
    let ok = name("a$-b$");
    append(&store, &ok, ExpectedRevision::NoStream, events(1)).await;
    assert_eq!(
        read(&store, &ok).await.len(),
        1,
        "{rule}: `$` inside a name is fine"
    );
    let r = store
        .read_category("$all", ReadAllOptions::forwards())
        .await;
    assert!(
        matches!(
            r,
            Err(ReadError::InvalidName(InvalidStreamName::Reserved { .. }))
        ),
        "{rule}: read_category(\"$all\") got {r:?}"
    );
}

/// §1: the category is the part before the first `-`, the id the part after it; a name
/// without `-` is its own category. `read_category` follows this split exactly.
pub async fn stream_name_category_is_the_part_before_the_first_dash<S: TestStore>(store: S) {
    let rule = "§1 the category is the part before the first `-`";
    let n = name("order-1-2");
    assert_eq!((n.category(), n.id()), ("order", "1-2"), "{rule}");
    let n = name("order");
    assert_eq!((n.category(), n.id()), ("order", "order"), "{rule}");
    for s in [
        "order-1",
        "orders-1",
        "order-1-2",
        "ordering",
        "order",
        "Order-1",
    ] {
        append(&store, &name(s), ExpectedRevision::NoStream, events(1)).await;
    }
    let got = category(&store, "order", ReadAllOptions::forwards()).await;
    assert_eq!(
        streams_of(&got),
        ["order-1", "order-1-2", "order"],
        "{rule}: read_category(\"order\")"
    );
}

/// §1, §4: `read_category` refuses an invalid category name (one with `-`, reserved, or
/// empty) with `ReadError::InvalidName`.
pub async fn read_category_with_an_invalid_name_is_refused<S: TestStore>(store: S) {
    let rule = "§4 a category name is a valid name without `-`";
    append(&store, &name("a-b"), ExpectedRevision::NoStream, events(1)).await;
    let r = store.read_category("a-b", ReadAllOptions::forwards()).await;
    assert!(
        matches!(
            r,
            Err(ReadError::InvalidName(
                InvalidStreamName::DashInCategory { .. }
            ))
        ),
        "{rule}: got {r:?}"
    );
    for bad in ["", "$a"] {
        let r = store.read_category(bad, ReadAllOptions::forwards()).await;
        assert!(
            matches!(r, Err(ReadError::InvalidName(_))),
            "{rule}: {bad:?} got {r:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// §2, §3 Appending
// ---------------------------------------------------------------------------------------

/// §2: revisions are 0-based and gapless within a stream; the result names the revision
/// of the last event written.
pub async fn append_revisions_are_zero_based_and_gapless<S: TestStore>(store: S) {
    let rule = "§2 revisions are 0-based and gapless";
    let s = name("rev-1");
    let r = append(&store, &s, ExpectedRevision::NoStream, events(1)).await;
    assert_eq!(r.next_expected_revision, 0, "{rule}");
    let r = append(&store, &s, ExpectedRevision::Exact(0), events(2)).await;
    assert_eq!(r.next_expected_revision, 2, "{rule}");
    let r = append(&store, &s, ExpectedRevision::Any, events(3)).await;
    assert_eq!(r.next_expected_revision, 5, "{rule}");
    assert_eq!(
        revisions(&read(&store, &s).await),
        (0..6).collect::<Vec<_>>(),
        "{rule}"
    );
}

/// §2, §5: positions are unique and strictly increase in commit order, across streams;
/// a stream read returns the same positions as `$all`.
pub async fn append_positions_strictly_increase_across_streams<S: TestStore>(store: S) {
    let rule = "§2 positions strictly increase in commit order";
    let mut appended = Vec::new();
    for round in 0..4 {
        for s in ["pos-a", "pos-b", "pos-c"] {
            let batch = events(1 + round % 2);
            appended.extend(ids_of_new(&batch));
            append(&store, &name(s), ExpectedRevision::Any, batch).await;
        }
    }
    let log = all(&store).await;
    assert_eq!(ids(&log), appended, "{rule}: $all is in commit order");
    assert_strictly_increasing(&log, rule);
    for s in ["pos-a", "pos-b", "pos-c"] {
        for e in read(&store, &name(s)).await {
            let in_all = log.iter().find(|l| l.id == e.id).expect("event in $all");
            assert_eq!(
                e.position, in_all.position,
                "{rule}: one position per event"
            );
        }
    }
}

/// §3.7: the result is the revision and position of the last event written.
pub async fn append_result_names_the_last_event<S: TestStore>(store: S) {
    let rule = "§3.7 the result names the last event";
    append(
        &store,
        &name("res-0"),
        ExpectedRevision::NoStream,
        events(2),
    )
    .await;
    let s = name("res-1");
    let r = append(&store, &s, ExpectedRevision::NoStream, events(3)).await;
    let last = read(&store, &s).await.pop().expect("events");
    assert_eq!(r.next_expected_revision, last.revision, "{rule}");
    assert_eq!(r.position, last.position, "{rule}");
    assert_eq!(
        store.head_position().await.expect("head"),
        Some(r.position),
        "{rule}"
    );
}

/// §3.1: an append is atomic: one invalid event refuses the whole append and nothing is
/// written; a valid multi-event append writes all its events.
pub async fn append_is_atomic<S: TestStore>(store: S) {
    let rule = "§3.1 all events are written or none";
    let s = name("atomic-1");
    let mut batch = events(3);
    batch[2].event_type = String::new();
    let r = store.append(&s, ExpectedRevision::NoStream, batch).await;
    assert_invalid_event(r, 2, |e| *e == InvalidEvent::EmptyType, rule);
    assert_all_len(&store, 0, rule).await;
    assert_not_found(&store, &s, rule).await;
    let batch = events(3);
    let want = ids_of_new(&batch);
    append(&store, &s, ExpectedRevision::NoStream, batch).await;
    assert_eq!(ids(&read(&store, &s).await), want, "{rule}");
    assert_eq!(ids(&all(&store).await), want, "{rule}");
}

/// §3.4: `Any` succeeds whatever the stream's state: new, existing, soft-deleted.
pub async fn expected_any_succeeds_whatever_the_state<S: TestStore>(store: S) {
    let rule = "§3.4 Any always succeeds";
    let s = name("any-1");
    append(&store, &s, ExpectedRevision::Any, events(1)).await;
    append(&store, &s, ExpectedRevision::Any, events(1)).await;
    store
        .delete_stream(&s, ExpectedRevision::Any)
        .await
        .expect("delete");
    let r = append(&store, &s, ExpectedRevision::Any, events(1)).await;
    assert_eq!(r.next_expected_revision, 2, "{rule}");
}

/// §3.4: `NoStream` succeeds on a stream that was never written.
pub async fn expected_no_stream_succeeds_on_a_new_stream<S: TestStore>(store: S) {
    let rule = "§3.4 NoStream succeeds on a new stream";
    let r = append(&store, &name("ns-1"), ExpectedRevision::NoStream, events(2)).await;
    assert_eq!(r.next_expected_revision, 1, "{rule}");
}

/// §3.4: `NoStream` fails on a stream with events, with `WrongExpectedRevision { stream,
/// expected, actual }`, and writes nothing.
pub async fn expected_no_stream_fails_on_an_existing_stream<S: TestStore>(store: S) {
    let rule = "§3.4 NoStream fails on an existing stream";
    let s = name("ns-2");
    append(&store, &s, ExpectedRevision::NoStream, events(2)).await;
    let r = store
        .append(&s, ExpectedRevision::NoStream, events(1))
        .await;
    assert_wrong_expected(
        r,
        &s,
        ExpectedRevision::NoStream,
        CurrentRevision::Current(1),
        rule,
    );
    assert_all_len(&store, 2, rule).await;
}

/// §3.4: `StreamExists` succeeds on a stream with visible events.
pub async fn expected_stream_exists_succeeds_on_an_existing_stream<S: TestStore>(store: S) {
    let rule = "§3.4 StreamExists succeeds on an existing stream";
    let s = name("se-1");
    append(&store, &s, ExpectedRevision::NoStream, events(1)).await;
    let r = append(&store, &s, ExpectedRevision::StreamExists, events(1)).await;
    assert_eq!(r.next_expected_revision, 1, "{rule}");
}

/// §3.4: `StreamExists` fails on a new stream and on a soft-deleted one (actual
/// `NoStream`), writing nothing.
pub async fn expected_stream_exists_fails_without_the_stream<S: TestStore>(store: S) {
    let rule = "§3.4 StreamExists fails when the stream has no visible events";
    let s = name("se-2");
    let r = store
        .append(&s, ExpectedRevision::StreamExists, events(1))
        .await;
    assert_wrong_expected(
        r,
        &s,
        ExpectedRevision::StreamExists,
        CurrentRevision::NoStream,
        rule,
    );
    assert_all_len(&store, 0, rule).await;
    append(&store, &s, ExpectedRevision::NoStream, events(1)).await;
    store
        .delete_stream(&s, ExpectedRevision::Exact(0))
        .await
        .expect("delete");
    let r = store
        .append(&s, ExpectedRevision::StreamExists, events(1))
        .await;
    assert_wrong_expected(
        r,
        &s,
        ExpectedRevision::StreamExists,
        CurrentRevision::NoStream,
        rule,
    );
    assert_all_len(&store, 1, rule).await;
}

/// §3.4: `Exact(n)` succeeds when the stream's last revision is `n`.
pub async fn expected_exact_succeeds_at_that_revision<S: TestStore>(store: S) {
    let rule = "§3.4 Exact(n) succeeds at revision n";
    let s = name("ex-1");
    let mut r = append(&store, &s, ExpectedRevision::NoStream, events(1)).await;
    for _ in 0..3 {
        let next = append(
            &store,
            &s,
            ExpectedRevision::Exact(r.next_expected_revision),
            events(2),
        )
        .await;
        assert_eq!(
            next.next_expected_revision,
            r.next_expected_revision + 2,
            "{rule}"
        );
        r = next;
    }
}

/// §3.4: `Exact(n)` fails at another revision and on a missing stream, naming the actual
/// revision, and writes nothing.
pub async fn expected_exact_fails_at_another_revision<S: TestStore>(store: S) {
    let rule = "§3.4 Exact(n) fails unless the stream is at n";
    let s = name("ex-2");
    let r = store
        .append(&s, ExpectedRevision::Exact(0), events(1))
        .await;
    assert_wrong_expected(
        r,
        &s,
        ExpectedRevision::Exact(0),
        CurrentRevision::NoStream,
        rule,
    );
    append(&store, &s, ExpectedRevision::NoStream, events(2)).await;
    for wrong in [0, 2, 7] {
        let r = store
            .append(&s, ExpectedRevision::Exact(wrong), events(1))
            .await;
        assert_wrong_expected(
            r,
            &s,
            ExpectedRevision::Exact(wrong),
            CurrentRevision::Current(1),
            rule,
        );
    }
    assert_all_len(&store, 2, rule).await;
}

/// §3.4: an extreme expected revision (`Exact(u64::MAX)`) is refused without overflow,
/// for appends, retries and deletes.
pub async fn expected_exact_u64_max_is_refused<S: TestStore>(store: S) {
    let rule = "§3.4 Exact(u64::MAX) is just a wrong revision";
    let s = name("ex-3");
    let max = ExpectedRevision::Exact(u64::MAX);
    let r = store.append(&s, max, events(1)).await;
    assert_wrong_expected(r, &s, max, CurrentRevision::NoStream, rule);
    let batch = events(1);
    append(&store, &s, ExpectedRevision::NoStream, batch.clone()).await;
    let r = store.append(&s, max, events(1)).await;
    assert_wrong_expected(r, &s, max, CurrentRevision::Current(0), rule);
    let r = store.append(&s, max, batch).await;
    assert_wrong_expected(r, &s, max, CurrentRevision::Current(0), rule);
    let r = store.delete_stream(&s, max).await;
    assert!(
        matches!(r, Err(DeleteError::WrongExpectedRevision { .. })),
        "{rule}: delete got {r:?}"
    );
    assert_all_len(&store, 1, rule).await;
}

/// §3.2: an append with no events is refused with `NoEvents` (before the expected
/// revision is looked at) and writes nothing.
pub async fn append_with_no_events_is_refused<S: TestStore>(store: S) {
    let rule = "§3.2 an append carries at least one event";
    let s = name("none-1");
    let r = store.append(&s, ExpectedRevision::Any, Vec::new()).await;
    assert!(matches!(r, Err(AppendError::NoEvents)), "{rule}: got {r:?}");
    assert_not_found(&store, &s, rule).await;
    append(&store, &s, ExpectedRevision::NoStream, events(1)).await;
    let r = store
        .append(&s, ExpectedRevision::Exact(9), Vec::new())
        .await;
    assert!(
        matches!(r, Err(AppendError::NoEvents)),
        "{rule}: checks run before the expected revision, got {r:?}"
    );
    assert_all_len(&store, 1, rule).await;
}

/// §3: checks run in order: the events themselves, then the tombstone, then
/// idempotency, then the expected revision.
pub async fn append_checks_run_in_the_documented_order<S: TestStore>(store: S) {
    let rule = "§3 checks run in order: events, tombstone, idempotency, expected revision";
    let s = name("order-of-checks-1");
    let batch = events(2);
    append(&store, &s, ExpectedRevision::NoStream, batch.clone()).await;
    append(&store, &s, ExpectedRevision::Exact(1), events(1)).await;
    // Idempotency before the expected revision: the stream moved on, the retry agrees.
    let r = store
        .append(&s, ExpectedRevision::NoStream, batch.clone())
        .await;
    assert!(
        r.is_ok(),
        "{rule}: a retry is recognised before the expected revision, got {r:?}"
    );
    store
        .tombstone_stream(&s, ExpectedRevision::Exact(2))
        .await
        .expect("tombstone");
    // The events before the tombstone.
    let r = store.append(&s, ExpectedRevision::Any, Vec::new()).await;
    assert!(matches!(r, Err(AppendError::NoEvents)), "{rule}: got {r:?}");
    let r = store
        .append(
            &s,
            ExpectedRevision::Any,
            vec![NewEvent::raw("", "{}", JSON)],
        )
        .await;
    assert_invalid_event(r, 0, |e| *e == InvalidEvent::EmptyType, rule);
    // The tombstone before idempotency and the expected revision.
    let r = store.append(&s, ExpectedRevision::Exact(7), batch).await;
    assert_append_tombstoned(r, &s, rule);
}

/// §2: an empty event type is refused with `InvalidEvent { reason: EmptyType }`.
pub async fn append_with_empty_event_type_is_refused<S: TestStore>(store: S) {
    let rule = "§2 the event type is non-empty";
    let r = store
        .append(
            &name("t-1"),
            ExpectedRevision::Any,
            vec![NewEvent::raw("", "{}", JSON)],
        )
        .await;
    assert_invalid_event(r, 0, |e| *e == InvalidEvent::EmptyType, rule);
    assert_all_len(&store, 0, rule).await;
}

/// §2: an event type is at most 200 bytes; 201 is refused with `TypeTooLong`.
pub async fn append_with_event_type_over_200_bytes_is_refused<S: TestStore>(store: S) {
    let rule = "§2 the event type is at most 200 bytes";
    let s = name("t-2");
    let ok = "T".repeat(200);
    append(
        &store,
        &s,
        ExpectedRevision::Any,
        vec![NewEvent::raw(ok.clone(), "{}", JSON)],
    )
    .await;
    assert_eq!(read(&store, &s).await[0].event_type, ok, "{rule}");
    let batch = vec![
        NewEvent::raw("Fine", "{}", JSON),
        NewEvent::raw("é".repeat(101), "{}", JSON),
    ];
    let r = store.append(&s, ExpectedRevision::Any, batch).await;
    assert_invalid_event(
        r,
        1,
        |e| *e == InvalidEvent::TypeTooLong { len: 202, max: 200 },
        rule,
    );
    assert_all_len(&store, 1, rule).await;
}

/// §2: an event type with a control character is refused with `TypeControlCharacter`.
pub async fn append_with_control_character_in_event_type_is_refused<S: TestStore>(store: S) {
    let rule = "§2 the event type has no control characters";
    for bad in ["A\nB", "A\0", "\tA"] {
        let r = store
            .append(
                &name("t-3"),
                ExpectedRevision::Any,
                vec![NewEvent::raw(bad, "{}", JSON)],
            )
            .await;
        assert_invalid_event(r, 0, |e| *e == InvalidEvent::TypeControlCharacter, rule);
    }
    assert_all_len(&store, 0, rule).await;
}

/// §2: with a JSON content type (`application/json`, with parameters, or
/// `application/*+json`) the data must be JSON; otherwise `DataNotJson`.
pub async fn append_with_invalid_json_data_is_refused<S: TestStore>(store: S) {
    let rule = "§2 JSON content types require JSON data";
    for (data, ct) in [
        ("{oops", JSON),
        ("", JSON),
        ("nope", "application/json; charset=utf-8"),
        ("[1,", "application/cloudevents+json"),
        ("{", "Application/JSON"),
    ] {
        let r = store
            .append(
                &name("j-1"),
                ExpectedRevision::Any,
                vec![NewEvent::raw("T", data, ct)],
            )
            .await;
        assert_invalid_event(r, 0, |e| matches!(e, InvalidEvent::DataNotJson(_)), rule);
    }
    assert_all_len(&store, 0, rule).await;
}

/// §2: an empty content type is refused with `EmptyContentType`.
pub async fn append_with_empty_content_type_is_refused<S: TestStore>(store: S) {
    let rule = "§2 the content type is non-empty";
    let r = store
        .append(
            &name("ct-1"),
            ExpectedRevision::Any,
            vec![NewEvent::raw("T", "x", "")],
        )
        .await;
    assert_invalid_event(r, 0, |e| *e == InvalidEvent::EmptyContentType, rule);
    assert_all_len(&store, 0, rule).await;
}

/// §2: any other non-empty content type stores the bytes as they are, even bytes that
/// are not UTF-8.
pub async fn append_with_other_content_type_stores_bytes_unchanged<S: TestStore>(store: S) {
    let rule = "§2 other content types store bytes as they are";
    let s = name("bin-1");
    let binary = Bytes::from_static(&[0, 159, 146, 150, 255, b'{']);
    let batch = vec![
        NewEvent::raw("Blob", binary.clone(), "application/octet-stream"),
        NewEvent::raw("Text", "not json", "text/plain"),
        NewEvent::raw("Empty", Bytes::new(), "application/octet-stream"),
    ];
    append(&store, &s, ExpectedRevision::NoStream, batch).await;
    let got = read(&store, &s).await;
    assert_eq!(got[0].data, binary, "{rule}");
    assert_eq!(got[0].content_type, "application/octet-stream", "{rule}");
    assert_eq!(got[1].data, Bytes::from_static(b"not json"), "{rule}");
    assert_eq!(got[1].content_type, "text/plain", "{rule}");
    assert!(got[2].data.is_empty(), "{rule}: empty data");
}

/// §3.5: two events of one append with the same id are `InvalidEvent` with
/// `DuplicateIdInAppend`, and nothing is written.
pub async fn append_with_duplicate_id_in_one_append_is_refused<S: TestStore>(store: S) {
    let rule = "§3.5 two events of one append may not share an id";
    let id = Uuid::new_v4();
    let batch = vec![
        event("A", 0).with_id(id),
        event("B", 1),
        event("C", 2).with_id(id),
    ];
    let r = store
        .append(&name("dup-1"), ExpectedRevision::Any, batch)
        .await;
    assert_invalid_event(r, 2, |e| *e == InvalidEvent::DuplicateIdInAppend(id), rule);
    assert_all_len(&store, 0, rule).await;
}

/// §3.3: data plus metadata over 16 MiB is `TooLarge { size, limit }` and nothing is
/// written; exactly 16 MiB is accepted.
pub async fn append_over_16_mib_is_too_large<S: TestStore>(store: S) {
    let rule = "§3.3 an append carries at most 16 MiB by default";
    let s = name("big-1");
    // Metadata `{}` counts two bytes.
    let over = NewEvent::raw("Big", vec![7u8; MIB16 - 1], "application/octet-stream");
    let r = store.append(&s, ExpectedRevision::Any, vec![over]).await;
    assert!(
        matches!(r, Err(AppendError::TooLarge { size, limit }) if size == MIB16 + 1 && limit == MIB16),
        "{rule}: got {:?}",
        r.map_err(|e| e.to_string())
    );
    assert_all_len(&store, 0, rule).await;
    let exact = NewEvent::raw("Big", vec![7u8; MIB16 - 2], "application/octet-stream");
    append(&store, &s, ExpectedRevision::NoStream, vec![exact]).await;
    assert_eq!(read(&store, &s).await[0].data.len(), MIB16 - 2, "{rule}");
}

/// §3.3: the limit is on the whole append, data plus metadata of every event.
pub async fn append_size_counts_data_and_metadata_of_all_events<S: TestStore>(store: S) {
    let rule = "§3.3 the limit counts data and metadata of all events";
    let half = MIB16 / 2;
    let meta = Metadata::new().with("k", "v"); // {"k":"v"}: 9 bytes
    let a = NewEvent::raw("Half", vec![1u8; half - 2], "application/octet-stream");
    let b = NewEvent::raw("Half", vec![1u8; half - 9 + 1], "application/octet-stream")
        .with_metadata(meta);
    let r = store
        .append(&name("big-2"), ExpectedRevision::Any, vec![a, b])
        .await;
    assert!(
        matches!(r, Err(AppendError::TooLarge { size, .. }) if size == MIB16 + 1),
        "{rule}: got {:?}",
        r.map_err(|e| e.to_string())
    );
    assert_all_len(&store, 0, rule).await;
}

/// §2: event metadata (correlation and causation ids, user keys, nested JSON) is
/// returned as the same JSON object.
pub async fn event_metadata_round_trips<S: TestStore>(store: S) {
    let rule = "§2 metadata is a JSON object returned as written";
    let s = name("meta-1");
    let correlation = Uuid::new_v4();
    let causation = Uuid::new_v4();
    let meta = Metadata::new()
        .with_correlation_id(correlation)
        .with_causation_id(causation)
        .with("tenant", "acme")
        .with("nested", serde_json::json!({"a": [1, 2.5, null, "é"]}));
    let batch = vec![event("A", 0).with_metadata(meta.clone()), event("B", 1)];
    append(&store, &s, ExpectedRevision::NoStream, batch).await;
    let got = read(&store, &s).await;
    assert_eq!(got[0].metadata.to_map(), meta.to_map(), "{rule}");
    assert_eq!(
        got[0].metadata.correlation_id(),
        Some(correlation),
        "{rule}"
    );
    assert_eq!(got[0].metadata.causation_id(), Some(causation), "{rule}");
    assert!(
        got[1].metadata.is_empty(),
        "{rule}: default metadata is {{}}"
    );
    let from_all = all(&store).await;
    assert_eq!(
        from_all[0].metadata.to_map(),
        meta.to_map(),
        "{rule}: in $all too"
    );
}

/// §2: JSON data is stored as the bytes given (whitespace, key order and escapes
/// included), and event types are returned unchanged.
pub async fn event_data_round_trips_byte_for_byte<S: TestStore>(store: S) {
    let rule = "§2 data is bytes";
    let s = name("data-1");
    let data = "{ \"b\" : 1,\n  \"a\" : [1.50, \"\\u00e9\", \"é\"] }";
    append(
        &store,
        &s,
        ExpectedRevision::NoStream,
        vec![NewEvent::raw("Ünïcode Type", data, JSON)],
    )
    .await;
    let got = read(&store, &s).await;
    assert_eq!(got[0].data, Bytes::from(data), "{rule}");
    assert_eq!(got[0].event_type, "Ünïcode Type", "{rule}");
    assert_eq!(
        all(&store).await[0].data,
        Bytes::from(data),
        "{rule}: in $all too"
    );
}

/// §2: the content type is returned as given, parameters and case included.
pub async fn content_type_round_trips<S: TestStore>(store: S) {
    let rule = "§2 the content type is stored as given";
    let s = name("ct-2");
    let types = [
        "application/json",
        "application/json; charset=utf-8",
        "application/cloudevents+json",
        "text/plain",
        "Application/Vnd.Custom",
    ];
    let batch = types
        .iter()
        .map(|ct| NewEvent::raw("T", "{}", *ct))
        .collect();
    append(&store, &s, ExpectedRevision::NoStream, batch).await;
    let got: Vec<String> = read(&store, &s)
        .await
        .into_iter()
        .map(|e| e.content_type)
        .collect();
    assert_eq!(got, types, "{rule}");
}

/// §2: `recorded_at` is the UTC time of the commit, assigned by the store: close to
/// now, and the same for every event of one append.
pub async fn recorded_at_is_utc_and_close_to_now<S: TestStore>(store: S) {
    let rule = "§2 recorded_at is the UTC commit time";
    let before = Utc::now() - chrono::Duration::seconds(2);
    let s = name("time-1");
    append(&store, &s, ExpectedRevision::NoStream, events(3)).await;
    let after = Utc::now() + chrono::Duration::seconds(2);
    let got = read(&store, &s).await;
    for e in &got {
        assert!(
            before <= e.recorded_at && e.recorded_at <= after,
            "{rule}: {} is not between {before} and {after}",
            e.recorded_at
        );
        assert_eq!(
            e.recorded_at, got[0].recorded_at,
            "{rule}: one commit, one time"
        );
    }
}

// ---------------------------------------------------------------------------------------
// §3.5 Idempotency
// ---------------------------------------------------------------------------------------

async fn check_retry<S: TestStore>(
    store: &S,
    expected: ExpectedRevision,
    prepare: usize,
    rule: &str,
) {
    let s = name("idem-1");
    if prepare > 0 {
        append(store, &s, ExpectedRevision::NoStream, events(prepare)).await;
    }
    let batch = events(2);
    let first = append(store, &s, expected, batch.clone()).await;
    let len = all(store).await.len();
    for _ in 0..2 {
        let again = append(store, &s, expected, batch.clone()).await;
        assert_eq!(again, first, "{rule}: a retry returns the first result");
    }
    assert_all_len(store, len, rule).await;
    assert_eq!(
        read(store, &s).await.len(),
        prepare + 2,
        "{rule}: nothing written twice"
    );
}

/// §3.5: repeating an `Exact(n)` append with the same ids returns the first result and
/// writes nothing.
pub async fn retry_with_exact_returns_the_first_result<S: TestStore>(store: S) {
    check_retry(
        &store,
        ExpectedRevision::Exact(1),
        2,
        "§3.5 idempotent retry with Exact",
    )
    .await;
}

/// §3.5: repeating a `NoStream` append with the same ids returns the first result and
/// writes nothing (the stream now exists, yet the retry is recognised).
pub async fn retry_with_no_stream_returns_the_first_result<S: TestStore>(store: S) {
    check_retry(
        &store,
        ExpectedRevision::NoStream,
        0,
        "§3.5 idempotent retry with NoStream",
    )
    .await;
}

/// §3.5: repeating an `Any` append with the same ids returns the first result and writes
/// nothing: ids are looked up for every kind of expected revision.
pub async fn retry_with_any_returns_the_first_result<S: TestStore>(store: S) {
    check_retry(
        &store,
        ExpectedRevision::Any,
        1,
        "§3.5 idempotent retry with Any",
    )
    .await;
}

/// §3.5: repeating a `StreamExists` append with the same ids returns the first result
/// and writes nothing.
pub async fn retry_with_stream_exists_returns_the_first_result<S: TestStore>(store: S) {
    check_retry(
        &store,
        ExpectedRevision::StreamExists,
        1,
        "§3.5 idempotent retry with StreamExists",
    )
    .await;
}

/// §3.5: a retry is recognised after later appends, to its stream and others, because
/// ids are looked up in the store itself.
pub async fn retry_after_later_appends_is_recognised<S: TestStore>(store: S) {
    let rule = "§3.5 a retry is recognised however late";
    let s = name("late-1");
    let a = events(2);
    let ra = append(&store, &s, ExpectedRevision::NoStream, a.clone()).await;
    let b = events(1);
    let rb = append(&store, &s, ExpectedRevision::Exact(1), b.clone()).await;
    for i in 0..5 {
        append(&store, &s, ExpectedRevision::Any, events(1)).await;
        append(
            &store,
            &name(&format!("late-{}", i + 2)),
            ExpectedRevision::Any,
            events(2),
        )
        .await;
    }
    let len = all(&store).await.len();
    assert_eq!(
        append(&store, &s, ExpectedRevision::NoStream, a).await,
        ra,
        "{rule}"
    );
    assert_eq!(
        append(&store, &s, ExpectedRevision::Exact(1), b.clone()).await,
        rb,
        "{rule}"
    );
    assert_eq!(
        append(&store, &s, ExpectedRevision::Any, b).await,
        rb,
        "{rule}"
    );
    assert_all_len(&store, len, rule).await;
}

fn assert_duplicate(
    result: Result<AppendResult, AppendError>,
    stored: &[RecordedEvent],
    rule: &str,
) {
    match result {
        Err(AppendError::DuplicateEventId {
            event_id,
            existing_stream,
            existing_revision,
        }) => {
            let Some(e) = stored.iter().find(|e| e.id == event_id) else {
                panic!(
                    "{rule}: DuplicateEventId names {event_id}, which is not one of the stored ids"
                );
            };
            assert_eq!(
                existing_stream, e.stream,
                "{rule}: names where the id is stored"
            );
            assert_eq!(
                existing_revision, e.revision,
                "{rule}: names where the id is stored"
            );
        }
        other => panic!("{rule}: expected DuplicateEventId, got {other:?}"),
    }
}

/// §3.5: an append repeating only some stored ids (mixed with new ones) is
/// `DuplicateEventId`, naming a stored id and where it is stored; nothing is written.
pub async fn retry_with_partial_overlap_is_duplicate_event_id<S: TestStore>(store: S) {
    let rule = "§3.5 a partial overlap is DuplicateEventId";
    let s = name("overlap-1");
    let a = events(2);
    append(&store, &s, ExpectedRevision::NoStream, a.clone()).await;
    let stored = read(&store, &s).await;
    let mixed = vec![a[0].clone(), event("New", 9)];
    let r = store.append(&s, ExpectedRevision::Any, mixed).await;
    assert_duplicate(r, &stored, rule);
    let mixed = vec![event("New", 9), a[1].clone()];
    let r = store.append(&s, ExpectedRevision::Any, mixed).await;
    assert_duplicate(r, &stored, rule);
    let more = vec![a[0].clone(), a[1].clone(), event("New", 9)];
    let r = store.append(&s, ExpectedRevision::Exact(1), more).await;
    assert_duplicate(r, &stored, rule);
    assert_all_len(&store, 2, rule).await;
}

/// §3.5: ids stored in another stream are `DuplicateEventId` naming that stream.
pub async fn retry_in_another_stream_is_duplicate_event_id<S: TestStore>(store: S) {
    let rule = "§3.5 ids are unique in the whole store";
    let a = events(2);
    append(
        &store,
        &name("home-1"),
        ExpectedRevision::NoStream,
        a.clone(),
    )
    .await;
    let stored = all(&store).await;
    for expected in [ExpectedRevision::NoStream, ExpectedRevision::Any] {
        let r = store.append(&name("away-1"), expected, a.clone()).await;
        assert_duplicate(r, &stored, rule);
    }
    assert_all_len(&store, 2, rule).await;
    assert_not_found(&store, &name("away-1"), rule).await;
}

/// §3.5: the same ids in another order are `DuplicateEventId`, not a retry.
pub async fn retry_out_of_order_is_duplicate_event_id<S: TestStore>(store: S) {
    let rule = "§3.5 a retry repeats the ids in order";
    let s = name("order-x");
    let a = events(3);
    append(&store, &s, ExpectedRevision::NoStream, a.clone()).await;
    let stored = read(&store, &s).await;
    let mut reversed = a;
    reversed.reverse();
    let r = store.append(&s, ExpectedRevision::Any, reversed).await;
    assert_duplicate(r, &stored, rule);
    assert_all_len(&store, 3, rule).await;
}

/// §3.5: the same ids with an expected revision that does not agree with where they were
/// written is `WrongExpectedRevision` (with the stream's actual revision).
pub async fn retry_with_a_wrong_expected_revision_is_refused<S: TestStore>(store: S) {
    let rule = "§3.5 a retry's expected revision must agree";
    let s = name("agree-1");
    let a = events(2);
    append(&store, &s, ExpectedRevision::NoStream, a.clone()).await;
    let b = events(1);
    append(&store, &s, ExpectedRevision::Exact(1), b.clone()).await;
    let actual = CurrentRevision::Current(2);
    for wrong in [ExpectedRevision::Exact(0), ExpectedRevision::Exact(5)] {
        let r = store.append(&s, wrong, a.clone()).await;
        assert_wrong_expected(r, &s, wrong, actual, rule);
    }
    let r = store
        .append(&s, ExpectedRevision::NoStream, b.clone())
        .await;
    assert_wrong_expected(r, &s, ExpectedRevision::NoStream, actual, rule);
    let r = store.append(&s, ExpectedRevision::Exact(2), b).await;
    assert_wrong_expected(r, &s, ExpectedRevision::Exact(2), actual, rule);
    assert_all_len(&store, 3, rule).await;
}

/// §3.1, §3.5: a refused append stores no ids, so sending the same events again with
/// the right expectation writes them.
pub async fn ids_of_a_refused_append_are_not_stored<S: TestStore>(store: S) {
    let rule = "§3.1 a failed append writes nothing, ids included";
    let s = name("refused-1");
    let a = events(2);
    let r = store
        .append(&s, ExpectedRevision::Exact(3), a.clone())
        .await;
    assert_wrong_expected(
        r,
        &s,
        ExpectedRevision::Exact(3),
        CurrentRevision::NoStream,
        rule,
    );
    let r = append(&store, &s, ExpectedRevision::NoStream, a.clone()).await;
    assert_eq!(r.next_expected_revision, 1, "{rule}");
    assert_eq!(ids(&read(&store, &s).await), ids_of_new(&a), "{rule}");
}

// ---------------------------------------------------------------------------------------
// §4 Reading streams
// ---------------------------------------------------------------------------------------

async fn ten_events<S: TestStore>(store: &S, stream: &StreamName) -> Vec<Uuid> {
    let mut out = Vec::new();
    for _ in 0..5 {
        let batch = events(2);
        out.extend(ids_of_new(&batch));
        append(store, stream, ExpectedRevision::Any, batch).await;
        append(store, &name("noise-1"), ExpectedRevision::Any, events(1)).await;
    }
    out
}

/// §4: reading forwards returns the stream's events in revision order, and only that
/// stream's.
pub async fn read_stream_forwards_returns_events_in_revision_order<S: TestStore>(store: S) {
    let rule = "§4 read_stream forwards is in revision order";
    let s = name("rs-1");
    let want = ten_events(&store, &s).await;
    let got = read(&store, &s).await;
    assert_eq!(ids(&got), want, "{rule}");
    assert_eq!(revisions(&got), (0..10).collect::<Vec<_>>(), "{rule}");
    assert!(
        got.iter().all(|e| e.stream == s),
        "{rule}: only that stream"
    );
}

/// §4: reading backwards returns the newest event first.
pub async fn read_stream_backwards_returns_newest_first<S: TestStore>(store: S) {
    let rule = "§4 read_stream backwards is newest first";
    let s = name("rs-2");
    let mut want = ten_events(&store, &s).await;
    want.reverse();
    let got = read_with(&store, &s, ReadStreamOptions::backwards()).await;
    assert_eq!(ids(&got), want, "{rule}");
}

/// §4: `from` is inclusive in both directions.
pub async fn read_stream_from_revision_is_inclusive<S: TestStore>(store: S) {
    let rule = "§4 read_stream from a revision is inclusive";
    let s = name("rs-3");
    ten_events(&store, &s).await;
    let got = read_with(&store, &s, ReadStreamOptions::forwards().from_revision(4)).await;
    assert_eq!(
        revisions(&got),
        (4..10).collect::<Vec<_>>(),
        "{rule}: forwards"
    );
    let got = read_with(&store, &s, ReadStreamOptions::backwards().from_revision(4)).await;
    assert_eq!(revisions(&got), [4, 3, 2, 1, 0], "{rule}: backwards");
    let got = read_with(&store, &s, ReadStreamOptions::forwards().from_revision(0)).await;
    assert_eq!(got.len(), 10, "{rule}: from 0");
    let got = read_with(&store, &s, ReadStreamOptions::backwards().from_revision(0)).await;
    assert_eq!(revisions(&got), [0], "{rule}: backwards from 0");
}

/// §4: `max_count` caps the number of events returned, in both directions and with
/// `from`.
pub async fn read_stream_max_count_limits_the_result<S: TestStore>(store: S) {
    let rule = "§4 read_stream returns at most max_count events";
    let s = name("rs-4");
    ten_events(&store, &s).await;
    let got = read_with(&store, &s, ReadStreamOptions::forwards().max_count(3)).await;
    assert_eq!(revisions(&got), [0, 1, 2], "{rule}");
    let got = read_with(&store, &s, ReadStreamOptions::backwards().max_count(3)).await;
    assert_eq!(revisions(&got), [9, 8, 7], "{rule}");
    let opts = ReadStreamOptions::forwards().from_revision(8).max_count(5);
    assert_eq!(
        revisions(&read_with(&store, &s, opts).await),
        [8, 9],
        "{rule}"
    );
    let opts = ReadStreamOptions::backwards().from_revision(5).max_count(2);
    assert_eq!(
        revisions(&read_with(&store, &s, opts).await),
        [5, 4],
        "{rule}"
    );
}

/// §4: `max_count` 0 returns no events (and is not an error).
pub async fn read_stream_max_count_zero_returns_nothing<S: TestStore>(store: S) {
    let rule = "§4 max_count 0 returns nothing";
    let s = name("rs-5");
    append(&store, &s, ExpectedRevision::NoStream, events(3)).await;
    for opts in [
        ReadStreamOptions::forwards(),
        ReadStreamOptions::backwards(),
    ] {
        assert!(
            read_with(&store, &s, opts.max_count(0)).await.is_empty(),
            "{rule}"
        );
    }
    let r = store
        .read_all(ReadAllOptions::forwards().max_count(0))
        .await
        .expect("read_all");
    assert!(r.is_empty(), "{rule}: read_all too");
}

/// §4: a stream that was never written is `StreamNotFound`, naming it.
pub async fn read_stream_of_a_missing_stream_is_not_found<S: TestStore>(store: S) {
    let rule = "§4 a never-written stream is StreamNotFound";
    append(
        &store,
        &name("there-1"),
        ExpectedRevision::NoStream,
        events(1),
    )
    .await;
    assert_not_found(&store, &name("missing-1"), rule).await;
    assert_not_found(&store, &name("there"), rule).await;
    assert_not_found(&store, &name("there-10"), rule).await;
}

/// §4: reading forwards past the end returns no events; reading backwards from beyond
/// the end starts at the last event.
pub async fn read_stream_beyond_the_end_is_empty<S: TestStore>(store: S) {
    let rule = "§4 reading past the end returns no events";
    let s = name("rs-6");
    append(&store, &s, ExpectedRevision::NoStream, events(3)).await;
    for from in [3, 4, 1000, u64::MAX] {
        let got = read_with(
            &store,
            &s,
            ReadStreamOptions::forwards().from_revision(from),
        )
        .await;
        assert!(
            got.is_empty(),
            "{rule}: forwards from {from} got {} events",
            got.len()
        );
    }
    for from in [3, 1000, u64::MAX] {
        let got = read_with(
            &store,
            &s,
            ReadStreamOptions::backwards().from_revision(from),
        )
        .await;
        assert_eq!(revisions(&got), [2, 1, 0], "{rule}: backwards from {from}");
    }
}

/// §4: streams whose names share a prefix (`a-1`, `a-10`) do not mix.
pub async fn read_stream_does_not_mix_streams_sharing_a_prefix<S: TestStore>(store: S) {
    let rule = "§4 read_stream returns that stream only";
    for s in ["mix-1", "mix-10", "mix-1-0", "mix-1"] {
        append(&store, &name(s), ExpectedRevision::Any, events(1)).await;
    }
    assert_eq!(read(&store, &name("mix-1")).await.len(), 2, "{rule}");
    assert_eq!(read(&store, &name("mix-10")).await.len(), 1, "{rule}");
    assert_eq!(read(&store, &name("mix-1-0")).await.len(), 1, "{rule}");
}

// ---------------------------------------------------------------------------------------
// §4 Reading $all and categories
// ---------------------------------------------------------------------------------------

/// §4: `$all` of an empty store is empty in both directions.
pub async fn read_all_of_an_empty_store_is_empty<S: TestStore>(store: S) {
    let rule = "§4 an empty store has an empty $all";
    assert!(all(&store).await.is_empty(), "{rule}");
    assert!(
        all_with(&store, ReadAllOptions::backwards())
            .await
            .is_empty(),
        "{rule}"
    );
    let opts = ReadAllOptions::backwards().from_position(Position::new(u128::from(u64::MAX)));
    assert!(all_with(&store, opts).await.is_empty(), "{rule}");
}

async fn mixed_log<S: TestStore>(store: &S) -> Vec<RecordedEvent> {
    let plan = [
        ("account-1", "Opened"),
        ("order-1", "Placed"),
        ("account-2", "Opened"),
        ("account-1", "Deposited"),
        ("accounting-1", "Booked"),
        ("order-2", "Placed"),
        ("account-2", "Deposited"),
        ("order-1", "Shipped"),
        ("account-1", "Withdrawn"),
        ("account", "Opened"),
    ];
    for (i, (s, t)) in plan.iter().enumerate() {
        append(
            store,
            &name(s),
            ExpectedRevision::Any,
            vec![event(t, i as u64)],
        )
        .await;
    }
    let log = all(store).await;
    assert_eq!(log.len(), plan.len(), "§4 $all holds every committed event");
    log
}

/// §4: `$all` forwards holds every committed event, in commit order.
pub async fn read_all_forwards_is_commit_order<S: TestStore>(store: S) {
    let rule = "§4 $all is in commit order";
    let log = mixed_log(&store).await;
    let got: Vec<u64> = log
        .iter()
        .map(|e| {
            e.json::<serde_json::Value>().expect("json")["n"]
                .as_u64()
                .expect("n")
        })
        .collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>(), "{rule}");
    assert_strictly_increasing(&log, rule);
}

/// §4: `$all` backwards is the reverse of forwards.
pub async fn read_all_backwards_is_reverse_commit_order<S: TestStore>(store: S) {
    let rule = "§4 $all backwards is newest first";
    let log = mixed_log(&store).await;
    let mut want = ids(&log);
    want.reverse();
    assert_eq!(
        ids(&all_with(&store, ReadAllOptions::backwards()).await),
        want,
        "{rule}"
    );
}

/// §4: `from` is an inclusive position in both directions; a position between two
/// events (`p.next()`) starts after `p`.
pub async fn read_all_from_position_is_inclusive<S: TestStore>(store: S) {
    let rule = "§4 read_all from a position is inclusive";
    let log = mixed_log(&store).await;
    let p = log[3].position;
    let got = all_with(&store, ReadAllOptions::forwards().from_position(p)).await;
    assert_eq!(ids(&got), ids(&log[3..]), "{rule}: forwards");
    let got = all_with(&store, ReadAllOptions::backwards().from_position(p)).await;
    let mut want = ids(&log[..4]);
    want.reverse();
    assert_eq!(ids(&got), want, "{rule}: backwards");
    let got = all_with(&store, ReadAllOptions::forwards().from_position(p.next())).await;
    assert_eq!(ids(&got), ids(&log[4..]), "{rule}: forwards from after p");
    let last = log[9].position;
    let got = all_with(
        &store,
        ReadAllOptions::forwards().from_position(last.next()),
    )
    .await;
    assert!(got.is_empty(), "{rule}: past the end");
    let got = all_with(
        &store,
        ReadAllOptions::backwards().from_position(last.next()),
    )
    .await;
    assert_eq!(got.len(), 10, "{rule}: backwards from past the end");
    let got = all_with(
        &store,
        ReadAllOptions::forwards().from_position(Position::ZERO),
    )
    .await;
    assert_eq!(got.len(), 10, "{rule}: from ZERO");
    let huge = Position::new(u128::MAX);
    let got = all_with(&store, ReadAllOptions::forwards().from_position(huge)).await;
    assert!(got.is_empty(), "{rule}: forwards from the largest position");
    let got = all_with(&store, ReadAllOptions::backwards().from_position(huge)).await;
    assert_eq!(got.len(), 10, "{rule}: backwards from the largest position");
}

/// §4: `max_count` caps `$all` reads, in both directions.
pub async fn read_all_max_count_limits_the_result<S: TestStore>(store: S) {
    let rule = "§4 read_all returns at most max_count events";
    let log = mixed_log(&store).await;
    let got = all_with(&store, ReadAllOptions::forwards().max_count(4)).await;
    assert_eq!(ids(&got), ids(&log[..4]), "{rule}");
    let got = all_with(&store, ReadAllOptions::backwards().max_count(2)).await;
    assert_eq!(ids(&got), [log[9].id, log[8].id], "{rule}");
    let opts = ReadAllOptions::forwards()
        .from_position(log[8].position)
        .max_count(5);
    assert_eq!(all_with(&store, opts).await.len(), 2, "{rule}");
}

/// §4: the stream-prefix filter is a plain, case-sensitive prefix match (`_` and `%`
/// are not wildcards).
pub async fn read_all_filters_by_stream_prefix<S: TestStore>(store: S) {
    let rule = "§4 the prefix filter keeps names starting with the prefix";
    for s in [
        "pre-1", "pre-10", "prefix-1", "Pre-1", "p_e-1", "pXe-1", "p%-1", "p-1",
    ] {
        append(&store, &name(s), ExpectedRevision::Any, events(1)).await;
    }
    let cases: [(&str, &[&str]); 6] = [
        ("pre-1", &["pre-1", "pre-10"]),
        ("pre", &["pre-1", "pre-10", "prefix-1"]),
        ("p_", &["p_e-1"]),
        ("p%", &["p%-1"]),
        ("Pre", &["Pre-1"]),
        (
            "",
            &[
                "pre-1", "pre-10", "prefix-1", "Pre-1", "p_e-1", "pXe-1", "p%-1", "p-1",
            ],
        ),
    ];
    for (prefix, want) in cases {
        let opts = ReadAllOptions::forwards().filter(EventFilter::stream_prefix(prefix));
        assert_eq!(
            streams_of(&all_with(&store, opts).await),
            want,
            "{rule}: prefix {prefix:?}"
        );
    }
}

/// `EventStore::list_streams`: every stream with an event, deleted and tombstoned ones
/// too, in byte order, by plain prefix, after a name, at most `limit`; a stream with
/// only metadata has no event and is not listed.
pub async fn list_streams_names_written_streams_in_byte_order<S: TestStore>(store: S) {
    let rule = "list_streams lists written streams by prefix in byte order";
    for s in [
        "pre-2", "pre-10", "Pre-1", "p_e-1", "pXe-1", "prefix-1", "z-1",
    ] {
        append(&store, &name(s), ExpectedRevision::Any, events(1)).await;
    }
    store
        .delete_stream(&name("pre-10"), ExpectedRevision::Any)
        .await
        .expect("delete");
    store
        .tombstone_stream(&name("z-1"), ExpectedRevision::Any)
        .await
        .expect("tombstone");
    store
        .set_stream_metadata(&name("pre-meta"), StreamMetadata::default())
        .await
        .expect("metadata");
    let list = |prefix: &'static str, after: Option<&'static str>, limit: usize| {
        let store = store.clone();
        async move {
            let after = after.map(name);
            store
                .list_streams(prefix, after.as_ref(), limit)
                .await
                .expect("list_streams")
                .into_iter()
                .map(|n| n.as_str().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list("", None, 100).await,
        [
            "Pre-1", "pXe-1", "p_e-1", "pre-10", "pre-2", "prefix-1", "z-1"
        ],
        "{rule}"
    );
    assert_eq!(
        list("pre", None, 100).await,
        ["pre-10", "pre-2", "prefix-1"],
        "{rule}"
    );
    assert_eq!(list("pre-", None, 100).await, ["pre-10", "pre-2"], "{rule}");
    assert_eq!(
        list("p_", None, 100).await,
        ["p_e-1"],
        "{rule}: `_` is no wildcard"
    );
    assert_eq!(
        list("pre", Some("pre-10"), 100).await,
        ["pre-2", "prefix-1"],
        "{rule}"
    );
    assert_eq!(list("", Some("pre-2"), 1).await, ["prefix-1"], "{rule}");
    assert_eq!(list("", None, 2).await, ["Pre-1", "pXe-1"], "{rule}");
    assert!(list("nothing", None, 10).await.is_empty(), "{rule}");
}

/// §4: the category filter keeps streams whose category (part before the first `-`)
/// equals it exactly, case-sensitively.
pub async fn read_all_filters_by_category<S: TestStore>(store: S) {
    let rule = "§4 the category filter";
    let log = mixed_log(&store).await;
    append(&store, &name("Account-9"), ExpectedRevision::Any, events(1)).await;
    let opts = ReadAllOptions::forwards().filter(EventFilter::category("account").expect("valid"));
    let got = all_with(&store, opts).await;
    let want: Vec<Uuid> = log
        .iter()
        .filter(|e| e.stream.category() == "account")
        .map(|e| e.id)
        .collect();
    assert_eq!(ids(&got), want, "{rule}");
    assert!(
        streams_of(&got).contains(&"account".to_owned()),
        "{rule}: a name without `-`"
    );
}

/// §4: the event-type filter keeps events whose type is any of the list.
pub async fn read_all_filters_by_event_types<S: TestStore>(store: S) {
    let rule = "§4 the type filter keeps any of the listed types";
    let log = mixed_log(&store).await;
    let f = EventFilter::all().with_types(["Opened", "Shipped", "Unknown"]);
    let got = all_with(&store, ReadAllOptions::forwards().filter(f)).await;
    let want: Vec<Uuid> = log
        .iter()
        .filter(|e| ["Opened", "Shipped"].contains(&e.event_type.as_str()))
        .map(|e| e.id)
        .collect();
    assert_eq!(ids(&got), want, "{rule}");
    let f = EventFilter::all().with_types(["opened"]);
    assert!(
        all_with(&store, ReadAllOptions::forwards().filter(f))
            .await
            .is_empty(),
        "{rule}: types are case-sensitive"
    );
}

/// §4: every condition set in a filter must hold (prefix, category, types, group), in
/// both directions.
pub async fn read_all_filters_combine<S: TestStore>(store: S) {
    let rule = "§4 filter conditions combine with AND";
    let log = mixed_log(&store).await;
    let group = ConsumerGroup::new(0, 1).expect("valid group");
    let f = EventFilter::category("account")
        .expect("valid")
        .with_types(["Opened", "Deposited", "Booked"])
        .with_consumer_group(group);
    let f = EventFilter {
        stream_prefix: Some("account-1".to_owned()),
        ..f
    };
    let want: Vec<Uuid> = log
        .iter()
        .filter(|e| f.matches(e.stream.as_str(), &e.event_type))
        .map(|e| e.id)
        .collect();
    assert_eq!(want.len(), 2, "the kit's own fixture");
    let got = all_with(&store, ReadAllOptions::forwards().filter(f.clone())).await;
    assert_eq!(ids(&got), want, "{rule}");
    let got = all_with(&store, ReadAllOptions::backwards().filter(f)).await;
    assert_eq!(ids(&got), [want[1], want[0]], "{rule}: backwards");
}

/// §4: with a filter, `max_count` counts matching events, not scanned ones.
pub async fn read_all_filtered_max_count_counts_matching_events<S: TestStore>(store: S) {
    let rule = "§4 max_count counts returned events";
    for i in 0..30 {
        let s = if i % 10 == 9 { "rare-1" } else { "common-1" };
        append(&store, &name(s), ExpectedRevision::Any, events(1)).await;
    }
    let f = EventFilter::category("rare").expect("valid");
    let got = all_with(
        &store,
        ReadAllOptions::forwards().filter(f.clone()).max_count(2),
    )
    .await;
    assert_eq!(revisions(&got), [0, 1], "{rule}");
    let got = all_with(&store, ReadAllOptions::backwards().filter(f).max_count(2)).await;
    assert_eq!(revisions(&got), [2, 1], "{rule}");
}

/// §4, §6: `$all` and category reads still return events of soft-deleted, tombstoned
/// and metadata-truncated streams.
pub async fn read_all_includes_deleted_tombstoned_and_truncated_streams<S: TestStore>(store: S) {
    let rule = "§6 deletes and tombstones do not remove events from $all";
    let (d, t, m) = (name("gone-1"), name("gone-2"), name("gone-3"));
    for s in [&d, &t, &m] {
        append(&store, s, ExpectedRevision::NoStream, events(2)).await;
    }
    store
        .delete_stream(&d, ExpectedRevision::Any)
        .await
        .expect("delete");
    store
        .tombstone_stream(&t, ExpectedRevision::Any)
        .await
        .expect("tombstone");
    let meta = StreamMetadata {
        max_count: Some(0),
        ..StreamMetadata::default()
    };
    store.set_stream_metadata(&m, meta).await.expect("metadata");
    assert_all_len(&store, 6, rule).await;
    let got = category(&store, "gone", ReadAllOptions::forwards()).await;
    assert_eq!(got.len(), 6, "{rule}: category reads too");
}

/// §4: a consumer group with `member >= size` or `size == 0` is `InvalidConsumerGroup`.
pub async fn read_all_with_an_invalid_consumer_group_is_refused<S: TestStore>(store: S) {
    let rule = "§4 consumer groups need 0 <= member < size";
    append(&store, &name("g-1"), ExpectedRevision::Any, events(1)).await;
    for (member, size) in [(3, 3), (0, 0), (5, 2)] {
        let f = EventFilter::all().with_consumer_group(ConsumerGroup { member, size });
        let r = store
            .read_all(ReadAllOptions::forwards().filter(f.clone()))
            .await;
        assert!(
            matches!(r, Err(ReadError::InvalidConsumerGroup { member: m, size: s }) if m == member && s == size),
            "{rule}: read_all got {r:?}"
        );
        let opts = ReadAllOptions::forwards().filter(f);
        let r = store.read_category("g", opts).await;
        assert!(
            matches!(r, Err(ReadError::InvalidConsumerGroup { .. })),
            "{rule}: read_category got {r:?}"
        );
    }
}

/// §4: a category filter with an invalid category is `InvalidName`.
pub async fn read_all_with_an_invalid_category_filter_is_refused<S: TestStore>(store: S) {
    let rule = "§4 a category filter must be a valid category";
    for bad in ["a-b", "", "$x"] {
        let f = EventFilter {
            category: Some(bad.to_owned()),
            ..EventFilter::default()
        };
        let r = store.read_all(ReadAllOptions::forwards().filter(f)).await;
        assert!(
            matches!(r, Err(ReadError::InvalidName(_))),
            "{rule}: {bad:?} got {r:?}"
        );
    }
}

/// §4: `read_category` returns the category's events in global order, with `from`,
/// direction and `max_count` as for `$all`.
pub async fn read_category_returns_that_category_in_global_order<S: TestStore>(store: S) {
    let rule = "§4 read_category is $all restricted to one category";
    let log = mixed_log(&store).await;
    let want: Vec<&RecordedEvent> = log
        .iter()
        .filter(|e| e.stream.category() == "order")
        .collect();
    let got = category(&store, "order", ReadAllOptions::forwards()).await;
    assert_eq!(
        ids(&got),
        want.iter().map(|e| e.id).collect::<Vec<_>>(),
        "{rule}"
    );
    let opts = ReadAllOptions::backwards()
        .from_position(want[1].position)
        .max_count(5);
    let got = category(&store, "order", opts).await;
    assert_eq!(
        ids(&got),
        [want[1].id, want[0].id],
        "{rule}: backwards from a position"
    );
    let opts = ReadAllOptions::forwards()
        .max_count(1)
        .filter(EventFilter::all().with_types(["Shipped"]));
    let got = category(&store, "order", opts).await;
    assert_eq!(ids(&got), [want[2].id], "{rule}: with a type filter");
}

/// §4 (consumer groups): the members of a group partition the category's streams
/// exactly as `ConsumerGroup::contains` / `group_hash` of the id say; each member sees
/// its streams' events in global order.
pub async fn consumer_group_members_partition_the_category<S: TestStore>(store: S) {
    let rule = "§4 consumer groups partition a category by group_hash(id) mod size";
    for round in 0..2 {
        for i in 0..16 {
            append(
                &store,
                &name(&format!("cg-{i}")),
                ExpectedRevision::Any,
                vec![event("E", round)],
            )
            .await;
        }
    }
    append(&store, &name("cg-x-y"), ExpectedRevision::Any, events(1)).await;
    append(&store, &name("other-1"), ExpectedRevision::Any, events(1)).await;
    let whole = category(&store, "cg", ReadAllOptions::forwards()).await;
    assert_eq!(whole.len(), 33);
    let size = 3;
    let mut seen = Vec::new();
    for member in 0..size {
        let g = ConsumerGroup::new(member, size).expect("valid group");
        let opts = ReadAllOptions::forwards().filter(EventFilter::all().with_consumer_group(g));
        let got = category(&store, "cg", opts).await;
        let want: Vec<Uuid> = whole
            .iter()
            .filter(|e| group_hash(e.stream.id()) % u64::from(size) == u64::from(member))
            .map(|e| e.id)
            .collect();
        assert!(got.iter().all(|e| g.contains(e.stream.as_str())), "{rule}");
        assert_eq!(ids(&got), want, "{rule}: member {member}");
        seen.extend(ids(&got));
    }
    seen.sort();
    let mut all_ids = ids(&whole);
    all_ids.sort();
    assert_eq!(seen, all_ids, "{rule}: every event at exactly one member");
    let g = ConsumerGroup::new(0, 1).expect("valid group");
    let opts = ReadAllOptions::forwards().filter(EventFilter::all().with_consumer_group(g));
    assert_eq!(
        category(&store, "cg", opts).await.len(),
        33,
        "{rule}: a group of one sees all"
    );
}

// ---------------------------------------------------------------------------------------
// §6 Deleting
// ---------------------------------------------------------------------------------------

/// §6: after a soft delete, reads say `StreamNotFound`.
pub async fn delete_stream_makes_reads_not_found<S: TestStore>(store: S) {
    let rule = "§6 a soft-deleted stream reads as StreamNotFound";
    let s = name("del-1");
    append(&store, &s, ExpectedRevision::NoStream, events(3)).await;
    store
        .delete_stream(&s, ExpectedRevision::Exact(2))
        .await
        .expect("delete");
    assert_not_found(&store, &s, rule).await;
}

/// §6: a soft delete checks the expected revision like an append and fails with
/// `DeleteError::WrongExpectedRevision { stream, expected, actual }`, changing nothing.
pub async fn delete_stream_checks_the_expected_revision<S: TestStore>(store: S) {
    let rule = "§6 a delete checks the expected revision";
    let s = name("del-2");
    append(&store, &s, ExpectedRevision::NoStream, events(2)).await;
    for wrong in [ExpectedRevision::Exact(0), ExpectedRevision::NoStream] {
        match store.delete_stream(&s, wrong).await {
            Err(DeleteError::WrongExpectedRevision {
                stream,
                expected,
                actual,
            }) => {
                assert_eq!(
                    (stream, expected, actual),
                    (s.clone(), wrong, CurrentRevision::Current(1)),
                    "{rule}"
                );
            }
            other => panic!("{rule}: expected WrongExpectedRevision, got {other:?}"),
        }
    }
    assert_eq!(read(&store, &s).await.len(), 2, "{rule}: nothing deleted");
    store
        .delete_stream(&s, ExpectedRevision::StreamExists)
        .await
        .expect("delete");
    match store.delete_stream(&s, ExpectedRevision::Exact(1)).await {
        Err(DeleteError::WrongExpectedRevision { actual, .. }) => {
            assert_eq!(
                actual,
                CurrentRevision::NoStream,
                "{rule}: a deleted stream is NoStream"
            );
        }
        other => panic!("{rule}: expected WrongExpectedRevision, got {other:?}"),
    }
    match store
        .delete_stream(&name("del-never"), ExpectedRevision::StreamExists)
        .await
    {
        Err(DeleteError::WrongExpectedRevision { actual, .. }) => {
            assert_eq!(actual, CurrentRevision::NoStream, "{rule}");
        }
        other => panic!("{rule}: StreamExists on a missing stream, got {other:?}"),
    }
}

/// §6: an append after a soft delete continues after the last revision (`NoStream` and
/// `Any` match), reads show only the new events, and `Exact(old last)` no longer
/// matches.
pub async fn append_after_delete_continues_after_the_last_revision<S: TestStore>(store: S) {
    let rule = "§6 a deleted stream starts again after its last revision";
    let s = name("del-3");
    append(&store, &s, ExpectedRevision::NoStream, events(5)).await;
    store
        .delete_stream(&s, ExpectedRevision::Exact(4))
        .await
        .expect("delete");
    let r = store
        .append(&s, ExpectedRevision::Exact(4), events(1))
        .await;
    assert_wrong_expected(
        r,
        &s,
        ExpectedRevision::Exact(4),
        CurrentRevision::NoStream,
        rule,
    );
    let batch = events(2);
    let r = append(&store, &s, ExpectedRevision::NoStream, batch.clone()).await;
    assert_eq!(r.next_expected_revision, 6, "{rule}");
    let got = read(&store, &s).await;
    assert_eq!(ids(&got), ids_of_new(&batch), "{rule}: only the new events");
    assert_eq!(revisions(&got), [5, 6], "{rule}");
    store
        .delete_stream(&s, ExpectedRevision::Exact(6))
        .await
        .expect("delete again");
    let r = append(&store, &s, ExpectedRevision::Any, events(1)).await;
    assert_eq!(r.next_expected_revision, 7, "{rule}: Any too");
    assert_eq!(revisions(&read(&store, &s).await), [7], "{rule}");
    let back = read_with(&store, &s, ReadStreamOptions::backwards().from_revision(6)).await;
    assert!(
        back.is_empty(),
        "{rule}: deleted revisions stay hidden backwards"
    );
}

/// §6: soft-deleted events stay in `$all`, with their revisions.
pub async fn delete_stream_keeps_events_in_all<S: TestStore>(store: S) {
    let rule = "§6 a delete does not remove events from $all";
    let s = name("del-4");
    let batch = events(3);
    append(&store, &s, ExpectedRevision::NoStream, batch.clone()).await;
    store
        .delete_stream(&s, ExpectedRevision::Any)
        .await
        .expect("delete");
    let log = all(&store).await;
    assert_eq!(ids(&log), ids_of_new(&batch), "{rule}");
    assert_eq!(revisions(&log), [0, 1, 2], "{rule}");
}

/// §6: deleting a stream that does not exist with `Any` or `NoStream` does nothing and
/// succeeds; the stream then starts at revision 0.
pub async fn delete_of_a_missing_stream_succeeds_and_does_nothing<S: TestStore>(store: S) {
    let rule = "§6 deleting a missing stream with Any or NoStream succeeds";
    let s = name("del-5");
    store
        .delete_stream(&s, ExpectedRevision::Any)
        .await
        .expect(rule);
    store
        .delete_stream(&s, ExpectedRevision::NoStream)
        .await
        .expect(rule);
    assert_not_found(&store, &s, rule).await;
    assert_all_len(&store, 0, rule).await;
    assert_eq!(store.head_position().await.expect("head"), None, "{rule}");
    let r = append(&store, &s, ExpectedRevision::NoStream, events(1)).await;
    assert_eq!(r.next_expected_revision, 0, "{rule}");
}

// ---------------------------------------------------------------------------------------
// §6 Tombstones
// ---------------------------------------------------------------------------------------

async fn assert_read_tombstoned<S: TestStore>(store: &S, stream: &StreamName, rule: &str) {
    for options in [
        ReadStreamOptions::forwards(),
        ReadStreamOptions::backwards().max_count(1),
    ] {
        match store.read_stream(stream, options).await {
            Err(ReadError::StreamTombstoned { stream: s }) => assert_eq!(&s, stream, "{rule}"),
            other => panic!("{rule}: reading {stream} should be StreamTombstoned, got {other:?}"),
        }
    }
}

fn assert_append_tombstoned(r: Result<AppendResult, AppendError>, stream: &StreamName, rule: &str) {
    match r {
        Err(AppendError::StreamTombstoned { stream: s }) => assert_eq!(&s, stream, "{rule}"),
        other => panic!("{rule}: appending to {stream} should be StreamTombstoned, got {other:?}"),
    }
}

/// §6: reading a tombstoned stream is `ReadError::StreamTombstoned`.
pub async fn tombstone_makes_reads_fail<S: TestStore>(store: S) {
    let rule = "§6 a tombstoned stream reads as StreamTombstoned";
    let s = name("tomb-1");
    append(&store, &s, ExpectedRevision::NoStream, events(2)).await;
    store
        .tombstone_stream(&s, ExpectedRevision::Exact(1))
        .await
        .expect("tombstone");
    assert_read_tombstoned(&store, &s, rule).await;
}

/// §3.6, §6: a tombstoned stream refuses every append, whatever the expectation, and
/// idempotent retries of earlier appends too.
pub async fn tombstone_refuses_appends_and_retries<S: TestStore>(store: S) {
    let rule = "§3.6 a tombstoned stream refuses every append, retries included";
    let s = name("tomb-2");
    let batch = events(2);
    append(&store, &s, ExpectedRevision::NoStream, batch.clone()).await;
    store
        .tombstone_stream(&s, ExpectedRevision::Any)
        .await
        .expect("tombstone");
    for expected in [
        ExpectedRevision::Any,
        ExpectedRevision::NoStream,
        ExpectedRevision::StreamExists,
        ExpectedRevision::Exact(1),
    ] {
        let r = store.append(&s, expected, events(1)).await;
        assert_append_tombstoned(r, &s, rule);
    }
    let r = store.append(&s, ExpectedRevision::NoStream, batch).await;
    assert_append_tombstoned(r, &s, rule);
    assert_all_len(&store, 2, rule).await;
}

/// §6: deleting or tombstoning a tombstoned stream is `DeleteError::StreamTombstoned`.
pub async fn tombstone_refuses_delete_and_a_second_tombstone<S: TestStore>(store: S) {
    let rule = "§6 a tombstoned stream cannot be deleted again";
    let s = name("tomb-3");
    append(&store, &s, ExpectedRevision::NoStream, events(1)).await;
    store
        .tombstone_stream(&s, ExpectedRevision::Exact(0))
        .await
        .expect("tombstone");
    let r = store.delete_stream(&s, ExpectedRevision::Any).await;
    assert!(
        matches!(&r, Err(DeleteError::StreamTombstoned { stream }) if *stream == s),
        "{rule}: delete got {r:?}"
    );
    let r = store.tombstone_stream(&s, ExpectedRevision::Any).await;
    assert!(
        matches!(&r, Err(DeleteError::StreamTombstoned { stream }) if *stream == s),
        "{rule}: tombstone got {r:?}"
    );
}

/// §6, §7: a tombstoned stream's metadata can be neither read nor set
/// (`MetadataError::StreamTombstoned`).
pub async fn tombstone_refuses_metadata<S: TestStore>(store: S) {
    let rule = "§7 metadata is refused on a tombstoned stream";
    let s = name("tomb-4");
    append(&store, &s, ExpectedRevision::NoStream, events(1)).await;
    store
        .tombstone_stream(&s, ExpectedRevision::Any)
        .await
        .expect("tombstone");
    let r = store.stream_metadata(&s).await;
    assert!(
        matches!(&r, Err(MetadataError::StreamTombstoned { stream }) if *stream == s),
        "{rule}: get got {r:?}"
    );
    let r = store
        .set_stream_metadata(&s, StreamMetadata::default())
        .await;
    assert!(
        matches!(&r, Err(MetadataError::StreamTombstoned { stream }) if *stream == s),
        "{rule}: set got {r:?}"
    );
}

/// §6: a stream that was never written (or was soft-deleted) can be tombstoned,
/// reserving the name for good.
pub async fn tombstone_of_a_never_written_stream_reserves_the_name<S: TestStore>(store: S) {
    let rule = "§6 a never-written stream can be tombstoned";
    let s = name("tomb-5");
    store
        .tombstone_stream(&s, ExpectedRevision::NoStream)
        .await
        .expect(rule);
    assert_read_tombstoned(&store, &s, rule).await;
    let r = store
        .append(&s, ExpectedRevision::NoStream, events(1))
        .await;
    assert_append_tombstoned(r, &s, rule);
    let d = name("tomb-6");
    append(&store, &d, ExpectedRevision::NoStream, events(1)).await;
    store
        .delete_stream(&d, ExpectedRevision::Any)
        .await
        .expect("delete");
    store
        .tombstone_stream(&d, ExpectedRevision::NoStream)
        .await
        .expect(rule);
    assert_read_tombstoned(&store, &d, rule).await;
}

/// §6: a tombstone checks the expected revision; a refused tombstone changes nothing.
pub async fn tombstone_checks_the_expected_revision<S: TestStore>(store: S) {
    let rule = "§6 a tombstone checks the expected revision";
    let s = name("tomb-7");
    append(&store, &s, ExpectedRevision::NoStream, events(2)).await;
    match store.tombstone_stream(&s, ExpectedRevision::Exact(0)).await {
        Err(DeleteError::WrongExpectedRevision {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(
                (stream, expected, actual),
                (
                    s.clone(),
                    ExpectedRevision::Exact(0),
                    CurrentRevision::Current(1)
                ),
                "{rule}"
            );
        }
        other => panic!("{rule}: expected WrongExpectedRevision, got {other:?}"),
    }
    append(&store, &s, ExpectedRevision::Exact(1), events(1)).await;
    assert_eq!(read(&store, &s).await.len(), 3, "{rule}: still writable");
}

/// §6: tombstoned events stay in `$all`.
pub async fn tombstone_keeps_events_in_all<S: TestStore>(store: S) {
    let rule = "§6 a tombstone does not remove events from $all";
    let s = name("tomb-8");
    let batch = events(2);
    append(&store, &s, ExpectedRevision::NoStream, batch.clone()).await;
    store
        .tombstone_stream(&s, ExpectedRevision::Any)
        .await
        .expect("tombstone");
    assert_eq!(ids(&all(&store).await), ids_of_new(&batch), "{rule}");
    let f = EventFilter::stream_prefix("tomb-8");
    assert_eq!(
        all_with(&store, ReadAllOptions::backwards().filter(f))
            .await
            .len(),
        2,
        "{rule}"
    );
}

// ---------------------------------------------------------------------------------------
// §7 Stream metadata
// ---------------------------------------------------------------------------------------

/// §7: a stream's metadata is `None` until set, for existing and missing streams.
pub async fn metadata_is_none_by_default<S: TestStore>(store: S) {
    let rule = "§7 metadata is None until set";
    let s = name("md-1");
    assert_eq!(
        store.stream_metadata(&s).await.expect("get"),
        None,
        "{rule}"
    );
    append(&store, &s, ExpectedRevision::NoStream, events(1)).await;
    assert_eq!(
        store.stream_metadata(&s).await.expect("get"),
        None,
        "{rule}"
    );
}

/// §7: metadata round-trips, custom JSON included, and a second set replaces the first.
pub async fn metadata_round_trips_and_is_replaced<S: TestStore>(store: S) {
    let rule = "§7 set_stream_metadata replaces the metadata";
    let s = name("md-2");
    append(&store, &s, ExpectedRevision::NoStream, events(3)).await;
    let mut custom = serde_json::Map::new();
    custom.insert(
        "owner".into(),
        serde_json::json!({"team": "ledger", "ids": [1, 2]}),
    );
    let first = StreamMetadata {
        max_count: Some(2),
        max_age_secs: Some(86_400),
        truncate_before: Some(1),
        custom,
    };
    store
        .set_stream_metadata(&s, first.clone())
        .await
        .expect("set");
    assert_eq!(
        store.stream_metadata(&s).await.expect("get"),
        Some(first),
        "{rule}"
    );
    let second = StreamMetadata {
        truncate_before: Some(2),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&s, second.clone())
        .await
        .expect("set");
    assert_eq!(
        store.stream_metadata(&s).await.expect("get"),
        Some(second),
        "{rule}: replaced, not merged"
    );
    assert_eq!(
        revisions(&read(&store, &s).await),
        [2],
        "{rule}: reads follow the new metadata"
    );
}

/// §7: metadata can be set before a stream exists; the stream still reads as missing,
/// and its limits apply once it is written.
pub async fn metadata_can_be_set_before_the_stream_exists<S: TestStore>(store: S) {
    let rule = "§7 metadata can be set before the stream exists";
    let s = name("md-3");
    let meta = StreamMetadata {
        max_count: Some(1),
        ..StreamMetadata::default()
    };
    store
        .set_stream_metadata(&s, meta.clone())
        .await
        .expect(rule);
    assert_eq!(
        store.stream_metadata(&s).await.expect("get"),
        Some(meta),
        "{rule}"
    );
    assert_not_found(&store, &s, rule).await;
    let r = append(&store, &s, ExpectedRevision::NoStream, events(3)).await;
    assert_eq!(
        r.next_expected_revision, 2,
        "{rule}: metadata is not an event"
    );
    assert_eq!(revisions(&read(&store, &s).await), [2], "{rule}");
    assert_eq!(
        store.head_position().await.expect("head"),
        Some(r.position),
        "{rule}"
    );
}

/// §7: `max_count` leaves only the last n events visible to stream reads (both
/// directions, with `from`), not to `$all`; the window moves as events are appended.
pub async fn metadata_max_count_limits_stream_reads<S: TestStore>(store: S) {
    let rule = "§7 max_count keeps the last n events visible";
    let s = name("md-4");
    append(&store, &s, ExpectedRevision::NoStream, events(5)).await;
    let meta = StreamMetadata {
        max_count: Some(2),
        ..StreamMetadata::default()
    };
    store.set_stream_metadata(&s, meta).await.expect("set");
    assert_eq!(revisions(&read(&store, &s).await), [3, 4], "{rule}");
    assert_eq!(
        revisions(&read_with(&store, &s, ReadStreamOptions::backwards()).await),
        [4, 3],
        "{rule}"
    );
    let opts = ReadStreamOptions::forwards().from_revision(1).max_count(1);
    assert_eq!(
        revisions(&read_with(&store, &s, opts).await),
        [3],
        "{rule}: from a hidden revision"
    );
    let opts = ReadStreamOptions::backwards().from_revision(2);
    assert!(
        read_with(&store, &s, opts).await.is_empty(),
        "{rule}: backwards from a hidden revision"
    );
    append(&store, &s, ExpectedRevision::Exact(4), events(1)).await;
    assert_eq!(
        revisions(&read(&store, &s).await),
        [4, 5],
        "{rule}: the window moves"
    );
    assert_all_len(&store, 6, rule).await;
}

/// §7: `truncate_before` hides revisions below it from stream reads (both directions),
/// not from `$all`.
pub async fn metadata_truncate_before_hides_earlier_revisions<S: TestStore>(store: S) {
    let rule = "§7 truncate_before hides earlier revisions";
    let s = name("md-5");
    append(&store, &s, ExpectedRevision::NoStream, events(5)).await;
    let meta = StreamMetadata {
        truncate_before: Some(3),
        ..StreamMetadata::default()
    };
    store.set_stream_metadata(&s, meta).await.expect("set");
    assert_eq!(revisions(&read(&store, &s).await), [3, 4], "{rule}");
    assert_eq!(
        revisions(&read_with(&store, &s, ReadStreamOptions::backwards()).await),
        [4, 3],
        "{rule}"
    );
    let opts = ReadStreamOptions::backwards().from_revision(3).max_count(5);
    assert_eq!(revisions(&read_with(&store, &s, opts).await), [3], "{rule}");
    assert_all_len(&store, 5, rule).await;
}

/// §7: `max_age_secs` hides events recorded longer ago than that from stream reads.
pub async fn metadata_max_age_hides_old_events<S: TestStore>(store: S) {
    let rule = "§7 max_age_secs hides old events";
    let s = name("md-6");
    append(&store, &s, ExpectedRevision::NoStream, events(2)).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    append(&store, &s, ExpectedRevision::Exact(1), events(1)).await;
    let meta = StreamMetadata {
        max_age_secs: Some(2),
        ..StreamMetadata::default()
    };
    store.set_stream_metadata(&s, meta).await.expect("set");
    assert_eq!(revisions(&read(&store, &s).await), [2], "{rule}");
    assert_eq!(
        revisions(&read_with(&store, &s, ReadStreamOptions::backwards()).await),
        [2],
        "{rule}"
    );
    let meta = StreamMetadata {
        max_age_secs: Some(3_600),
        ..StreamMetadata::default()
    };
    store.set_stream_metadata(&s, meta).await.expect("set");
    assert_eq!(
        read(&store, &s).await.len(),
        3,
        "{rule}: a generous age shows everything"
    );
    assert_all_len(&store, 3, rule).await;
}

/// §7: metadata limits hide events but not the stream: a stream whose events are all
/// hidden reads as empty, not missing, and appends still see its real revision.
pub async fn metadata_limits_hide_events_but_not_the_stream<S: TestStore>(store: S) {
    let rule = "§7 limits hide events from reads only";
    let s = name("md-7");
    append(&store, &s, ExpectedRevision::NoStream, events(3)).await;
    let meta = StreamMetadata {
        truncate_before: Some(10),
        ..StreamMetadata::default()
    };
    store.set_stream_metadata(&s, meta).await.expect("set");
    assert!(read(&store, &s).await.is_empty(), "{rule}");
    let r = store
        .append(&s, ExpectedRevision::NoStream, events(1))
        .await;
    assert_wrong_expected(
        r,
        &s,
        ExpectedRevision::NoStream,
        CurrentRevision::Current(2),
        rule,
    );
    let r = append(&store, &s, ExpectedRevision::Exact(2), events(1)).await;
    assert_eq!(r.next_expected_revision, 3, "{rule}");
}

/// §7: extreme limits are honoured without overflow: a huge `max_age_secs` or
/// `max_count` hides nothing, a huge `truncate_before` hides everything.
pub async fn metadata_with_extreme_limits_is_honoured<S: TestStore>(store: S) {
    let rule = "§7 extreme metadata limits";
    let s = name("md-8");
    append(&store, &s, ExpectedRevision::NoStream, events(3)).await;
    for age in [
        u64::MAX,
        i64::MAX as u64,
        10_000_000_000_000_000,
        9_300_000_000_000_000,
    ] {
        let meta = StreamMetadata {
            max_age_secs: Some(age),
            ..StreamMetadata::default()
        };
        store.set_stream_metadata(&s, meta).await.expect("set");
        assert_eq!(
            read(&store, &s).await.len(),
            3,
            "{rule}: max_age_secs {age}"
        );
    }
    let meta = StreamMetadata {
        max_count: Some(u64::MAX),
        ..StreamMetadata::default()
    };
    store.set_stream_metadata(&s, meta).await.expect("set");
    assert_eq!(
        read(&store, &s).await.len(),
        3,
        "{rule}: max_count u64::MAX"
    );
    let meta = StreamMetadata {
        truncate_before: Some(u64::MAX),
        ..StreamMetadata::default()
    };
    store.set_stream_metadata(&s, meta).await.expect("set");
    assert!(
        read(&store, &s).await.is_empty(),
        "{rule}: truncate_before u64::MAX"
    );
    let back = read_with(&store, &s, ReadStreamOptions::backwards()).await;
    assert!(
        back.is_empty(),
        "{rule}: truncate_before u64::MAX, backwards"
    );
}

// ---------------------------------------------------------------------------------------
// §5 The head position
// ---------------------------------------------------------------------------------------

/// §5: `head_position` is `None` for an empty store.
pub async fn head_position_is_none_for_an_empty_store<S: TestStore>(store: S) {
    assert_eq!(
        store.head_position().await.expect("head"),
        None,
        "§5 an empty store has no head"
    );
}

/// §5: `head_position` is the position of the last committed event; refused appends,
/// retries, deletes, tombstones and metadata do not move it.
pub async fn head_position_is_the_last_appended_position<S: TestStore>(store: S) {
    let rule = "§5 head_position is the last committed event";
    let s = name("head-1");
    let batch = events(2);
    let r1 = append(&store, &s, ExpectedRevision::NoStream, batch.clone()).await;
    assert_eq!(
        store.head_position().await.expect("head"),
        Some(r1.position),
        "{rule}"
    );
    let r2 = append(
        &store,
        &name("head-2"),
        ExpectedRevision::NoStream,
        events(3),
    )
    .await;
    assert_eq!(
        store.head_position().await.expect("head"),
        Some(r2.position),
        "{rule}"
    );
    let _ = store
        .append(&s, ExpectedRevision::NoStream, events(1))
        .await;
    append(&store, &s, ExpectedRevision::NoStream, batch).await;
    store
        .delete_stream(&s, ExpectedRevision::Any)
        .await
        .expect("delete");
    store
        .tombstone_stream(&name("head-2"), ExpectedRevision::Any)
        .await
        .expect("tombstone");
    store
        .set_stream_metadata(&name("head-3"), StreamMetadata::default())
        .await
        .expect("metadata");
    assert_eq!(
        store.head_position().await.expect("head"),
        Some(r2.position),
        "{rule}: unchanged"
    );
    let last = all(&store).await.pop().expect("events");
    assert_eq!(last.position, r2.position, "{rule}");
}

// ---------------------------------------------------------------------------------------
// §8 Subscriptions
// ---------------------------------------------------------------------------------------

/// §8: a subscription to `$all` from `Start` delivers the history, then new events as
/// they commit, in order, each once.
pub async fn subscribe_to_all_from_start_catches_up_then_goes_live<S: TestStore>(store: S) {
    let rule = "§8 subscribe_to_all(Start) catches up, then goes live";
    let mut want = Vec::new();
    for s in ["sub-1", "sub-2", "sub-1"] {
        let batch = events(2);
        want.extend(ids_of_new(&batch));
        append(&store, &name(s), ExpectedRevision::Any, batch).await;
    }
    let mut sub = subscribe_all(&store, SubscribeFrom::Start, EventFilter::all()).await;
    let got = take(&mut sub, 6, rule).await;
    assert_eq!(ids(&got), want, "{rule}: history");
    for s in ["sub-2", "sub-3"] {
        let batch = events(2);
        want.extend(ids_of_new(&batch));
        append(&store, &name(s), ExpectedRevision::Any, batch).await;
    }
    let live = take(&mut sub, 4, rule).await;
    assert_eq!(ids(&live), want[6..], "{rule}: live");
    assert_quiet(&mut sub, rule).await;
    let log = all(&store).await;
    let positions: Vec<Position> = got.iter().chain(&live).map(|e| e.position).collect();
    assert_eq!(
        positions,
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        "{rule}: positions as in $all"
    );
}

/// §8: `After(p)` is exclusive: the subscription starts with the event after `p`.
pub async fn subscribe_to_all_after_a_position_is_exclusive<S: TestStore>(store: S) {
    let rule = "§8 After(p) is exclusive";
    append(&store, &name("after-1"), ExpectedRevision::Any, events(5)).await;
    let log = all(&store).await;
    let mut sub = subscribe_all(
        &store,
        SubscribeFrom::After(log[1].position),
        EventFilter::all(),
    )
    .await;
    assert_eq!(
        ids(&take(&mut sub, 3, rule).await),
        ids(&log[2..]),
        "{rule}"
    );
    let mut sub = subscribe_all(
        &store,
        SubscribeFrom::After(log[4].position),
        EventFilter::all(),
    )
    .await;
    assert_quiet(&mut sub, rule).await;
    let batch = events(1);
    append(
        &store,
        &name("after-1"),
        ExpectedRevision::Any,
        batch.clone(),
    )
    .await;
    assert_eq!(next(&mut sub, rule).await.id, batch[0].id, "{rule}");
}

/// §8: `End` delivers only events committed after the call returns.
pub async fn subscribe_to_all_from_end_delivers_only_new_events<S: TestStore>(store: S) {
    let rule = "§8 End delivers only new events";
    append(&store, &name("end-1"), ExpectedRevision::Any, events(3)).await;
    let mut sub = subscribe_all(&store, SubscribeFrom::End, EventFilter::all()).await;
    assert_quiet(&mut sub, rule).await;
    let batch = events(2);
    append(&store, &name("end-2"), ExpectedRevision::Any, batch.clone()).await;
    assert_eq!(
        ids(&take(&mut sub, 2, rule).await),
        ids_of_new(&batch),
        "{rule}"
    );
    assert_quiet(&mut sub, rule).await;
    let mut empty = subscribe_all(&store, SubscribeFrom::End, EventFilter::all()).await;
    let batch = events(1);
    append(&store, &name("end-1"), ExpectedRevision::Any, batch.clone()).await;
    assert_eq!(next(&mut empty, rule).await.id, batch[0].id, "{rule}");
}

/// §8: a filtered subscription delivers exactly the events a filtered `$all` read
/// returns, in history and live.
pub async fn subscribe_to_all_with_a_filter_delivers_only_matching_events<S: TestStore>(store: S) {
    let rule = "§8 a filtered subscription delivers matching events only";
    let log = mixed_log(&store).await;
    let f = EventFilter::category("account")
        .expect("valid")
        .with_types(["Opened", "Deposited"]);
    let want: Vec<Uuid> = log
        .iter()
        .filter(|e| f.matches(e.stream.as_str(), &e.event_type))
        .map(|e| e.id)
        .collect();
    let mut sub = subscribe_all(&store, SubscribeFrom::Start, f.clone()).await;
    assert_eq!(
        ids(&take(&mut sub, want.len(), rule).await),
        want,
        "{rule}: history"
    );
    append(
        &store,
        &name("order-9"),
        ExpectedRevision::Any,
        vec![event("Opened", 0)],
    )
    .await;
    append(
        &store,
        &name("account-9"),
        ExpectedRevision::Any,
        vec![event("Closed", 0)],
    )
    .await;
    let hit = vec![event("Deposited", 0)];
    append(
        &store,
        &name("account-9"),
        ExpectedRevision::Any,
        hit.clone(),
    )
    .await;
    assert_eq!(next(&mut sub, rule).await.id, hit[0].id, "{rule}: live");
    assert_quiet(&mut sub, rule).await;
}

/// §8: a subscription pages through more than one page (512 events) of history and
/// live events without losing or repeating any.
pub async fn subscribe_to_all_pages_through_more_than_a_page<S: TestStore>(store: S) {
    let rule = "§8 catch-up pages lose nothing";
    for i in 0..11 {
        append(
            &store,
            &name(&format!("page-{}", i % 3)),
            ExpectedRevision::Any,
            events(100),
        )
        .await;
    }
    let log = all(&store).await;
    let mut sub = subscribe_all(&store, SubscribeFrom::Start, EventFilter::all()).await;
    let got = take(&mut sub, 1100, rule).await;
    assert_eq!(ids(&got), ids(&log), "{rule}");
    let batch = events(600);
    append(
        &store,
        &name("page-9"),
        ExpectedRevision::Any,
        batch.clone(),
    )
    .await;
    assert_eq!(
        ids(&take(&mut sub, 600, rule).await),
        ids_of_new(&batch),
        "{rule}: a large live append"
    );
    assert_quiet(&mut sub, rule).await;
}

/// §8: a filtered subscription skips more than a page of non-matching events and still
/// delivers the matching ones, in history and live.
pub async fn subscribe_to_all_with_a_filter_skips_many_non_matching_events<S: TestStore>(store: S) {
    let rule = "§8 filtered subscriptions skip non-matching events";
    let first = events(1);
    append(
        &store,
        &name("wanted-1"),
        ExpectedRevision::Any,
        first.clone(),
    )
    .await;
    append(&store, &name("noise-1"), ExpectedRevision::Any, events(700)).await;
    let second = events(1);
    append(
        &store,
        &name("wanted-1"),
        ExpectedRevision::Any,
        second.clone(),
    )
    .await;
    let f = EventFilter::category("wanted").expect("valid");
    let mut sub = subscribe_all(&store, SubscribeFrom::Start, f).await;
    assert_eq!(next(&mut sub, rule).await.id, first[0].id, "{rule}");
    assert_eq!(next(&mut sub, rule).await.id, second[0].id, "{rule}");
    append(&store, &name("noise-1"), ExpectedRevision::Any, events(600)).await;
    let third = events(1);
    append(
        &store,
        &name("wanted-2"),
        ExpectedRevision::Any,
        third.clone(),
    )
    .await;
    assert_eq!(next(&mut sub, rule).await.id, third[0].id, "{rule}: live");
    assert_quiet(&mut sub, rule).await;
}

/// §8: a filtered subscription pages through more than a page of matching events,
/// interleaved with non-matching ones, losing and repeating nothing.
pub async fn subscribe_to_all_with_a_filter_pages_through_many_matching_events<S: TestStore>(
    store: S,
) {
    let rule = "§8 filtered catch-up pages lose nothing";
    for i in 0..13 {
        append(&store, &name("paged-1"), ExpectedRevision::Any, events(100)).await;
        append(
            &store,
            &name(&format!("noise-{i}")),
            ExpectedRevision::Any,
            events(30),
        )
        .await;
    }
    let f = EventFilter::category("paged").expect("valid");
    let want = all_with(&store, ReadAllOptions::forwards().filter(f.clone())).await;
    assert_eq!(want.len(), 1300);
    let mut sub = subscribe_all(&store, SubscribeFrom::Start, f).await;
    let got = take(&mut sub, want.len(), rule).await;
    assert_eq!(ids(&got), ids(&want), "{rule}");
    assert_quiet(&mut sub, rule).await;
}

/// §4, §8: subscribing with an invalid consumer group is refused with
/// `InvalidConsumerGroup`.
pub async fn subscribe_to_all_with_an_invalid_consumer_group_is_refused<S: TestStore>(store: S) {
    let rule = "§8 subscriptions check the consumer group";
    for (member, size) in [(2, 2), (0, 0)] {
        let f = EventFilter::all().with_consumer_group(ConsumerGroup { member, size });
        let r = store.subscribe_to_all(SubscribeFrom::Start, f).await;
        assert!(
            matches!(r, Err(ReadError::InvalidConsumerGroup { member: m, size: s }) if m == member && s == size),
            "{rule}: got {:?}",
            r.err()
        );
    }
}

/// §4, §8: subscribing with an invalid category filter is refused with `InvalidName`.
pub async fn subscribe_to_all_with_an_invalid_category_is_refused<S: TestStore>(store: S) {
    let rule = "§8 subscriptions check the category";
    let f = EventFilter {
        category: Some("a-b".to_owned()),
        ..EventFilter::default()
    };
    let r = store.subscribe_to_all(SubscribeFrom::Start, f).await;
    assert!(
        matches!(r, Err(ReadError::InvalidName(_))),
        "{rule}: got {:?}",
        r.err()
    );
}

/// §8: a subscription waiting for the next commit wakes for it. The writer appends only
/// after the reader has asked for the next event, twenty times over.
pub async fn subscribe_to_all_wakes_for_each_new_commit<S: TestStore>(store: S) {
    let rule = "§8 a waiting subscription wakes on commit";
    let mut sub = subscribe_all(&store, SubscribeFrom::End, EventFilter::all()).await;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(1);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..20 {
            ready_tx.send(()).await.expect("writer alive");
            got.push(
                next(&mut sub, "§8 a waiting subscription wakes on commit")
                    .await
                    .id,
            );
        }
        got
    });
    let mut want = Vec::new();
    for i in 0..20 {
        ready_rx.recv().await.expect("reader alive");
        let batch = vec![event("Tick", i)];
        want.push(batch[0].id);
        append(&store, &name("wake-1"), ExpectedRevision::Any, batch).await;
    }
    assert_eq!(reader.await.expect("reader task"), want, "{rule}");
}

/// §8: several subscribers to the same store each see every event, once, in order.
pub async fn several_subscribers_each_see_every_event<S: TestStore>(store: S) {
    let rule = "§8 every subscriber sees every event";
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(subscribe_all(&store, SubscribeFrom::Start, EventFilter::all()).await);
    }
    let mut want = Vec::new();
    for i in 0..5 {
        let batch = events(3);
        want.extend(ids_of_new(&batch));
        append(
            &store,
            &name(&format!("many-{}", i % 2)),
            ExpectedRevision::Any,
            batch,
        )
        .await;
    }
    for sub in &mut subs {
        assert_eq!(ids(&take(sub, 15, rule).await), want, "{rule}");
        assert_quiet(sub, rule).await;
    }
}

/// §8: a stream subscription from `Start` delivers the stream's events, then new ones,
/// and nothing of other streams (including `s-10` for `s-1`).
pub async fn subscribe_to_stream_from_start_catches_up_then_goes_live<S: TestStore>(store: S) {
    let rule = "§8 subscribe_to_stream(Start) catches up, then goes live";
    let s = name("ss-1");
    let first = events(3);
    append(&store, &s, ExpectedRevision::NoStream, first.clone()).await;
    append(&store, &name("ss-10"), ExpectedRevision::Any, events(2)).await;
    let mut sub = subscribe_stream(&store, &s, SubscribeStreamFrom::Start).await;
    let got = take(&mut sub, 3, rule).await;
    assert_eq!(ids(&got), ids_of_new(&first), "{rule}: history");
    assert_eq!(revisions(&got), [0, 1, 2], "{rule}");
    append(&store, &name("ss-10"), ExpectedRevision::Any, events(2)).await;
    let live = events(2);
    append(&store, &s, ExpectedRevision::Exact(2), live.clone()).await;
    assert_eq!(
        ids(&take(&mut sub, 2, rule).await),
        ids_of_new(&live),
        "{rule}: live"
    );
    assert_quiet(&mut sub, rule).await;
}

/// §8: a stream subscription `After(r)` starts with revision `r + 1`.
pub async fn subscribe_to_stream_after_a_revision_is_exclusive<S: TestStore>(store: S) {
    let rule = "§8 After(revision) is exclusive";
    let s = name("ss-2");
    append(&store, &s, ExpectedRevision::NoStream, events(4)).await;
    let mut sub = subscribe_stream(&store, &s, SubscribeStreamFrom::After(1)).await;
    assert_eq!(revisions(&take(&mut sub, 2, rule).await), [2, 3], "{rule}");
    assert_quiet(&mut sub, rule).await;
    let mut sub = subscribe_stream(&store, &s, SubscribeStreamFrom::After(3)).await;
    assert_quiet(&mut sub, rule).await;
    append(&store, &s, ExpectedRevision::Exact(3), events(1)).await;
    assert_eq!(next(&mut sub, rule).await.revision, 4, "{rule}");
}

/// §8: a stream subscription from `End` delivers only events appended after the call.
pub async fn subscribe_to_stream_from_end_delivers_only_new_events<S: TestStore>(store: S) {
    let rule = "§8 End delivers only new events";
    let s = name("ss-3");
    append(&store, &s, ExpectedRevision::NoStream, events(3)).await;
    let mut sub = subscribe_stream(&store, &s, SubscribeStreamFrom::End).await;
    assert_quiet(&mut sub, rule).await;
    append(&store, &s, ExpectedRevision::Exact(2), events(1)).await;
    assert_eq!(next(&mut sub, rule).await.revision, 3, "{rule}");
    let mut fresh = subscribe_stream(&store, &name("ss-4"), SubscribeStreamFrom::End).await;
    append(&store, &name("ss-4"), ExpectedRevision::NoStream, events(1)).await;
    assert_eq!(
        next(&mut fresh, rule).await.revision,
        0,
        "{rule}: End on a missing stream"
    );
}

/// §8: a stream subscription waits for a stream that does not exist yet.
pub async fn subscribe_to_stream_waits_for_the_stream_to_exist<S: TestStore>(store: S) {
    let rule = "§8 a stream subscription waits for the stream";
    let s = name("ss-5");
    let mut sub = subscribe_stream(&store, &s, SubscribeStreamFrom::Start).await;
    assert_quiet(&mut sub, rule).await;
    append(&store, &name("ss-50"), ExpectedRevision::Any, events(1)).await;
    assert_quiet(&mut sub, rule).await;
    let batch = events(2);
    append(&store, &s, ExpectedRevision::NoStream, batch.clone()).await;
    assert_eq!(
        ids(&take(&mut sub, 2, rule).await),
        ids_of_new(&batch),
        "{rule}"
    );
}

/// §6, §8: a stream subscription ends with `SubscriptionError::StreamTombstoned` when the
/// stream is tombstoned (live or before subscribing), and yields nothing after it.
pub async fn subscribe_to_stream_ends_when_tombstoned<S: TestStore>(store: S) {
    let rule = "§8 a stream subscription ends with StreamTombstoned";
    let s = name("ss-6");
    append(&store, &s, ExpectedRevision::NoStream, events(1)).await;
    let mut sub = subscribe_stream(&store, &s, SubscribeStreamFrom::Start).await;
    next(&mut sub, rule).await;
    store
        .tombstone_stream(&s, ExpectedRevision::Exact(0))
        .await
        .expect("tombstone");
    for mut sub in [
        sub,
        subscribe_stream(&store, &s, SubscribeStreamFrom::Start).await,
    ] {
        match tokio::time::timeout(WAIT, sub.next()).await {
            Ok(Some(Err(SubscriptionError::StreamTombstoned { stream }))) => {
                assert_eq!(stream, s, "{rule}")
            }
            other => panic!("{rule}: expected StreamTombstoned, got {other:?}"),
        }
        match tokio::time::timeout(WAIT, sub.next()).await {
            Ok(None) => {}
            other => panic!("{rule}: the subscription should end after the error, got {other:?}"),
        }
    }
}

/// §6, §8: subscribing to a tombstoned stream from `End` is refused with
/// `ReadError::StreamTombstoned`, or the subscription ends at once with
/// `SubscriptionError::StreamTombstoned`.
pub async fn subscribe_to_stream_from_end_of_a_tombstoned_stream_ends<S: TestStore>(store: S) {
    let rule = "§6 subscriptions get StreamTombstoned";
    let s = name("ss-9");
    append(&store, &s, ExpectedRevision::NoStream, events(1)).await;
    store
        .tombstone_stream(&s, ExpectedRevision::Any)
        .await
        .expect("tombstone");
    match store
        .subscribe_to_stream(&s, SubscribeStreamFrom::End)
        .await
    {
        Err(ReadError::StreamTombstoned { stream }) => assert_eq!(stream, s, "{rule}"),
        Err(e) => panic!("{rule}: got {e:?}"),
        Ok(mut sub) => match tokio::time::timeout(WAIT, sub.next()).await {
            Ok(Some(Err(SubscriptionError::StreamTombstoned { stream }))) => {
                assert_eq!(stream, s, "{rule}")
            }
            other => panic!("{rule}: expected StreamTombstoned, got {other:?}"),
        },
    }
}

/// §6, §8: a stream subscription on a soft-deleted stream delivers only the events
/// written after the delete.
pub async fn subscribe_to_stream_after_soft_delete_delivers_only_new_events<S: TestStore>(
    store: S,
) {
    let rule = "§8 stream subscriptions honour soft deletes";
    let s = name("ss-7");
    append(&store, &s, ExpectedRevision::NoStream, events(3)).await;
    store
        .delete_stream(&s, ExpectedRevision::Exact(2))
        .await
        .expect("delete");
    let mut sub = subscribe_stream(&store, &s, SubscribeStreamFrom::Start).await;
    assert_quiet(&mut sub, rule).await;
    let batch = events(2);
    append(&store, &s, ExpectedRevision::NoStream, batch.clone()).await;
    let got = take(&mut sub, 2, rule).await;
    assert_eq!(ids(&got), ids_of_new(&batch), "{rule}");
    assert_eq!(revisions(&got), [3, 4], "{rule}");
}

/// §7, §8: a stream subscription honours metadata limits on its catch-up.
pub async fn subscribe_to_stream_honours_metadata<S: TestStore>(store: S) {
    let rule = "§7 stream subscriptions honour metadata";
    let s = name("ss-8");
    append(&store, &s, ExpectedRevision::NoStream, events(5)).await;
    let meta = StreamMetadata {
        truncate_before: Some(3),
        ..StreamMetadata::default()
    };
    store.set_stream_metadata(&s, meta).await.expect("set");
    let mut sub = subscribe_stream(&store, &s, SubscribeStreamFrom::Start).await;
    assert_eq!(revisions(&take(&mut sub, 2, rule).await), [3, 4], "{rule}");
    assert_quiet(&mut sub, rule).await;
}

// ---------------------------------------------------------------------------------------
// Concurrency (§3.4, §3.5, §5, §8)
// ---------------------------------------------------------------------------------------

/// §3.4, §5, §8: 32 writers do read → decide → append with `Exact` on 4 shared streams,
/// retrying on `WrongExpectedRevision`. Every acknowledged append is present exactly once:
/// each stream holds as many events as appends succeeded, at gapless revisions, each
/// counter one above the last (no lost update); `$all` positions strictly increase; and
/// subscribers started before the writers see every event exactly once, in order. A
/// reader tailing `$all` by position while the writers run never skips an event and
/// always finds the head position readable (§5).
pub async fn concurrent_writers_keep_streams_and_subscribers_consistent<S: TestStore>(store: S) {
    const TASKS: usize = 32;
    const STREAMS: usize = 4;
    const INCREMENTS: u64 = 6;
    const MAX_ATTEMPTS: u64 = 10_000;
    let rule = "§3.4 concurrent read-decide-append keeps every acknowledged event";
    let streams: Vec<StreamName> = (0..STREAMS)
        .map(|i| name(&format!("counter-{i}")))
        .collect();
    let filter = EventFilter::category("counter").expect("valid");
    let mut all_sub = subscribe_all(&store, SubscribeFrom::Start, filter).await;
    let mut stream_subs = Vec::new();
    for s in &streams {
        stream_subs.push(subscribe_stream(&store, s, SubscribeStreamFrom::Start).await);
    }
    let successes: Arc<Vec<AtomicU64>> =
        Arc::new((0..STREAMS).map(|_| AtomicU64::new(0)).collect());
    let conflicts = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, stream) = (store.clone(), streams[t % STREAMS].clone());
        let (successes, conflicts, barrier) =
            (successes.clone(), conflicts.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            for _ in 0..INCREMENTS {
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(
                        attempts < MAX_ATTEMPTS,
                        "{rule}: a writer never got through"
                    );
                    let last = store
                        .read_stream(&stream, ReadStreamOptions::backwards().max_count(1))
                        .await;
                    let (expected, counter) = match last {
                        Ok(events) => {
                            let e = events.first().expect("an existing stream has a last event");
                            let v: serde_json::Value = e.json().expect("JSON counter");
                            (
                                ExpectedRevision::Exact(e.revision),
                                v["n"].as_u64().expect("counter"),
                            )
                        }
                        Err(ReadError::StreamNotFound { .. }) => (ExpectedRevision::NoStream, 0),
                        Err(e) => panic!("{rule}: read failed: {e:?}"),
                    };
                    match store
                        .append(&stream, expected, vec![event("Incremented", counter + 1)])
                        .await
                    {
                        Ok(_) => {
                            successes[t % STREAMS].fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Err(AppendError::WrongExpectedRevision { .. }) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("{rule}: append failed: {e:?}"),
                    }
                }
            }
        }));
    }
    // §5, while the writers run: a reader tailing `$all` by position never skips an
    // event, and the head position only moves forward and is always readable.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tail = tokio::spawn(tail_all(store.clone(), done.clone()));
    for t in tasks {
        t.await.expect("writer task panicked");
    }
    done.store(true, Ordering::SeqCst);
    let tailed = tail.await.expect("tailing reader panicked");
    let mut total = 0;
    for (i, s) in streams.iter().enumerate() {
        let got = read(&store, s).await;
        let n = successes[i].load(Ordering::SeqCst);
        assert_eq!(
            got.len() as u64,
            n,
            "{rule}: {s} holds one event per acknowledged append"
        );
        assert_eq!(
            revisions(&got),
            (0..n).collect::<Vec<_>>(),
            "{rule}: gapless revisions"
        );
        for e in &got {
            let v: serde_json::Value = e.json().expect("JSON counter");
            assert_eq!(
                v["n"].as_u64(),
                Some(e.revision + 1),
                "{rule}: no lost update in {s}"
            );
        }
        total += n;
    }
    assert_eq!(total, TASKS as u64 * INCREMENTS, "{rule}");
    let log = all(&store).await;
    assert_eq!(
        log.len() as u64,
        total,
        "{rule}: $all holds every event once"
    );
    assert_strictly_increasing(&log, rule);
    assert_eq!(
        tailed,
        ids(&log),
        "§5 a reader tailing $all while writers commit sees every event, in order"
    );
    let got = take(
        &mut all_sub,
        log.len(),
        "§8 a subscriber sees every concurrent event",
    )
    .await;
    assert_eq!(
        ids(&got),
        ids(&log),
        "§8 the $all subscriber sees every event once, in order"
    );
    assert_quiet(&mut all_sub, "§8 no event is delivered twice").await;
    for (s, sub) in streams.iter().zip(&mut stream_subs) {
        let want = read(&store, s).await;
        let got = take(sub, want.len(), "§8 a stream subscriber sees every event").await;
        assert_eq!(
            ids(&got),
            ids(&want),
            "§8 the {s} subscriber sees every event once, in order"
        );
        assert_quiet(sub, "§8 no event is delivered twice").await;
    }
}

/// Reads `$all` forwards after the last position seen until `done` and one more read
/// finds nothing new, checking the head position on the way (§5). Returns the ids seen.
async fn tail_all<S: TestStore>(store: S, done: Arc<std::sync::atomic::AtomicBool>) -> Vec<Uuid> {
    let rule = "§5 no reader skips an event; head_position is visible";
    let mut seen = Vec::new();
    let mut after: Option<Position> = None;
    let mut last_head: Option<Position> = None;
    loop {
        let finished = done.load(Ordering::SeqCst);
        let head = store.head_position().await.expect("head_position");
        assert!(
            head >= last_head,
            "{rule}: the head moved back from {last_head:?} to {head:?}"
        );
        last_head = head;
        if let Some(h) = head {
            let at = all_with(
                &store,
                ReadAllOptions::backwards().from_position(h).max_count(1),
            )
            .await;
            assert_eq!(
                at.first().map(|e| e.position),
                Some(h),
                "{rule}: the head event is readable"
            );
        }
        let mut opts = ReadAllOptions::forwards().max_count(50);
        opts.from = after.map(Position::next);
        let page = all_with(&store, opts).await;
        if let Some(last) = page.last() {
            after = Some(last.position);
        }
        let empty = page.is_empty();
        seen.extend(ids(&page));
        if finished && empty {
            return seen;
        }
        if empty {
            // Polling, not synchronisation: only paces the reader.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// §3.1: refused appends running beside accepted ones (in one group commit, say) leave
/// no trace and do not disturb their neighbours.
pub async fn concurrent_refused_appends_do_not_affect_others<S: TestStore>(store: S) {
    const TASKS: usize = 16;
    let rule = "§3.1 a refused append does not affect concurrent appends";
    let s = name("mixed-1");
    append(&store, &s, ExpectedRevision::NoStream, events(1)).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, s, barrier) = (store.clone(), s.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let (expected, batch) = match t % 4 {
                0 => (ExpectedRevision::Exact(999), events(2)),
                1 => (
                    ExpectedRevision::Any,
                    vec![NewEvent::raw("T", "{bad", JSON)],
                ),
                _ => (ExpectedRevision::Any, events(2)),
            };
            let ids = ids_of_new(&batch);
            barrier.wait().await;
            (t, ids, store.append(&s, expected, batch).await)
        }));
    }
    let mut written = Vec::new();
    for task in tasks {
        let (t, ids, r) = task.await.expect("task");
        match (t % 4, r) {
            (0, Err(AppendError::WrongExpectedRevision { .. })) => {}
            (1, Err(AppendError::InvalidEvent { .. })) => {}
            (2 | 3, Ok(_)) => written.extend(ids),
            (_, r) => panic!("{rule}: task {t} got {r:?}"),
        }
    }
    let got = read(&store, &s).await;
    assert_eq!(got.len(), 1 + written.len(), "{rule}");
    assert_eq!(
        revisions(&got),
        (0..got.len() as u64).collect::<Vec<_>>(),
        "{rule}"
    );
    let mut got_ids = ids(&got[1..]);
    got_ids.sort();
    written.sort();
    assert_eq!(got_ids, written, "{rule}: exactly the accepted events");
    for pair in got[1..].chunks(2) {
        assert_eq!(
            pair[0].revision + 1,
            pair[1].revision,
            "{rule}: an append's events are consecutive"
        );
    }
}

/// §3.4: of many concurrent `NoStream` appends to one stream, exactly one succeeds; the
/// others get `WrongExpectedRevision` and write nothing.
pub async fn concurrent_no_stream_appends_let_exactly_one_win<S: TestStore>(store: S) {
    const TASKS: usize = 16;
    let rule = "§3.4 exactly one NoStream append wins";
    let s = name("race-1");
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, s, barrier) = (store.clone(), s.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .append(&s, ExpectedRevision::NoStream, events(2))
                .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(r) => {
                wins += 1;
                assert_eq!(r.next_expected_revision, 1, "{rule}");
            }
            Err(AppendError::WrongExpectedRevision { actual, .. }) => {
                assert_eq!(actual, CurrentRevision::Current(1), "{rule}");
            }
            Err(e) => panic!("{rule}: unexpected error {e:?}"),
        }
    }
    assert_eq!(wins, 1, "{rule}");
    assert_all_len(&store, 2, rule).await;
}

/// §3.5: identical appends sent concurrently (a client retrying while the first attempt
/// is in flight) are written once; every one gets the same result.
pub async fn concurrent_identical_retries_write_once<S: TestStore>(store: S) {
    const TASKS: usize = 8;
    let rule = "§3.5 concurrent retries write once";
    let s = name("retry-race-1");
    let batch = events(3);
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, s, batch, barrier) = (store.clone(), s.clone(), batch.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.append(&s, ExpectedRevision::NoStream, batch).await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Ok(r) => results.push(r),
            Err(e) => panic!("{rule}: every identical append succeeds, got {e:?}"),
        }
    }
    assert!(
        results.windows(2).all(|w| w[0] == w[1]),
        "{rule}: one result {results:?}"
    );
    assert_eq!(ids(&all(&store).await), ids_of_new(&batch), "{rule}");
}

/// Calls `$callback!($($args)* ; <every case name>)`. Not public API: the list the
/// conformance macro expands, kept next to the cases (a unit test checks it is complete).
#[doc(hidden)]
#[macro_export]
macro_rules! __foldstore_for_each_case {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback!($($args)* ;
            stream_name_empty_is_refused,
            stream_name_over_200_bytes_is_refused,
            stream_name_of_200_bytes_is_stored_and_read_back,
            stream_name_with_control_character_is_refused,
            stream_name_starting_with_dollar_is_reserved,
            stream_name_category_is_the_part_before_the_first_dash,
            read_category_with_an_invalid_name_is_refused,
            append_revisions_are_zero_based_and_gapless,
            append_positions_strictly_increase_across_streams,
            append_result_names_the_last_event,
            append_is_atomic,
            expected_any_succeeds_whatever_the_state,
            expected_no_stream_succeeds_on_a_new_stream,
            expected_no_stream_fails_on_an_existing_stream,
            expected_stream_exists_succeeds_on_an_existing_stream,
            expected_stream_exists_fails_without_the_stream,
            expected_exact_succeeds_at_that_revision,
            expected_exact_fails_at_another_revision,
            expected_exact_u64_max_is_refused,
            append_with_no_events_is_refused,
            append_checks_run_in_the_documented_order,
            append_with_empty_event_type_is_refused,
            append_with_event_type_over_200_bytes_is_refused,
            append_with_control_character_in_event_type_is_refused,
            append_with_invalid_json_data_is_refused,
            append_with_empty_content_type_is_refused,
            append_with_other_content_type_stores_bytes_unchanged,
            append_with_duplicate_id_in_one_append_is_refused,
            append_over_16_mib_is_too_large,
            append_size_counts_data_and_metadata_of_all_events,
            event_metadata_round_trips,
            event_data_round_trips_byte_for_byte,
            content_type_round_trips,
            recorded_at_is_utc_and_close_to_now,
            retry_with_exact_returns_the_first_result,
            retry_with_no_stream_returns_the_first_result,
            retry_with_any_returns_the_first_result,
            retry_with_stream_exists_returns_the_first_result,
            retry_after_later_appends_is_recognised,
            retry_with_partial_overlap_is_duplicate_event_id,
            retry_in_another_stream_is_duplicate_event_id,
            retry_out_of_order_is_duplicate_event_id,
            retry_with_a_wrong_expected_revision_is_refused,
            ids_of_a_refused_append_are_not_stored,
            read_stream_forwards_returns_events_in_revision_order,
            read_stream_backwards_returns_newest_first,
            read_stream_from_revision_is_inclusive,
            read_stream_max_count_limits_the_result,
            read_stream_max_count_zero_returns_nothing,
            read_stream_of_a_missing_stream_is_not_found,
            read_stream_beyond_the_end_is_empty,
            read_stream_does_not_mix_streams_sharing_a_prefix,
            read_all_of_an_empty_store_is_empty,
            read_all_forwards_is_commit_order,
            read_all_backwards_is_reverse_commit_order,
            read_all_from_position_is_inclusive,
            read_all_max_count_limits_the_result,
            read_all_filters_by_stream_prefix,
            list_streams_names_written_streams_in_byte_order,
            read_all_filters_by_category,
            read_all_filters_by_event_types,
            read_all_filters_combine,
            read_all_filtered_max_count_counts_matching_events,
            read_all_includes_deleted_tombstoned_and_truncated_streams,
            read_all_with_an_invalid_consumer_group_is_refused,
            read_all_with_an_invalid_category_filter_is_refused,
            read_category_returns_that_category_in_global_order,
            consumer_group_members_partition_the_category,
            delete_stream_makes_reads_not_found,
            delete_stream_checks_the_expected_revision,
            append_after_delete_continues_after_the_last_revision,
            delete_stream_keeps_events_in_all,
            delete_of_a_missing_stream_succeeds_and_does_nothing,
            tombstone_makes_reads_fail,
            tombstone_refuses_appends_and_retries,
            tombstone_refuses_delete_and_a_second_tombstone,
            tombstone_refuses_metadata,
            tombstone_of_a_never_written_stream_reserves_the_name,
            tombstone_checks_the_expected_revision,
            tombstone_keeps_events_in_all,
            metadata_is_none_by_default,
            metadata_round_trips_and_is_replaced,
            metadata_can_be_set_before_the_stream_exists,
            metadata_max_count_limits_stream_reads,
            metadata_truncate_before_hides_earlier_revisions,
            metadata_max_age_hides_old_events,
            metadata_limits_hide_events_but_not_the_stream,
            metadata_with_extreme_limits_is_honoured,
            head_position_is_none_for_an_empty_store,
            head_position_is_the_last_appended_position,
            subscribe_to_all_from_start_catches_up_then_goes_live,
            subscribe_to_all_after_a_position_is_exclusive,
            subscribe_to_all_from_end_delivers_only_new_events,
            subscribe_to_all_with_a_filter_delivers_only_matching_events,
            subscribe_to_all_pages_through_more_than_a_page,
            subscribe_to_all_with_a_filter_skips_many_non_matching_events,
            subscribe_to_all_with_a_filter_pages_through_many_matching_events,
            subscribe_to_all_with_an_invalid_consumer_group_is_refused,
            subscribe_to_all_with_an_invalid_category_is_refused,
            subscribe_to_all_wakes_for_each_new_commit,
            several_subscribers_each_see_every_event,
            subscribe_to_stream_from_start_catches_up_then_goes_live,
            subscribe_to_stream_after_a_revision_is_exclusive,
            subscribe_to_stream_from_end_delivers_only_new_events,
            subscribe_to_stream_waits_for_the_stream_to_exist,
            subscribe_to_stream_ends_when_tombstoned,
            subscribe_to_stream_from_end_of_a_tombstoned_stream_ends,
            subscribe_to_stream_after_soft_delete_delivers_only_new_events,
            subscribe_to_stream_honours_metadata,
            concurrent_writers_keep_streams_and_subscribers_consistent,
            concurrent_refused_appends_do_not_affect_others,
            concurrent_no_stream_appends_let_exactly_one_win,
            concurrent_identical_retries_write_once,
            dcb_tags_round_trip_on_reads,
            dcb_tags_round_trip_on_subscriptions,
            dcb_query_item_types_are_alternatives,
            dcb_query_item_tags_must_all_be_present,
            dcb_query_item_without_types_matches_any_type,
            dcb_query_items_are_alternatives,
            dcb_query_all_matches_every_event,
            dcb_read_query_includes_deleted_and_tombstoned_streams,
            dcb_read_query_after_is_exclusive,
            dcb_read_query_limit_pages_through_matches,
            dcb_invalid_tags_on_events_are_refused,
            dcb_invalid_tags_in_queries_are_refused,
            dcb_condition_passes_when_nothing_matches_after,
            dcb_condition_fails_with_the_first_matching_position,
            dcb_condition_ignores_events_that_do_not_match,
            dcb_condition_without_after_is_a_uniqueness_check,
            dcb_condition_on_query_all_fails_on_any_later_event,
            dcb_retry_of_a_conditional_append_returns_the_first_result,
            dcb_condition_is_checked_after_the_expected_revision,
            dcb_concurrent_failing_conditions_do_not_affect_neighbours,
            dcb_concurrent_unique_claims_let_exactly_one_win,
            dcb_concurrent_claims_never_exceed_a_limited_pool,
            snapshot_missing_loads_none,
            snapshot_save_then_load_round_trips,
            snapshot_older_revision_never_replaces_a_newer_one,
            snapshot_of_another_schema_version_replaces,
            snapshot_streams_and_state_types_are_separate,
            snapshot_invalid_state_type_is_refused,
            transaction_writes_every_part_in_order,
            transaction_with_a_refused_part_writes_nothing,
            transaction_checks_each_parts_expected_revision,
            transaction_condition_fails_whole_and_names_the_first_match,
            transaction_retry_returns_the_first_result,
            transaction_is_validated_whole,
            tracking_is_stored_with_the_transaction,
            tracking_not_past_the_stored_position_is_already_processed,
            transaction_checks_run_in_the_documented_order,
            streamless_events_get_a_stream_of_their_own,
            concurrent_transfers_keep_the_total_and_every_revision,
            concurrent_tracking_lets_one_writer_per_position_win,
            concurrent_refused_transactions_do_not_affect_neighbours,
        );
    };
}

/// Defines `CASE_NAMES`. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __foldstore_case_names {
    ( ; $($name:ident),* $(,)?) => {
        /// Every case the conformance macro expands, in its order.
        pub const CASE_NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

__foldstore_for_each_case!(__foldstore_case_names!());

#[cfg(test)]
mod tests {
    /// Every `pub async fn` of this file is listed in `__foldstore_for_each_case!`, so
    /// every backend runs every case.
    #[test]
    fn every_case_is_expanded_by_the_macro() {
        let source = [
            include_str!("cases.rs"),
            include_str!("cases/dcb.rs"),
            include_str!("cases/snapshots.rs"),
            include_str!("cases/transactions.rs"),
        ]
        .concat();
        let defined: Vec<&str> = source
            .lines()
            .filter_map(|l| l.strip_prefix("pub async fn "))
            .filter_map(|l| l.split('<').next())
            .collect();
        assert_eq!(defined, super::CASE_NAMES);
        assert!(defined.len() >= 60);
    }
}
