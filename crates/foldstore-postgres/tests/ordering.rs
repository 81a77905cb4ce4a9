//! No reader skips an event (docs/semantics.md §5, "PostgreSQL: how the global order
//! is kept").
//!
//! Guards against the classic sequence-gap bug: transaction T1 takes a sequence number,
//! T2 takes a later one and commits first; a reader that moves past T2's position
//! never sees T1's event. These tests hold T1 open on a raw connection (no sleeps
//! decide the interleaving) and check that readers wait for it, then see both events
//! in position order.

mod common;

use std::time::Duration;

use foldstore_core::{
    EventFilter, EventStore, ExpectedRevision, NewEvent, Position, ReadAllOptions, RecordedEvent,
    StreamName, SubscribeFrom, group_hash,
};
use futures::StreamExt;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

/// A raw session on the test database.
async fn raw(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("a raw connection");
    tokio::spawn(connection);
    client
}

/// Calls the schema's `append` function inside `client`'s current transaction and
/// returns the new event's id.
async fn raw_append(client: &Client, schema: &str, stream: &str) -> Uuid {
    let name = StreamName::new(stream).expect("stream name");
    let id = Uuid::now_v7();
    let row = client
        .query_one(
            &format!(
                "SELECT written FROM \"{schema}\".append($1, $2, $3, $4, 0::smallint, 0, $5, $6, $7, $8, $9)"
            ),
            &[
                &name.as_str(),
                &name.category(),
                &(group_hash(name.id()) as i64),
                &(group_hash(name.category()) as i64),
                &vec![id],
                &vec!["Held"],
                &vec!["application/json"],
                &vec![b"{}".as_slice()],
                &vec!["{}"],
            ],
        )
        .await
        .expect("append through the SQL function");
    assert!(row.get::<_, bool>(0), "the raw append was written");
    id
}

async fn seq_of(client: &Client, schema: &str, id: Uuid) -> i64 {
    client
        .query_one(
            &format!("SELECT seq FROM \"{schema}\".events WHERE id = $1"),
            &[&id],
        )
        .await
        .expect("seq of a held event")
        .get(0)
}

fn ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.id).collect()
}

async fn next_event(sub: &mut foldstore_core::EventSubscription) -> RecordedEvent {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("an event within 10 s")
        .expect("the subscription goes on")
        .expect("no error")
}

/// Asserts that the subscription delivers nothing for a while. (Only a bounded
/// observation: the interleaving itself is forced by the held transaction.)
async fn assert_quiet(sub: &mut foldstore_core::EventSubscription, why: &str) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        panic!("{why}: the subscription delivered {item:?}");
    }
}

/// T1 takes the lower sequence number and stays open; T2 takes a higher one and
/// commits. Readers must not pass T1: `$all`, the head and a live subscription show
/// nothing until T1 commits, then T1's event and T2's, in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_does_not_pass_a_transaction_still_in_flight() {
    let Some(url) = common::test_url("a_reader_does_not_pass_a_transaction_still_in_flight") else {
        return;
    };
    let (store, guard) = common::fresh_store(&url).await;
    let schema = guard.schema.clone();
    let mut sub = store
        .subscribe_to_all(SubscribeFrom::Start, EventFilter::all())
        .await
        .expect("subscribe");

    let t1 = raw(&url).await;
    let t2 = raw(&url).await;
    t1.batch_execute("BEGIN").await.expect("begin T1");
    let first = raw_append(&t1, &schema, "held-1").await;
    t2.batch_execute("BEGIN").await.expect("begin T2");
    let second = raw_append(&t2, &schema, "held-2").await;
    assert!(
        seq_of(&t1, &schema, first).await < seq_of(&t2, &schema, second).await,
        "T1 took the lower sequence number"
    );
    t2.batch_execute("COMMIT").await.expect("commit T2");

    // T2 is committed, T1 is not: nothing may be visible in the global order yet.
    let all = store
        .read_all(ReadAllOptions::forwards())
        .await
        .expect("read $all");
    assert!(all.is_empty(), "$all showed {:?} past T1", ids(&all));
    let category = store
        .read_category("held", ReadAllOptions::forwards())
        .await
        .expect("read category");
    assert!(category.is_empty(), "the category read passed T1");
    assert_eq!(store.head_position().await.expect("head"), None);
    // Stream reads are not ordered globally: T2's stream shows its event at once.
    let stream = StreamName::new("held-2").expect("name");
    let own = store
        .read_stream(&stream, Default::default())
        .await
        .expect("read T2's stream");
    assert_eq!(ids(&own), vec![second]);
    assert_quiet(&mut sub, "a subscription passed a transaction in flight").await;

    t1.batch_execute("COMMIT").await.expect("commit T1");
    let a = next_event(&mut sub).await;
    let b = next_event(&mut sub).await;
    assert_eq!((a.id, b.id), (first, second), "T1's event, then T2's");
    assert!(a.position < b.position);
    let all = store
        .read_all(ReadAllOptions::forwards())
        .await
        .expect("read $all");
    assert_eq!(ids(&all), vec![first, second]);
    assert_eq!(store.head_position().await.expect("head"), Some(b.position));
    drop(sub);
    drop(store);
}

/// The order is (transaction, sequence), not the sequence alone: T1 gets its
/// transaction id first but takes its sequence number after T2, which commits first.
/// T1's event still comes first, and no reader sees T2's before T1 commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_is_by_transaction_then_sequence() {
    let Some(url) = common::test_url("the_order_is_by_transaction_then_sequence") else {
        return;
    };
    let (store, guard) = common::fresh_store(&url).await;
    let schema = guard.schema.clone();
    let mut sub = store
        .subscribe_to_all(SubscribeFrom::Start, EventFilter::all())
        .await
        .expect("subscribe");

    let t1 = raw(&url).await;
    let t2 = raw(&url).await;
    t1.batch_execute("BEGIN; SELECT pg_current_xact_id()")
        .await
        .expect("T1 takes its transaction id");
    t2.batch_execute("BEGIN").await.expect("begin T2");
    let second = raw_append(&t2, &schema, "late-2").await;
    t2.batch_execute("COMMIT").await.expect("commit T2");
    let first = raw_append(&t1, &schema, "late-1").await;
    assert!(
        seq_of(&t1, &schema, first).await > seq_of(&t1, &schema, second).await,
        "T1 took the higher sequence number"
    );
    assert!(
        store
            .read_all(ReadAllOptions::forwards())
            .await
            .expect("read")
            .is_empty(),
        "T2's event was shown while T1, an older transaction, was in flight"
    );
    assert_quiet(&mut sub, "a subscription passed an older transaction").await;

    t1.batch_execute("COMMIT").await.expect("commit T1");
    let a = next_event(&mut sub).await;
    let b = next_event(&mut sub).await;
    assert_eq!((a.id, b.id), (first, second), "the older transaction first");
    assert!(a.position < b.position);
    drop(sub);
    drop(store);
}

/// Appends through the store while a raw transaction holds the horizon back: the
/// append is acknowledged at once (writers never wait for each other), but `$all`
/// shows it only once the older transaction ends; `read_your_writes_timeout` bounds
/// how long `read_all` waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_do_not_wait_for_older_transactions_but_reads_of_all_do() {
    let Some(url) =
        common::test_url("appends_do_not_wait_for_older_transactions_but_reads_of_all_do")
    else {
        return;
    };
    let (store, guard) = common::fresh_store_with(&url, |mut o| {
        o.read_your_writes_timeout = Duration::from_millis(300);
        o
    })
    .await;
    let schema = guard.schema.clone();
    let t1 = raw(&url).await;
    t1.batch_execute("BEGIN").await.expect("begin T1");
    let held = raw_append(&t1, &schema, "old-1").await;

    let stream = StreamName::new("new-1").expect("name");
    let event = NewEvent::json("Fresh", &serde_json::json!({})).expect("event");
    let id = event.id;
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        store.append(&stream, ExpectedRevision::NoStream, vec![event]),
    )
    .await
    .expect("the append does not wait for T1")
    .expect("append");

    // read_all waits up to read_your_writes_timeout, then shows what is visible.
    let started = std::time::Instant::now();
    let all = store
        .read_all(ReadAllOptions::forwards())
        .await
        .expect("read");
    assert!(all.is_empty(), "nothing is visible past T1");
    assert!(started.elapsed() >= Duration::from_millis(300));

    let reader = store.clone();
    let waiting = tokio::spawn(async move {
        let mut sub = reader
            .subscribe_to_all(SubscribeFrom::Start, EventFilter::all())
            .await
            .expect("subscribe");
        let a = next_event(&mut sub).await;
        let b = next_event(&mut sub).await;
        (a, b)
    });
    t1.batch_execute("COMMIT").await.expect("commit T1");
    let (a, b) = waiting.await.expect("subscriber");
    assert_eq!((a.id, b.id), (held, id));
    assert_eq!(b.position, r.position);
    let all = store
        .read_all(ReadAllOptions::forwards().from_position(Position::ZERO))
        .await
        .expect("read");
    assert_eq!(ids(&all), vec![held, id]);
    drop(store);
}
