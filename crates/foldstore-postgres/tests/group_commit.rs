//! Group commit's fast path (`append_batch`, docs/semantics.md §5): many appends
//! queued at once share one transaction, several of them to one stream, some of them
//! retries, refusals or clashing ids, and each still gets exactly the answer it would
//! get alone.
//!
//! One writer and a held-open commit (`test_commit_delay`) make the appends of each
//! burst queue behind the first one and go into one group.

mod common;

use std::time::Duration;

use foldstore_core::{
    AppendError, AppendResult, EventStore, ExpectedRevision, NewEvent, ReadAllOptions,
    ReadStreamOptions, StreamName,
};
use foldstore_postgres::PostgresStore;
use futures::future::join_all;

fn stream(name: &str) -> StreamName {
    StreamName::new(name).expect("stream name")
}

fn event(n: usize) -> NewEvent {
    NewEvent::json("Counted", &serde_json::json!({ "n": n })).expect("json")
}

/// Asserts how many appends each group-commit path answered so far:
/// `(fast_written, fast_rolled_back, slow_answered)`.
fn assert_paths(store: &PostgresStore, expected: (u64, u64, u64)) {
    let stats = store.group_commit_stats();
    assert_eq!(
        (
            stats.fast_written,
            stats.fast_rolled_back,
            stats.slow_answered
        ),
        expected,
        "{stats:?}"
    );
}

async fn grouping_store(url: &str) -> (PostgresStore, common::SchemaGuard) {
    common::fresh_store_with(url, |mut o| {
        o.test_commit_delay = Some(Duration::from_millis(20));
        o.writers(1)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_appends_to_one_stream_in_one_group_apply_in_order() {
    let Some(url) = common::test_url("several_appends_to_one_stream_in_one_group_apply_in_order")
    else {
        return;
    };
    let (store, _guard) = grouping_store(&url).await;
    let names: Vec<StreamName> = (0..6).map(|s| stream(&format!("layer-{s}"))).collect();
    // Stream s gets appends with Exact(0), Exact(1), ...: each holds only if the one
    // queued before it was applied first.
    let first: Vec<_> = (0..6)
        .map(|s| store.append(&names[s], ExpectedRevision::NoStream, vec![event(0)]))
        .collect();
    for r in join_all(first).await {
        r.expect("first append");
    }
    let mut burst = Vec::new();
    for k in 0..8u64 {
        for s in 0..6 {
            let events = (0..=(s % 3)).map(event).collect::<Vec<_>>();
            burst.push((s, k, events));
        }
    }
    // Each stream's k-th append expects the revision its earlier appends lead to.
    let mut next = [0u64; 6];
    let calls: Vec<_> = burst
        .iter()
        .map(|(s, _, events)| {
            let expected = ExpectedRevision::Exact(next[*s]);
            next[*s] += events.len() as u64;
            store.append(&names[*s], expected, events.clone())
        })
        .collect();
    let results: Vec<AppendResult> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("every append of the burst holds its expectation"))
        .collect();

    for s in 0..6 {
        let events = store
            .read_stream(&names[s], ReadStreamOptions::forwards())
            .await
            .expect("read");
        assert_eq!(events.len() as u64, next[s] + 1);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.revision, i as u64, "revisions are gapless");
        }
        assert!(
            events.windows(2).all(|w| w[0].position < w[1].position),
            "positions follow revisions within a stream"
        );
        // Each append's answer names its last event.
        for ((bs, _, appended), result) in burst.iter().zip(&results) {
            if *bs != s {
                continue;
            }
            let last = &events[usize::try_from(result.next_expected_revision).expect("fits")];
            assert_eq!(last.position, result.position);
            assert_eq!(last.id, appended.last().expect("events").id);
        }
    }
    // Every one of them took the fast path: none fell back to `append` calls.
    assert_paths(&store, (6 + 48, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_in_a_group_leaves_the_rest_on_the_fast_path() {
    let Some(url) = common::test_url("a_retry_in_a_group_leaves_the_rest_on_the_fast_path") else {
        return;
    };
    let (store, _guard) = grouping_store(&url).await;
    let stored = vec![event(1)];
    let kept = stream("kept-1");
    let first = store
        .append(&kept, ExpectedRevision::Any, stored.clone())
        .await
        .expect("append");
    let names: Vec<StreamName> = (0..5).map(|i| stream(&format!("other-{i}"))).collect();
    let retry = store.append(&kept, ExpectedRevision::Any, stored);
    let others: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| store.append(name, ExpectedRevision::Any, vec![event(i)]))
        .collect();
    let (retry, others) = tokio::join!(retry, join_all(others));
    assert_eq!(retry.expect("a retry succeeds"), first);
    for r in others {
        r.expect("append");
    }
    // The stored id is found before anything is written: only the retry goes on to an
    // `append` call, and the group's transaction commits the others.
    assert_paths(&store, (1 + 5, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clash_in_a_group_fails_alone() {
    let Some(url) = common::test_url("a_clash_in_a_group_fails_alone") else {
        return;
    };
    let (store, _guard) = grouping_store(&url).await;
    // Stored before the burst: a retry of it must answer with its first result.
    let stored = vec![event(1), event(2)];
    let first = store
        .append(
            &stream("kept-1"),
            ExpectedRevision::NoStream,
            stored.clone(),
        )
        .await
        .expect("append");
    store
        .append(&stream("gone-1"), ExpectedRevision::Any, vec![event(0)])
        .await
        .expect("append");
    store
        .tombstone_stream(&stream("gone-1"), ExpectedRevision::Any)
        .await
        .expect("tombstone");
    // One id in two appends of the same group, to different streams: no lookup before
    // the group sees it stored, so the group's insert hits the unique index.
    let shared = event(7);
    let (kept, gone) = (stream("kept-1"), stream("gone-1"));
    let (a, b) = (stream("clash-a"), stream("clash-b"));
    let fine: Vec<StreamName> = (0..20).map(|i| stream(&format!("fine-{i}"))).collect();

    let retry = store.append(&kept, ExpectedRevision::NoStream, stored.clone());
    let wrong = store.append(&kept, ExpectedRevision::Exact(5), vec![event(3)]);
    let tombstoned = store.append(&gone, ExpectedRevision::Any, vec![event(4)]);
    let clash_a = store.append(&a, ExpectedRevision::Any, vec![shared.clone()]);
    let clash_b = store.append(&b, ExpectedRevision::Any, vec![shared.clone()]);
    let neighbours: Vec<_> = (0..20)
        .map(|i| store.append(&fine[i], ExpectedRevision::NoStream, vec![event(i)]))
        .collect();
    let (retry, wrong, tombstoned, clash_a, clash_b, neighbours) = tokio::join!(
        retry,
        wrong,
        tombstoned,
        clash_a,
        clash_b,
        join_all(neighbours)
    );

    assert_eq!(
        retry.expect("a retry succeeds"),
        first,
        "a retry answers with the first result"
    );
    assert!(
        matches!(wrong, Err(AppendError::WrongExpectedRevision { .. })),
        "{wrong:?}"
    );
    assert!(
        matches!(tombstoned, Err(AppendError::StreamTombstoned { .. })),
        "{tombstoned:?}"
    );
    match (&clash_a, &clash_b) {
        (Ok(_), Err(AppendError::DuplicateEventId { event_id, .. }))
        | (Err(AppendError::DuplicateEventId { event_id, .. }), Ok(_)) => {
            assert_eq!(*event_id, shared.id);
        }
        other => panic!("exactly one of two appends sharing an id succeeds: {other:?}"),
    }
    for r in neighbours {
        r.expect("neighbours of failing appends succeed");
    }

    // Nothing was written twice and nothing partially: the 2 stored events, the shared
    // id once, and the 20 neighbours (the tombstoned stream's event aside).
    let all = store
        .read_all(ReadAllOptions::forwards().max_count(1000))
        .await
        .expect("read");
    let live: Vec<_> = all
        .iter()
        .filter(|e| e.stream.as_str() != "gone-1")
        .collect();
    assert_eq!(live.len(), 23, "{live:#?}");
    assert_eq!(live.iter().filter(|e| e.id == shared.id).count(), 1);
    let kept = store
        .read_stream(&stream("kept-1"), ReadStreamOptions::forwards())
        .await
        .expect("read");
    assert_eq!(kept.len(), 2);
    // The retry, the wrong expectation and the tombstone were each answered by an
    // `append` call.
    let stats = store.group_commit_stats();
    assert!(stats.slow_answered >= 3, "{stats:?}");
}

/// Callers that append again as soon as they are answered (as a loaded server's
/// request handlers do) keep sharing transactions, with the default two writers and
/// no held-open commit: the writer that picks up the first of them gathers the others
/// that were answered with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_answered_together_share_their_next_transaction() {
    let Some(url) = common::test_url("callers_answered_together_share_their_next_transaction")
    else {
        return;
    };
    let (store, _guard) = common::fresh_store(&url).await;
    const CALLERS: usize = 32;
    const APPENDS: usize = 20;
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                let name = stream(&format!("loop-{c}"));
                for n in 0..APPENDS {
                    let expected = match n {
                        0 => ExpectedRevision::NoStream,
                        n => ExpectedRevision::Exact(n as u64 - 1),
                    };
                    store
                        .append(&name, expected, vec![event(n)])
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for caller in join_all(callers).await {
        caller.expect("caller");
    }
    let stats = store.group_commit_stats();
    assert_eq!(stats.fast_written, (CALLERS * APPENDS) as u64, "{stats:?}");
    // Without grouping there would be one transaction per append (640); each
    // transaction lasts at least one commit's flush, in which the other callers queue.
    assert!(
        stats.fast_transactions * 4 <= stats.fast_written,
        "fewer than 4 appends per transaction: {stats:?}"
    );
}
