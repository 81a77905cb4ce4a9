//! §13 Transactions: several streams, a condition and tracking, all or nothing; events
//! without a stream.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use uuid::Uuid;

use super::{TestStore, all, append, event, ids, ids_of_new, name, read};
use crate::dcb::{AppendCondition, Query, QueryItem, ReadQueryOptions};
use crate::transaction::{AppendTransaction, StreamAppend, TransactionResult};
use crate::{
    AppendError, CurrentRevision, ExpectedRevision, InvalidEvent, NewEvent, Position, ReadError,
    StreamName,
};

fn tagged(event_type: &str, n: u64, tags: &[&str]) -> NewEvent {
    event(event_type, n).with_tags(tags.iter().copied())
}

fn tags_query(tags: &[&str]) -> Query {
    Query::from_items([QueryItem::new().tags(tags.iter().copied())])
}

async fn commit<S: TestStore>(store: &S, tx: AppendTransaction, rule: &str) -> TransactionResult {
    match store.append_transaction(tx.clone()).await {
        Ok(r) => r,
        Err(e) => panic!("{rule}: the transaction {tx:?} should succeed, got: {e:?}"),
    }
}

async fn tracking<S: TestStore>(store: &S, source: &str) -> Option<Position> {
    match store.tracking(source).await {
        Ok(p) => p,
        Err(e) => panic!("tracking({source:?}) should succeed, got: {e:?}"),
    }
}

fn revisions_of(result: &TransactionResult) -> Vec<(String, u64)> {
    result
        .streams
        .iter()
        .map(|s| (s.stream.to_string(), s.next_expected_revision))
        .collect()
}

/// §13.1: the parts are written in order, each to its stream at its revisions; the
/// events follow each other in `$all`, part after part; the result names each part's
/// last revision and the first and last positions.
pub async fn transaction_writes_every_part_in_order<S: TestStore>(store: S) {
    let rule = "§13.1 a transaction writes every part, in order";
    let (a, b) = (name("order-1"), name("stock-7"));
    append(
        &store,
        &b,
        ExpectedRevision::NoStream,
        vec![event("Stocked", 0)],
    )
    .await;
    let events_a = vec![event("Placed", 1), event("Priced", 2)];
    let events_b = vec![event("Reserved", 3)];
    let loose = vec![tagged("Noted", 4, &["order:1"])];
    let written: Vec<Uuid> = [&events_a, &events_b, &loose]
        .into_iter()
        .flat_map(|e| ids_of_new(e))
        .collect();
    let tx = AppendTransaction::new()
        .stream(a.clone(), ExpectedRevision::NoStream, events_a)
        .stream(b.clone(), ExpectedRevision::Exact(0), events_b)
        .without_stream(loose);
    let dcb = tx.parts[2].stream.clone();
    let r = commit(&store, tx, rule).await;
    assert_eq!(
        revisions_of(&r),
        [
            ("order-1".to_owned(), 1),
            ("stock-7".to_owned(), 1),
            (dcb.to_string(), 0)
        ],
        "{rule}: each part's last revision"
    );
    let log = all(&store).await;
    assert_eq!(ids(&log[1..]), written, "{rule}: part after part in $all");
    assert_eq!(r.first_position, Some(log[1].position), "{rule}: first");
    assert_eq!(r.last_position, Some(log[4].position), "{rule}: last");
    assert_eq!(read(&store, &a).await.len(), 2, "{rule}");
    let stock = read(&store, &b).await;
    assert_eq!(
        stock.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [0, 1],
        "{rule}: the part continues its stream"
    );
}

/// §13.1: when one part is refused (a wrong expected revision, a tombstoned stream), the
/// whole transaction is refused with that part's error and nothing of it is written.
pub async fn transaction_with_a_refused_part_writes_nothing<S: TestStore>(store: S) {
    let rule = "§13.1 a refused part refuses the whole transaction";
    let (a, b, gone) = (name("acct-a"), name("acct-b"), name("acct-gone"));
    append(
        &store,
        &b,
        ExpectedRevision::NoStream,
        vec![event("Opened", 0)],
    )
    .await;
    append(
        &store,
        &gone,
        ExpectedRevision::NoStream,
        vec![event("Opened", 0)],
    )
    .await;
    store
        .tombstone_stream(&gone, ExpectedRevision::Any)
        .await
        .expect("tombstone");
    let before = all(&store).await.len();
    let r = store
        .append_transaction(
            AppendTransaction::new()
                .stream(
                    a.clone(),
                    ExpectedRevision::NoStream,
                    vec![event("Opened", 1)],
                )
                .stream(
                    b.clone(),
                    ExpectedRevision::Exact(5),
                    vec![event("Paid", 2)],
                ),
        )
        .await;
    match r {
        Err(AppendError::WrongExpectedRevision {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, b, "{rule}: names the refused part's stream");
            assert_eq!(expected, ExpectedRevision::Exact(5), "{rule}");
            assert_eq!(actual, CurrentRevision::Current(0), "{rule}");
        }
        other => panic!("{rule}: expected WrongExpectedRevision, got {other:?}"),
    }
    let r = store
        .append_transaction(
            AppendTransaction::new()
                .stream(a.clone(), ExpectedRevision::Any, vec![event("Opened", 3)])
                .stream(gone.clone(), ExpectedRevision::Any, vec![event("Paid", 4)]),
        )
        .await;
    assert!(
        matches!(&r, Err(AppendError::StreamTombstoned { stream }) if *stream == gone),
        "{rule}: got {r:?}"
    );
    assert_eq!(all(&store).await.len(), before, "{rule}: nothing written");
    super::assert_not_found(&store, &a, rule).await;
    // The first refused part's error is the one reported.
    let r = store
        .append_transaction(
            AppendTransaction::new()
                .stream(gone.clone(), ExpectedRevision::Any, vec![event("X", 5)])
                .stream(b.clone(), ExpectedRevision::Exact(5), vec![event("Y", 6)]),
        )
        .await;
    assert!(
        matches!(r, Err(AppendError::StreamTombstoned { .. })),
        "{rule}: parts are checked in order, got {r:?}"
    );
}

/// §13.1: each part's expectation is checked against its own stream (`Exact`,
/// `NoStream`, `StreamExists`, `Any` side by side).
pub async fn transaction_checks_each_parts_expected_revision<S: TestStore>(store: S) {
    let rule = "§13.1 each part has its own expected revision";
    let (a, b, c, d) = (name("p-a"), name("p-b"), name("p-c"), name("p-d"));
    append(&store, &a, ExpectedRevision::NoStream, super::events(3)).await;
    append(&store, &b, ExpectedRevision::NoStream, super::events(1)).await;
    let r = commit(
        &store,
        AppendTransaction::new()
            .stream(a.clone(), ExpectedRevision::Exact(2), vec![event("E", 0)])
            .stream(
                b.clone(),
                ExpectedRevision::StreamExists,
                vec![event("E", 1)],
            )
            .stream(c.clone(), ExpectedRevision::NoStream, vec![event("E", 2)])
            .stream(d.clone(), ExpectedRevision::Any, vec![event("E", 3)]),
        rule,
    )
    .await;
    assert_eq!(
        r.streams
            .iter()
            .map(|s| s.next_expected_revision)
            .collect::<Vec<_>>(),
        [3, 1, 0, 0],
        "{rule}"
    );
    for (expected, bad) in [
        (ExpectedRevision::Exact(2), &a),
        (ExpectedRevision::NoStream, &b),
        (ExpectedRevision::StreamExists, &name("p-never")),
    ] {
        let r = store
            .append_transaction(
                AppendTransaction::new()
                    .stream(c.clone(), ExpectedRevision::Exact(0), vec![event("E", 9)])
                    .stream(bad.clone(), expected, vec![event("E", 9)]),
            )
            .await;
        assert!(
            matches!(&r, Err(AppendError::WrongExpectedRevision { stream, .. }) if stream == bad),
            "{rule}: {expected} on {bad} got {r:?}"
        );
    }
    assert_eq!(all(&store).await.len(), 8, "{rule}: nothing more written");
}

/// §13.2: a failing condition refuses the whole transaction, naming the first matching
/// event after `after`, in any stream; nothing is written. A condition that holds lets
/// every part through.
pub async fn transaction_condition_fails_whole_and_names_the_first_match<S: TestStore>(store: S) {
    let rule = "§13.2 a failing condition refuses the whole transaction";
    let first = append(
        &store,
        &name("course-c1"),
        ExpectedRevision::NoStream,
        vec![tagged("SeatClaimed", 0, &["course:c1"])],
    )
    .await;
    let second = append(
        &store,
        &name("course-c1"),
        ExpectedRevision::Exact(0),
        vec![tagged("SeatClaimed", 1, &["course:c1"])],
    )
    .await;
    let claim = |after: Option<Position>| {
        AppendTransaction::new()
            .stream(
                name("student-ada"),
                ExpectedRevision::Any,
                vec![tagged("Enrolled", 2, &["student:ada"])],
            )
            .stream(
                name("course-c2"),
                ExpectedRevision::Any,
                vec![tagged("SeatClaimed", 3, &["course:c2"])],
            )
            .condition(AppendCondition::new(tags_query(&["course:c1"]), after))
    };
    for (after, first_match) in [
        (None, first.position),
        (Some(first.position), second.position),
    ] {
        match store.append_transaction(claim(after)).await {
            Err(AppendError::ConditionFailed { position }) => {
                assert_eq!(
                    position, first_match,
                    "{rule}: the first match after `after`"
                );
            }
            other => panic!("{rule}: expected ConditionFailed, got {other:?}"),
        }
    }
    assert_eq!(all(&store).await.len(), 2, "{rule}: nothing written");
    let r = commit(&store, claim(Some(second.position)), rule).await;
    assert_eq!(r.streams.len(), 2, "{rule}: a condition that holds");
    assert_eq!(all(&store).await.len(), 4, "{rule}");
}

/// §13.3: retrying a transaction with the same ids (after an unknown outcome) returns
/// the first result and writes nothing, without checking its tracking or condition
/// again; a transaction some of whose parts are stored and others not is
/// `DuplicateEventId`.
pub async fn transaction_retry_returns_the_first_result<S: TestStore>(store: S) {
    let rule = "§13.3 a retried transaction returns the first result";
    let tx = AppendTransaction::new()
        .stream(
            name("cart-1"),
            ExpectedRevision::NoStream,
            vec![tagged("Added", 0, &["sku:1"]), event("Added", 1)],
        )
        .stream(
            name("stock-1"),
            ExpectedRevision::NoStream,
            vec![tagged("Taken", 2, &["sku:1"])],
        )
        .without_stream(vec![tagged("Seen", 3, &["sku:1"])])
        .condition(AppendCondition::new(tags_query(&["sku:1"]), None))
        .tracking("carts", Position::new(10));
    let first = commit(&store, tx.clone(), rule).await;
    let again = commit(&store, tx.clone(), rule).await;
    assert_eq!(again, first, "{rule}");
    assert_eq!(
        ids(&all(&store).await),
        tx.events().map(|e| e.id).collect::<Vec<_>>(),
        "{rule}: written once"
    );
    // Part of it again, with a new part: stored and new ids mixed.
    let mut mixed = tx.clone();
    mixed.parts.truncate(1);
    mixed.tracking = None;
    mixed.condition = None;
    let mixed = mixed.stream(
        name("other-1"),
        ExpectedRevision::Any,
        vec![event("New", 4)],
    );
    match store.append_transaction(mixed).await {
        Err(AppendError::DuplicateEventId {
            event_id,
            existing_stream,
            existing_revision,
        }) => {
            assert_eq!(event_id, tx.parts[0].events[0].id, "{rule}");
            assert_eq!(existing_stream, name("cart-1"), "{rule}");
            assert_eq!(existing_revision, 0, "{rule}");
        }
        other => panic!("{rule}: expected DuplicateEventId, got {other:?}"),
    }
    // One part of a stored transaction retried alone is that part's first result.
    let part = store
        .append(
            &name("stock-1"),
            ExpectedRevision::NoStream,
            tx.parts[1].events.clone(),
        )
        .await
        .expect("a part retried alone");
    assert_eq!(part.next_expected_revision, 0, "{rule}");
    assert_eq!(all(&store).await.len(), 4, "{rule}: nothing more written");
}

/// §13.1: a transaction is checked whole before anything: parts and events (`NoEvents`
/// without events or tracking, or for an empty part; the size limit and event indexes
/// over all parts; ids unique across parts), each stream named once
/// (`DuplicateStream`), the condition's tags and the tracking source.
pub async fn transaction_is_validated_whole<S: TestStore>(store: S) {
    let rule = "§13.1 a transaction is validated whole";
    let (a, b) = (name("v-a"), name("v-b"));
    let r = store.append_transaction(AppendTransaction::new()).await;
    assert!(
        matches!(r, Err(AppendError::NoEvents)),
        "{rule}: empty, got {r:?}"
    );
    let r = store
        .append_transaction(
            AppendTransaction::new()
                .stream(a.clone(), ExpectedRevision::Any, vec![event("E", 0)])
                .stream(b.clone(), ExpectedRevision::Any, vec![]),
        )
        .await;
    assert!(
        matches!(r, Err(AppendError::NoEvents)),
        "{rule}: an empty part, got {r:?}"
    );
    let shared = event("E", 1);
    let r = store
        .append_transaction(
            AppendTransaction::new()
                .stream(
                    a.clone(),
                    ExpectedRevision::Any,
                    vec![event("E", 2), shared.clone()],
                )
                .stream(b.clone(), ExpectedRevision::Any, vec![shared]),
        )
        .await;
    assert!(
        matches!(
            r,
            Err(AppendError::InvalidEvent {
                index: 2,
                reason: InvalidEvent::DuplicateIdInAppend(_)
            })
        ),
        "{rule}: an id in two parts, indexed over all parts, got {r:?}"
    );
    let r = store
        .append_transaction(
            AppendTransaction::new()
                .stream(a.clone(), ExpectedRevision::Any, vec![event("E", 3)])
                .stream(
                    b.clone(),
                    ExpectedRevision::Any,
                    vec![NewEvent::raw("", "{}", crate::JSON)],
                ),
        )
        .await;
    assert!(
        matches!(
            r,
            Err(AppendError::InvalidEvent {
                index: 1,
                reason: InvalidEvent::EmptyType
            })
        ),
        "{rule}: got {r:?}"
    );
    let r = store
        .append_transaction(
            AppendTransaction::new()
                .stream(a.clone(), ExpectedRevision::Any, vec![event("E", 4)])
                .stream(a.clone(), ExpectedRevision::Any, vec![event("E", 5)]),
        )
        .await;
    assert!(
        matches!(&r, Err(AppendError::DuplicateStream { stream }) if *stream == a),
        "{rule}: a stream in two parts, got {r:?}"
    );
    let half = vec![b'x'; super::MIB16 / 2 + 1];
    let big = |n| {
        NewEvent::raw("Big", half.clone(), "application/octet-stream").with_id(Uuid::from_u128(n))
    };
    let r = store
        .append_transaction(
            AppendTransaction::new()
                .stream(a.clone(), ExpectedRevision::Any, vec![big(1)])
                .stream(b.clone(), ExpectedRevision::Any, vec![big(2)]),
        )
        .await;
    assert!(
        matches!(r, Err(AppendError::TooLarge { .. })),
        "{rule}: the limit counts all parts, got {}",
        match &r {
            Ok(_) => "Ok".to_owned(),
            Err(e) => e.to_string(),
        }
    );
    let r = store
        .append_transaction(
            AppendTransaction::new()
                .stream(a.clone(), ExpectedRevision::Any, vec![event("E", 6)])
                .tracking("", Position::new(1)),
        )
        .await;
    assert!(
        matches!(r, Err(AppendError::InvalidTracking(_))),
        "{rule}: an empty tracking source, got {r:?}"
    );
    let r = store
        .append_transaction(
            AppendTransaction::new()
                .stream(a.clone(), ExpectedRevision::Any, vec![event("E", 7)])
                .condition(AppendCondition::new(tags_query(&[""]), None))
                .tracking("s\n", Position::new(1)),
        )
        .await;
    assert!(
        matches!(r, Err(AppendError::InvalidTag(_))),
        "{rule}: the condition's tags before the tracking source, got {r:?}"
    );
    assert!(all(&store).await.is_empty(), "{rule}: nothing written");
}

/// §13.4: tracking is stored with the events and read back by `tracking(source)`;
/// sources are independent; a transaction may carry tracking alone (no events: its
/// result has no positions); an invalid source name is refused on read too.
pub async fn tracking_is_stored_with_the_transaction<S: TestStore>(store: S) {
    let rule = "§13.4 tracking is stored in the same transaction";
    assert_eq!(tracking(&store, "orders").await, None, "{rule}: none yet");
    commit(
        &store,
        AppendTransaction::new()
            .stream(
                name("invoice-1"),
                ExpectedRevision::Any,
                vec![event("Issued", 0)],
            )
            .tracking("orders", Position::new(41)),
        rule,
    )
    .await;
    assert_eq!(
        tracking(&store, "orders").await,
        Some(Position::new(41)),
        "{rule}"
    );
    assert_eq!(
        tracking(&store, "payments").await,
        None,
        "{rule}: per source"
    );
    let alone = commit(
        &store,
        AppendTransaction::new().tracking("payments", Position::new(7)),
        rule,
    )
    .await;
    assert!(alone.streams.is_empty(), "{rule}: tracking alone");
    assert_eq!(alone.first_position, None, "{rule}: no events, no position");
    assert_eq!(alone.last_position, None, "{rule}");
    assert_eq!(
        tracking(&store, "payments").await,
        Some(Position::new(7)),
        "{rule}"
    );
    assert_eq!(
        tracking(&store, "orders").await,
        Some(Position::new(41)),
        "{rule}"
    );
    let big = Position::new(u128::MAX - 1);
    commit(
        &store,
        AppendTransaction::new().tracking("orders", big),
        rule,
    )
    .await;
    assert_eq!(
        tracking(&store, "orders").await,
        Some(big),
        "{rule}: positions are 128-bit"
    );
    for bad in ["", "a\u{7}b", &"s".repeat(201)] {
        let r = store.tracking(bad).await;
        assert!(
            matches!(r, Err(ReadError::InvalidTracking(_))),
            "{rule}: tracking({bad:?}) got {r:?}"
        );
    }
    assert_eq!(all(&store).await.len(), 1, "{rule}");
}

/// §13.4: a transaction whose tracking position is not past the stored one (equal or
/// lower) is `AlreadyProcessed`, naming the stored position, and writes nothing; a later
/// position passes.
pub async fn tracking_not_past_the_stored_position_is_already_processed<S: TestStore>(store: S) {
    let rule = "§13.4 a tracking position not past the stored one is refused";
    let write = |n: u64, at: u128| {
        AppendTransaction::new()
            .stream(
                name("mirror-1"),
                ExpectedRevision::Any,
                vec![event("Copied", n)],
            )
            .tracking("upstream", Position::new(at))
    };
    commit(&store, write(0, 5), rule).await;
    for at in [5, 4, 0] {
        match store.append_transaction(write(1, at)).await {
            Err(AppendError::AlreadyProcessed {
                source_name,
                stored,
                position,
            }) => {
                assert_eq!(source_name, "upstream", "{rule}");
                assert_eq!(stored, Position::new(5), "{rule}: the stored position");
                assert_eq!(position, Position::new(at), "{rule}: the given one");
            }
            other => panic!("{rule}: position {at} after 5 should be refused, got {other:?}"),
        }
    }
    assert_eq!(all(&store).await.len(), 1, "{rule}: nothing written");
    assert_eq!(
        tracking(&store, "upstream").await,
        Some(Position::new(5)),
        "{rule}"
    );
    commit(&store, write(2, 9), rule).await;
    assert_eq!(
        tracking(&store, "upstream").await,
        Some(Position::new(9)),
        "{rule}"
    );
    assert_eq!(all(&store).await.len(), 2, "{rule}");
}

/// §13.1: the checks run in order: parts (expected revision) before tracking, tracking
/// before the condition.
pub async fn transaction_checks_run_in_the_documented_order<S: TestStore>(store: S) {
    let rule = "§13.1 parts, then tracking, then the condition";
    let s = name("ordered-1");
    let first = commit(
        &store,
        AppendTransaction::new()
            .stream(
                s.clone(),
                ExpectedRevision::NoStream,
                vec![tagged("A", 0, &["k"])],
            )
            .tracking("src", Position::new(3)),
        rule,
    )
    .await;
    let failing = AppendCondition::new(tags_query(&["k"]), None);
    let r = store
        .append_transaction(
            AppendTransaction::new()
                .stream(s.clone(), ExpectedRevision::NoStream, vec![event("B", 1)])
                .condition(failing.clone())
                .tracking("src", Position::new(3)),
        )
        .await;
    assert!(
        matches!(r, Err(AppendError::WrongExpectedRevision { .. })),
        "{rule}: the expected revision first, got {r:?}"
    );
    let r = store
        .append_transaction(
            AppendTransaction::new()
                .stream(s.clone(), ExpectedRevision::Exact(0), vec![event("B", 1)])
                .condition(failing.clone())
                .tracking("src", Position::new(3)),
        )
        .await;
    assert!(
        matches!(r, Err(AppendError::AlreadyProcessed { .. })),
        "{rule}: then tracking, got {r:?}"
    );
    let r = store
        .append_transaction(
            AppendTransaction::new()
                .stream(s.clone(), ExpectedRevision::Exact(0), vec![event("B", 1)])
                .condition(failing)
                .tracking("src", Position::new(4)),
        )
        .await;
    assert!(
        matches!(r, Err(AppendError::ConditionFailed { position }) if Some(position) == first.first_position),
        "{rule}: then the condition, got {r:?}"
    );
    assert_eq!(all(&store).await.len(), 1, "{rule}: nothing more written");
}

/// §13.5: events without a stream go to `dcb-<id of the first>`, keep their tags and
/// global order, are found by queries, and a retry returns the first result; two such
/// appends never conflict, as each has a stream of its own.
pub async fn streamless_events_get_a_stream_of_their_own<S: TestStore>(store: S) {
    let rule = "§13.5 events without a stream";
    let batch = vec![
        tagged("SeatClaimed", 0, &["course:c1", "student:ada"]),
        tagged("Paid", 1, &["student:ada"]),
    ];
    let first_id = batch[0].id;
    let tx = AppendTransaction::new().without_stream(batch.clone());
    let r = commit(&store, tx.clone(), rule).await;
    let stream = StreamName::new(format!("dcb-{first_id}")).expect("valid");
    assert_eq!(
        r.streams[0].stream, stream,
        "{rule}: named from the first id"
    );
    assert_eq!(r.streams[0].next_expected_revision, 1, "{rule}");
    let got = read(&store, &stream).await;
    assert_eq!(
        ids(&got),
        ids_of_new(&batch),
        "{rule}: in order, in one stream"
    );
    assert_eq!(
        got[0].tags,
        ["course:c1", "student:ada"],
        "{rule}: tags kept"
    );
    let q = store
        .read_query(&tags_query(&["student:ada"]), ReadQueryOptions::new())
        .await
        .expect("read_query");
    assert_eq!(ids(&q), ids_of_new(&batch), "{rule}: queries find them");
    assert_eq!(commit(&store, tx, rule).await, r, "{rule}: a retry");
    // Another stream-less append with the same tags gets a stream of its own.
    let other = commit(
        &store,
        AppendTransaction::new().without_stream(vec![tagged("SeatClaimed", 2, &["course:c1"])]),
        rule,
    )
    .await;
    assert_ne!(other.streams[0].stream, stream, "{rule}");
    assert_eq!(other.streams[0].next_expected_revision, 0, "{rule}");
    let empty = AppendTransaction::new().part(StreamAppend::without_stream(Vec::new()));
    let r = store.append_transaction(empty).await;
    assert!(matches!(r, Err(AppendError::NoEvents)), "{rule}: got {r:?}");
}

/// §13.1 (no lost update, no skipped revision): 8 tasks move money between 4 accounts
/// in two-part transactions, each part expecting the revision the task read. The total
/// never changes, every account's revisions are gapless, and every acknowledged
/// transfer is stored once, its two events next to each other in `$all`.
pub async fn concurrent_transfers_keep_the_total_and_every_revision<S: TestStore>(store: S) {
    const ACCOUNTS: usize = 4;
    const TASKS: usize = 8;
    const TRANSFERS: usize = 6;
    const OPENING: i64 = 100;
    const MAX_ATTEMPTS: usize = 10_000;
    let rule = "§13.1 concurrent transfers keep the bank's invariants";
    let accounts: Vec<StreamName> = (0..ACCOUNTS).map(|i| name(&format!("bank-{i}"))).collect();
    for a in &accounts {
        let opened =
            NewEvent::json("Opened", &serde_json::json!({ "amount": OPENING })).expect("JSON");
        append(&store, a, ExpectedRevision::NoStream, vec![opened]).await;
    }
    // Reads an account: its balance and last revision.
    async fn balance<S: TestStore>(store: &S, account: &StreamName) -> (i64, u64) {
        let events = read(store, account).await;
        let sum = events
            .iter()
            .map(|e| {
                let v: serde_json::Value = e.json().expect("JSON");
                let amount = v["amount"].as_i64().expect("amount");
                if e.event_type == "Withdrawn" {
                    -amount
                } else {
                    amount
                }
            })
            .sum();
        (sum, events.last().expect("opened").revision)
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, accounts, barrier) = (store.clone(), accounts.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut done = Vec::new();
            for n in 0..TRANSFERS {
                let from = &accounts[(t + n) % ACCOUNTS];
                let to = &accounts[(t + n + 1 + n % 2) % ACCOUNTS];
                let amount = 1 + ((t * 7 + n * 3) % 20) as i64;
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(
                        attempts < MAX_ATTEMPTS,
                        "{rule}: a transfer never got through"
                    );
                    let (have, from_rev) = balance(&store, from).await;
                    let (_, to_rev) = balance(&store, to).await;
                    let amount = amount.min(have.max(0));
                    let withdrawn =
                        NewEvent::json("Withdrawn", &serde_json::json!({ "amount": amount }))
                            .expect("JSON");
                    let deposited =
                        NewEvent::json("Deposited", &serde_json::json!({ "amount": amount }))
                            .expect("JSON");
                    let pair = (withdrawn.id, deposited.id);
                    let tx = AppendTransaction::new()
                        .stream(
                            from.clone(),
                            ExpectedRevision::Exact(from_rev),
                            vec![withdrawn],
                        )
                        .stream(to.clone(), ExpectedRevision::Exact(to_rev), vec![deposited]);
                    match store.append_transaction(tx).await {
                        Ok(r) => {
                            assert_eq!(r.streams[0].next_expected_revision, from_rev + 1, "{rule}");
                            assert_eq!(r.streams[1].next_expected_revision, to_rev + 1, "{rule}");
                            done.push(pair);
                            break;
                        }
                        Err(AppendError::WrongExpectedRevision { .. }) => {}
                        Err(e) => panic!("{rule}: transfer failed: {e:?}"),
                    }
                }
            }
            done
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("transfer task panicked"));
    }
    assert_eq!(acknowledged.len(), TASKS * TRANSFERS, "{rule}");
    let mut total = 0;
    for a in &accounts {
        let events = read(&store, a).await;
        let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
        assert_eq!(
            revisions,
            (0..events.len() as u64).collect::<Vec<_>>(),
            "{rule}: {a}'s revisions are gapless"
        );
        total += balance(&store, a).await.0;
    }
    assert_eq!(
        total,
        OPENING * ACCOUNTS as i64,
        "{rule}: the total never changes"
    );
    let log = all(&store).await;
    let at: BTreeMap<Uuid, usize> = log.iter().enumerate().map(|(i, e)| (e.id, i)).collect();
    assert_eq!(
        log.len(),
        ACCOUNTS + 2 * acknowledged.len(),
        "{rule}: stored once"
    );
    for (w, d) in acknowledged {
        let (w, d) = (at[&w], at[&d]);
        assert_eq!(
            d,
            w + 1,
            "{rule}: a transfer's events are next to each other in $all"
        );
    }
}

/// §13.4: of many concurrent transactions carrying the same tracking position of one
/// source, exactly one is written; the others are `AlreadyProcessed` and write nothing.
pub async fn concurrent_tracking_lets_one_writer_per_position_win<S: TestStore>(store: S) {
    const TASKS: usize = 12;
    let rule = "§13.4 one writer per tracking position";
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let tx = AppendTransaction::new()
                .stream(
                    name(&format!("worker-{t}")),
                    ExpectedRevision::NoStream,
                    vec![event("Did", t as u64)],
                )
                .tracking("inbox", Position::new(1));
            barrier.wait().await;
            store.append_transaction(tx).await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => wins += 1,
            Err(AppendError::AlreadyProcessed { stored, .. }) => {
                assert_eq!(stored, Position::new(1), "{rule}");
            }
            Err(e) => panic!("{rule}: unexpected {e:?}"),
        }
    }
    assert_eq!(wins, 1, "{rule}: exactly one winner");
    assert_eq!(
        all(&store).await.len(),
        1,
        "{rule}: the losers wrote nothing"
    );
}

/// §13.5, §13.1: in one burst of concurrent transactions (a group commit, on backends
/// that have one), the ones refused (a wrong revision in a later part, a failing
/// condition) write nothing, the others are written whole, and stream-less appends
/// never conflict with each other.
pub async fn concurrent_refused_transactions_do_not_affect_neighbours<S: TestStore>(store: S) {
    const TASKS: usize = 18;
    let rule = "§13.1 a refused transaction does not affect concurrent ones";
    let taken = append(
        &store,
        &name("taken-1"),
        ExpectedRevision::NoStream,
        vec![tagged("Claimed", 0, &["thing:taken"])],
    )
    .await;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let own = name(&format!("burst-{t}"));
            let tx = match t % 3 {
                // Refused by its second part.
                0 => AppendTransaction::new()
                    .stream(own, ExpectedRevision::NoStream, vec![event("A", 0)])
                    .stream(
                        name("taken-1"),
                        ExpectedRevision::NoStream,
                        vec![event("B", 1)],
                    ),
                // Refused by its condition.
                1 => AppendTransaction::new()
                    .stream(own, ExpectedRevision::NoStream, vec![event("A", 0)])
                    .without_stream(vec![tagged("Claimed", 1, &["thing:taken"])])
                    .condition(AppendCondition::new(tags_query(&["thing:taken"]), None)),
                // Written: its own stream and a stream-less part.
                _ => AppendTransaction::new()
                    .stream(own, ExpectedRevision::NoStream, vec![event("A", 0)])
                    .without_stream(vec![tagged("Noted", 1, &["thing:taken"])]),
            };
            let ids: Vec<Uuid> = tx.events().map(|e| e.id).collect();
            barrier.wait().await;
            (t, ids, store.append_transaction(tx).await)
        }));
    }
    let mut written: HashSet<Uuid> = HashSet::from([all(&store).await[0].id]);
    for task in tasks {
        let (t, task_ids, r) = task.await.expect("task");
        match (t % 3, r) {
            (0, Err(AppendError::WrongExpectedRevision { stream, .. })) => {
                assert_eq!(stream, name("taken-1"), "{rule}");
            }
            (1, Err(AppendError::ConditionFailed { position })) => {
                assert_eq!(position, taken.position, "{rule}");
            }
            (2, Ok(r)) => {
                assert_eq!(r.streams.len(), 2, "{rule}");
                written.extend(task_ids);
            }
            (_, r) => panic!("{rule}: task {t} got {r:?}"),
        }
    }
    let stored: HashSet<Uuid> = ids(&all(&store).await).into_iter().collect();
    assert_eq!(stored, written, "{rule}: exactly the accepted transactions");
}
