//! KurrentDB's official Rust client (`kurrentdb`) drives our `PersistentSubscriptions`
//! service as an unchanged KurrentDB application would: groups on a stream and on
//! `$all`, consumers that ack, nack (park, retry, stop), time out and compete, parked
//! events replayed, groups listed, inspected, updated and deleted, on the in-memory
//! store, SQLite and PostgreSQL (when `FOLDSTORE_TEST_POSTGRES_URL` is set; skipped
//! saying so otherwise). Then, on SQLite files, a restarted server resumes each group
//! after its checkpoint without losing an event; and credentials limit who consumes,
//! manages and sees which groups.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Server;
use foldstore_core::persistent::PersistentSubscriptions;
use foldstore_core::{EventStore, InMemoryStore};
use foldstore_grpc::{Authenticator, Credentials, Grant, Services};
use kurrentdb::{
    AppendToStreamOptions, Client, DeletePersistentSubscriptionOptions,
    GetPersistentSubscriptionInfoOptions, ListPersistentSubscriptionsOptions, NakAction,
    PersistentSubscription, PersistentSubscriptionEvent, PersistentSubscriptionOptions,
    PersistentSubscriptionToAllOptions, ReadStreamOptions, ReplayParkedMessagesOptions,
    ResolvedEvent, RestartPersistentSubscriptionSubsystem, StreamPosition,
    SubscribeToPersistentSubscriptionOptions, SubscriptionFilter, SystemConsumerStrategy,
};

/// Runs `test` against a server with persistent subscriptions over each backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    run(Arc::new(InMemoryStore::new()), super::$name).await;
                }
            )*
        }
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = sqlite(&dir.path().join("events.db")).await;
                    run(Arc::new(store), super::$name).await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let how = "cargo test -p foldstore-grpc --test persistent_subscriptions postgres";
                    let Some(url) = foldstore_postgres::testkit::test_url(stringify!($name), how) else {
                        return;
                    };
                    let (store, _schema) = foldstore_postgres::testkit::fresh_store(&url).await;
                    run(Arc::new(store), super::$name).await;
                }
            )*
        }
    };
}

on_every_backend!(
    a_stream_group_delivers_events_from_its_start_and_acks_move_its_checkpoint,
    an_all_group_delivers_only_what_its_filter_matches,
    a_parked_event_shows_in_the_parked_stream_and_comes_back_on_replay,
    a_retry_nack_delivers_again_with_the_retry_count,
    a_stop_nack_drops_the_consumer_and_another_gets_its_events,
    an_unacked_event_comes_again_after_the_timeout_then_is_parked,
    list_answers_with_no_groups_then_with_each,
    get_info_reports_the_settings_connections_and_counts,
    update_changes_the_settings_keeps_the_filter_and_drops_consumers,
    delete_drops_the_consumer_and_the_group_is_gone,
    two_round_robin_consumers_share_the_events_never_one_at_both,
    a_group_refuses_consumers_beyond_its_max_subscriber_count,
    restart_subsystem_drops_consumers_and_serves_the_groups_again,
);

const WAIT: Duration = Duration::from_secs(10);

async fn sqlite(path: &std::path::Path) -> foldstore_sqlite::SqliteStore {
    foldstore_sqlite::SqliteStore::open(path, foldstore_sqlite::SqliteOptions::default())
        .await
        .unwrap()
}

/// Serves `store` with persistent subscriptions, runs `test` with a client, then stops
/// the groups.
async fn run<F, Fut>(store: Arc<dyn EventStore>, test: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = ()>,
{
    let subs = Arc::new(PersistentSubscriptions::open(store.clone()).await.unwrap());
    let server = Server::serve(Services::new(store).persistent(subs.clone()).router()).await;
    test(server.client()).await;
    subs.shutdown().await;
}

fn json(event_type: &str, n: u64) -> kurrentdb::EventData {
    kurrentdb::EventData::json(event_type, &serde_json::json!({ "n": n })).unwrap()
}

async fn append(client: &Client, stream: &str, numbers: std::ops::Range<u64>) {
    let events = numbers.map(|n| json("Happened", n)).collect::<Vec<_>>();
    client
        .append_to_stream(stream, &AppendToStreamOptions::default(), events)
        .await
        .unwrap();
}

fn from_start() -> PersistentSubscriptionOptions {
    PersistentSubscriptionOptions::default().start_from(StreamPosition::Start)
}

fn all_from_start() -> PersistentSubscriptionToAllOptions {
    PersistentSubscriptionToAllOptions::default().start_from(StreamPosition::Start)
}

async fn subscribe(client: &Client, stream: &str, group: &str) -> PersistentSubscription {
    client
        .subscribe_to_persistent_subscription(stream, group, &Default::default())
        .await
        .unwrap()
}

/// The next event and its retry count, past the confirmation.
async fn next(sub: &mut PersistentSubscription) -> (ResolvedEvent, usize) {
    loop {
        let event = tokio::time::timeout(WAIT, sub.next_subscription_event())
            .await
            .expect("the subscription answers in time")
            .unwrap();
        match event {
            PersistentSubscriptionEvent::EventAppeared { retry_count, event } => {
                return (event, retry_count);
            }
            PersistentSubscriptionEvent::Confirmed(_) => continue,
        }
    }
}

/// The confirmation a subscription starts with.
async fn confirmation(sub: &mut PersistentSubscription) -> String {
    match tokio::time::timeout(WAIT, sub.next_subscription_event())
        .await
        .expect("the subscription answers in time")
        .unwrap()
    {
        PersistentSubscriptionEvent::Confirmed(id) => id,
        other => panic!("expected the confirmation, got {other:?}"),
    }
}

/// Whether the subscription delivers nothing for a while.
async fn quiet(sub: &mut PersistentSubscription) -> bool {
    tokio::time::timeout(Duration::from_millis(400), sub.next_subscription_event())
        .await
        .is_err()
}

/// How the subscription ends: with an error, in time.
async fn ended(sub: &mut PersistentSubscription) -> kurrentdb::Error {
    loop {
        match tokio::time::timeout(WAIT, sub.next_subscription_event())
            .await
            .expect("the subscription ends in time")
        {
            Ok(_) => continue,
            Err(e) => return e,
        }
    }
}

fn revision(event: &ResolvedEvent) -> u64 {
    event.get_original_event().revision
}

type Info = kurrentdb::PersistentSubscriptionInfo<u64>;

async fn info(client: &Client, stream: &str, group: &str) -> Info {
    client
        .get_persistent_subscription_info(
            stream,
            group,
            &GetPersistentSubscriptionInfoOptions::default(),
        )
        .await
        .unwrap()
}

/// Waits until the group's info satisfies `check`.
async fn eventually(
    client: &Client,
    stream: &str,
    group: &str,
    what: &str,
    check: impl Fn(&Info) -> bool,
) -> Info {
    for _ in 0..300 {
        let info = info(client, stream, group).await;
        if check(&info) {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "timed out waiting for {what}: {:?}",
        info(client, stream, group).await
    );
}

async fn a_stream_group_delivers_events_from_its_start_and_acks_move_its_checkpoint(
    client: Client,
) {
    append(&client, "orders-1", 0..3).await;
    let options = from_start()
        .checkpoint_lower_bound(1)
        .checkpoint_upper_bound(1);
    client
        .create_persistent_subscription("orders-1", "mailer", &options)
        .await
        .unwrap();
    let mut sub = subscribe(&client, "orders-1", "mailer").await;
    assert_eq!(confirmation(&mut sub).await, "orders-1::mailer");
    for expected in 0..3 {
        let (event, retries) = next(&mut sub).await;
        assert_eq!(revision(&event), expected);
        assert_eq!(retries, 0);
        assert_eq!(event.get_original_event().stream_id(), "orders-1");
        assert_eq!(event.get_original_event().event_type, "Happened");
        sub.ack(&event).await.unwrap();
    }
    append(&client, "orders-1", 3..4).await;
    let (live, _) = next(&mut sub).await;
    assert_eq!(revision(&live), 3, "live events follow");
    sub.ack(&live).await.unwrap();
    let info = eventually(&client, "orders-1", "mailer", "checkpoint 3", |i| {
        i.stats.last_checkpointed_event_revision == Some(3)
    })
    .await;
    assert_eq!(info.stats.last_known_event_revision, Some(3));

    // A start at a revision includes it.
    client
        .create_persistent_subscription(
            "orders-1",
            "from-two",
            &PersistentSubscriptionOptions::default().start_from(StreamPosition::Position(2)),
        )
        .await
        .unwrap();
    let mut sub = subscribe(&client, "orders-1", "from-two").await;
    assert_eq!(revision(&next(&mut sub).await.0), 2);
    // From the end: only what comes later.
    client
        .create_persistent_subscription(
            "orders-1",
            "from-end",
            &PersistentSubscriptionOptions::default().start_from(StreamPosition::End),
        )
        .await
        .unwrap();
    let mut sub = subscribe(&client, "orders-1", "from-end").await;
    confirmation(&mut sub).await;
    assert!(quiet(&mut sub).await, "nothing before the end");
    append(&client, "orders-1", 4..5).await;
    assert_eq!(revision(&next(&mut sub).await.0), 4);
}

async fn an_all_group_delivers_only_what_its_filter_matches(client: Client) {
    append(&client, "keep-1", 0..2).await;
    append(&client, "skip-1", 0..2).await;
    append(&client, "keep-2", 0..1).await;
    // The clients' usual shape: a regex with lookahead.
    let filter = SubscriptionFilter::on_stream_name().regex("^(?!skip-)");
    client
        .create_persistent_subscription_to_all("audit", &all_from_start().filter(filter))
        .await
        .unwrap();
    let mut sub = client
        .subscribe_to_persistent_subscription_to_all("audit", &Default::default())
        .await
        .unwrap();
    assert_eq!(confirmation(&mut sub).await, "$all::audit");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (event, _) = next(&mut sub).await;
        let e = event.get_original_event();
        seen.push((e.stream_id().to_owned(), e.revision));
        sub.ack(&event).await.unwrap();
    }
    let seen: Vec<_> = seen.iter().map(|(s, r)| (s.as_str(), *r)).collect();
    assert_eq!(seen, [("keep-1", 0), ("keep-1", 1), ("keep-2", 0)]);
    append(&client, "skip-1", 2..3).await;
    append(&client, "keep-3", 0..1).await;
    let (live, _) = next(&mut sub).await;
    assert_eq!(live.get_original_event().stream_id(), "keep-3");

    // By event type, with prefixes.
    client
        .append_to_stream(
            "mixed-1",
            &AppendToStreamOptions::default(),
            vec![json("OrderPlaced", 0), json("UserJoined", 1)],
        )
        .await
        .unwrap();
    let by_type = SubscriptionFilter::on_event_type().add_prefix("Order");
    client
        .create_persistent_subscription_to_all("orders", &all_from_start().filter(by_type))
        .await
        .unwrap();
    let mut sub = client
        .subscribe_to_persistent_subscription_to_all("orders", &Default::default())
        .await
        .unwrap();
    let (event, _) = next(&mut sub).await;
    assert_eq!(event.get_original_event().event_type, "OrderPlaced");
    sub.ack(&event).await.unwrap();
    assert!(quiet(&mut sub).await, "UserJoined is filtered out");
}

async fn a_parked_event_shows_in_the_parked_stream_and_comes_back_on_replay(client: Client) {
    append(&client, "pay-1", 0..2).await;
    client
        .create_persistent_subscription("pay-1", "billing", &from_start())
        .await
        .unwrap();
    let mut sub = subscribe(&client, "pay-1", "billing").await;
    let (first, _) = next(&mut sub).await;
    sub.nack(&first, NakAction::Park, "cannot bill")
        .await
        .unwrap();
    let (second, _) = next(&mut sub).await;
    assert_eq!(revision(&second), 1);
    sub.ack(&second).await.unwrap();
    eventually(&client, "pay-1", "billing", "one parked event", |i| {
        i.stats.parked_message_count == 1
    })
    .await;

    // The parked stream, under the name KurrentDB gives it.
    let parked = "$persistentsubscription-pay-1::billing-parked";
    let mut read = client
        .read_stream(parked, &ReadStreamOptions::default())
        .await
        .unwrap();
    let link = read.next().await.unwrap().expect("one parked event");
    assert_eq!(link.get_original_event().stream_id(), parked);
    assert!(read.next().await.unwrap().is_none());

    client
        .replay_parked_messages("pay-1", "billing", &ReplayParkedMessagesOptions::default())
        .await
        .unwrap();
    let (again, _) = next(&mut sub).await;
    assert_eq!(revision(&again), 0, "the parked event again");
    assert_eq!(again.get_original_event().id, first.get_original_event().id);
    sub.ack(&again).await.unwrap();
    eventually(&client, "pay-1", "billing", "no parked event left", |i| {
        i.stats.parked_message_count == 0
    })
    .await;

    // Replaying stops at the given revision of the parked stream.
    append(&client, "pay-1", 2..4).await;
    for _ in 0..2 {
        let (event, _) = next(&mut sub).await;
        sub.nack(&event, NakAction::Park, "again").await.unwrap();
    }
    eventually(&client, "pay-1", "billing", "two parked events", |i| {
        i.stats.parked_message_count == 2
    })
    .await;
    // Revision 0 of the parked stream was replayed; 1 and 2 hold these two.
    client
        .replay_parked_messages(
            "pay-1",
            "billing",
            &ReplayParkedMessagesOptions::default().stop_at(2),
        )
        .await
        .unwrap();
    let (replayed, _) = next(&mut sub).await;
    assert_eq!(revision(&replayed), 2);
    sub.ack(&replayed).await.unwrap();
    assert!(quiet(&mut sub).await, "the second stays parked");
    eventually(&client, "pay-1", "billing", "one left parked", |i| {
        i.stats.parked_message_count == 1
    })
    .await;
}

async fn a_retry_nack_delivers_again_with_the_retry_count(client: Client) {
    append(&client, "retry-1", 0..1).await;
    client
        .create_persistent_subscription("retry-1", "g", &from_start())
        .await
        .unwrap();
    let mut sub = subscribe(&client, "retry-1", "g").await;
    let (event, retries) = next(&mut sub).await;
    assert_eq!(retries, 0);
    sub.nack(&event, NakAction::Retry, "later").await.unwrap();
    let (again, retries) = next(&mut sub).await;
    assert_eq!(again.get_original_event().id, event.get_original_event().id);
    assert_eq!(retries, 1);
    // `Skip` finishes it without processing.
    sub.nack(&again, NakAction::Skip, "never mind")
        .await
        .unwrap();
    assert!(quiet(&mut sub).await);
    let info = info(&client, "retry-1", "g").await;
    assert_eq!(info.stats.parked_message_count, 0);
    assert_eq!(info.stats.total_in_flight_messages, 0);
}

async fn a_stop_nack_drops_the_consumer_and_another_gets_its_events(client: Client) {
    append(&client, "stop-1", 0..2).await;
    let options = from_start().consumer_strategy_name(SystemConsumerStrategy::DispatchToSingle);
    client
        .create_persistent_subscription("stop-1", "g", &options)
        .await
        .unwrap();
    let mut first = subscribe(&client, "stop-1", "g").await;
    let (event, _) = next(&mut first).await;
    assert_eq!(revision(&event), 0);
    let mut second = subscribe(&client, "stop-1", "g").await;
    confirmation(&mut second).await;
    first
        .nack(&event, NakAction::Stop, "shutting down")
        .await
        .unwrap();
    let dropped = ended(&mut first).await;
    assert!(
        matches!(dropped, kurrentdb::Error::IllegalStateError(_)),
        "{dropped:?}"
    );
    // What the first held goes to the second, which is now the only consumer.
    let mut revisions = Vec::new();
    for _ in 0..2 {
        let (event, _) = next(&mut second).await;
        revisions.push(revision(&event));
        second.ack(&event).await.unwrap();
    }
    revisions.sort();
    assert_eq!(revisions, [0, 1]);
}

async fn an_unacked_event_comes_again_after_the_timeout_then_is_parked(client: Client) {
    append(&client, "slow-1", 0..1).await;
    let options = from_start()
        .message_timeout(Duration::from_millis(300))
        .max_retry_count(1);
    client
        .create_persistent_subscription("slow-1", "g", &options)
        .await
        .unwrap();
    let mut sub = subscribe(&client, "slow-1", "g").await;
    let (event, retries) = next(&mut sub).await;
    assert_eq!(retries, 0);
    let (again, retries) = next(&mut sub).await;
    assert_eq!(again.get_original_event().id, event.get_original_event().id);
    assert_eq!(retries, 1, "delivered again after the timeout");
    eventually(&client, "slow-1", "g", "parked after max retries", |i| {
        i.stats.parked_message_count == 1
    })
    .await;
    assert!(quiet(&mut sub).await, "parked, so not delivered again");
}

async fn list_answers_with_no_groups_then_with_each(client: Client) {
    let options = ListPersistentSubscriptionsOptions::default();
    assert!(
        client
            .list_all_persistent_subscriptions(&options)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        client
            .list_persistent_subscriptions_for_stream("list-1", &options)
            .await
            .unwrap()
            .is_empty()
    );
    for (stream, group) in [("list-1", "a"), ("list-2", "b")] {
        client
            .create_persistent_subscription(stream, group, &from_start())
            .await
            .unwrap();
    }
    client
        .create_persistent_subscription_to_all("c", &all_from_start())
        .await
        .unwrap();
    let mut all: Vec<_> = client
        .list_all_persistent_subscriptions(&options)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.event_source, i.group_name))
        .collect();
    all.sort();
    let all: Vec<_> = all.iter().map(|(s, g)| (s.as_str(), g.as_str())).collect();
    assert_eq!(all, [("$all", "c"), ("list-1", "a"), ("list-2", "b")]);
    let one = client
        .list_persistent_subscriptions_for_stream("list-1", &options)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        (one[0].event_source.as_str(), one[0].group_name.as_str()),
        ("list-1", "a")
    );
    let to_all = client
        .list_persistent_subscriptions_to_all(&options)
        .await
        .unwrap();
    assert_eq!(to_all.len(), 1);
    assert_eq!(to_all[0].group_name, "c");
    let settings = to_all[0].settings.as_ref().unwrap();
    assert_eq!(settings.start_from, StreamPosition::Start);
}

async fn get_info_reports_the_settings_connections_and_counts(client: Client) {
    append(&client, "info-1", 0..5).await;
    let options = from_start()
        .resolve_link_tos(true)
        .extra_statistics(true)
        .message_timeout(Duration::from_secs(5))
        .max_retry_count(3)
        .live_buffer_size(100)
        .read_batch_size(30)
        .history_buffer_size(200)
        .checkpoint_after(Duration::from_secs(60))
        .checkpoint_lower_bound(2)
        .checkpoint_upper_bound(4)
        .max_subscriber_count(4)
        .consumer_strategy_name(SystemConsumerStrategy::DispatchToSingle);
    client
        .create_persistent_subscription("info-1", "g", &options)
        .await
        .unwrap();
    let info = info(&client, "info-1", "g").await;
    assert_eq!(info.event_source, "info-1");
    assert_eq!(info.group_name, "g");
    let s = info.settings.as_ref().unwrap();
    assert!(s.resolve_link_tos && s.extra_statistics, "kept as given");
    assert_eq!(s.start_from, StreamPosition::Start);
    assert_eq!(s.message_timeout, Duration::from_secs(5));
    assert_eq!(
        (
            s.max_retry_count,
            s.live_buffer_size,
            s.read_batch_size,
            s.history_buffer_size
        ),
        (3, 100, 30, 200)
    );
    assert_eq!(s.checkpoint_after, Duration::from_secs(60));
    assert_eq!((s.checkpoint_lower_bound, s.checkpoint_upper_bound), (2, 4));
    assert_eq!(s.max_subscriber_count, 4);
    assert_eq!(
        s.consumer_strategy_name,
        SystemConsumerStrategy::DispatchToSingle
    );
    assert!(info.connections.is_empty());

    let mut sub = client
        .subscribe_to_persistent_subscription(
            "info-1",
            "g",
            &SubscribeToPersistentSubscriptionOptions::default().buffer_size(2),
        )
        .await
        .unwrap();
    let held = [next(&mut sub).await.0, next(&mut sub).await.0];
    let info = eventually(&client, "info-1", "g", "two in flight", |i| {
        i.stats.total_in_flight_messages == 2
    })
    .await;
    assert_eq!(info.status, "Live");
    assert_eq!(info.connections.len(), 1);
    assert_eq!(info.connections[0].in_flight_messages, 2);
    assert_eq!(info.connections[0].available_slots, 0);
    for event in &held {
        sub.ack(event).await.unwrap();
    }
    for _ in 0..2 {
        let (event, _) = next(&mut sub).await;
        sub.ack(&event).await.unwrap();
    }
    // Four finished events make a checkpoint (the upper bound)...
    eventually(&client, "info-1", "g", "a checkpoint at 3", |i| {
        i.stats.last_checkpointed_event_revision == Some(3)
    })
    .await;
    // ... and one more does not (below the lower bound, however long it waits).
    let (fifth, _) = next(&mut sub).await;
    sub.ack(&fifth).await.unwrap();
    let info = eventually(&client, "info-1", "g", "five finished", |i| {
        i.stats.total_items == 5
    })
    .await;
    assert_eq!(info.stats.last_checkpointed_event_revision, Some(3));
    assert_eq!(info.stats.last_known_event_revision, Some(4));
    assert_eq!(info.stats.total_in_flight_messages, 0);

    let missing = client
        .get_persistent_subscription_info("info-1", "nobody", &Default::default())
        .await;
    assert!(
        matches!(missing, Err(kurrentdb::Error::ResourceNotFound)),
        "{missing:?}"
    );
}

async fn update_changes_the_settings_keeps_the_filter_and_drops_consumers(client: Client) {
    append(&client, "upd-1", 0..1).await;
    client
        .create_persistent_subscription("upd-1", "g", &from_start().max_retry_count(2))
        .await
        .unwrap();
    let mut sub = subscribe(&client, "upd-1", "g").await;
    confirmation(&mut sub).await;
    let update = from_start()
        .max_retry_count(7)
        .consumer_strategy_name(SystemConsumerStrategy::Pinned);
    client
        .update_persistent_subscription("upd-1", "g", &update)
        .await
        .unwrap();
    let s = info(&client, "upd-1", "g").await.settings.unwrap();
    assert_eq!(s.max_retry_count, 7);
    assert_eq!(s.consumer_strategy_name, SystemConsumerStrategy::Pinned);
    ended(&mut sub).await;
    let missing = client
        .update_persistent_subscription("upd-1", "nobody", &update)
        .await;
    assert!(
        matches!(missing, Err(kurrentdb::Error::ResourceNotFound)),
        "{missing:?}"
    );

    // An update of a `$all` group keeps its filter (updates carry none).
    let filter = SubscriptionFilter::on_stream_name().add_prefix("keep-");
    client
        .create_persistent_subscription_to_all("f", &all_from_start().filter(filter))
        .await
        .unwrap();
    client
        .update_persistent_subscription_to_all("f", &all_from_start().max_retry_count(5))
        .await
        .unwrap();
    append(&client, "drop-1", 0..1).await;
    append(&client, "keep-1", 0..1).await;
    let mut sub = client
        .subscribe_to_persistent_subscription_to_all("f", &Default::default())
        .await
        .unwrap();
    let (event, _) = next(&mut sub).await;
    assert_eq!(event.get_original_event().stream_id(), "keep-1");
    let info = client
        .get_persistent_subscription_info_to_all("f", &Default::default())
        .await
        .unwrap();
    assert_eq!(info.settings.unwrap().max_retry_count, 5);
}

async fn delete_drops_the_consumer_and_the_group_is_gone(client: Client) {
    client
        .create_persistent_subscription("del-1", "g", &from_start())
        .await
        .unwrap();
    let again = client
        .create_persistent_subscription("del-1", "g", &from_start())
        .await;
    assert!(
        matches!(again, Err(kurrentdb::Error::ResourceAlreadyExists)),
        "{again:?}"
    );
    let mut sub = subscribe(&client, "del-1", "g").await;
    confirmation(&mut sub).await;
    client
        .delete_persistent_subscription(
            "del-1",
            "g",
            &DeletePersistentSubscriptionOptions::default(),
        )
        .await
        .unwrap();
    let dropped = ended(&mut sub).await;
    assert!(
        matches!(dropped, kurrentdb::Error::IllegalStateError(_)),
        "the client's 'persistent subscription has dropped': {dropped:?}"
    );
    let gone = client
        .get_persistent_subscription_info("del-1", "g", &Default::default())
        .await;
    assert!(
        matches!(gone, Err(kurrentdb::Error::ResourceNotFound)),
        "{gone:?}"
    );
    let gone = client
        .subscribe_to_persistent_subscription("del-1", "g", &Default::default())
        .await;
    assert!(
        matches!(gone, Err(kurrentdb::Error::ResourceNotFound)),
        "{:?}",
        gone.err()
    );
    let gone = client
        .delete_persistent_subscription("del-1", "g", &Default::default())
        .await;
    assert!(
        matches!(gone, Err(kurrentdb::Error::ResourceNotFound)),
        "{gone:?}"
    );

    client
        .create_persistent_subscription_to_all("g", &all_from_start())
        .await
        .unwrap();
    client
        .delete_persistent_subscription_to_all("g", &Default::default())
        .await
        .unwrap();
    assert!(
        client
            .list_all_persistent_subscriptions(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn two_round_robin_consumers_share_the_events_never_one_at_both(client: Client) {
    const EVENTS: usize = 60;
    for s in 0..6 {
        append(&client, &format!("rr-{s}"), 0..(EVENTS / 6) as u64).await;
    }
    let options = all_from_start().consumer_strategy_name(SystemConsumerStrategy::RoundRobin);
    client
        .create_persistent_subscription_to_all("workers", &options)
        .await
        .unwrap();
    let in_flight = Arc::new(Mutex::new(HashSet::new()));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for consumer in 0..2 {
        let mut sub = client
            .subscribe_to_persistent_subscription_to_all(
                "workers",
                &SubscribeToPersistentSubscriptionOptions::default().buffer_size(3),
            )
            .await
            .unwrap();
        let (in_flight, acked, done) = (in_flight.clone(), acked.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let (event, _) = next(&mut sub).await;
                let id = event.get_original_event().id;
                assert!(
                    in_flight.lock().unwrap().insert(id),
                    "event {id} in flight at both consumers"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
                in_flight.lock().unwrap().remove(&id);
                sub.ack(&event).await.unwrap();
                let total = {
                    let mut acked = acked.lock().unwrap();
                    acked.push((consumer, id));
                    acked.len()
                };
                if total == EVENTS {
                    done.notify_one();
                }
            }
        }));
    }
    tokio::time::timeout(WAIT, done.notified())
        .await
        .expect("every event acked in time");
    for task in &tasks {
        task.abort();
    }
    let acked = acked.lock().unwrap().clone();
    let ids: HashSet<_> = acked.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), EVENTS, "each event acked once");
    assert_eq!(acked.len(), EVENTS, "no event delivered twice");
    for consumer in 0..2 {
        let share = acked.iter().filter(|(c, _)| *c == consumer).count();
        assert!(
            share >= EVENTS / 4,
            "consumer {consumer} got {share} of {EVENTS}"
        );
    }
}

async fn a_group_refuses_consumers_beyond_its_max_subscriber_count(client: Client) {
    client
        .create_persistent_subscription("max-1", "g", &from_start().max_subscriber_count(1))
        .await
        .unwrap();
    let mut first = subscribe(&client, "max-1", "g").await;
    confirmation(&mut first).await;
    let second = client
        .subscribe_to_persistent_subscription("max-1", "g", &Default::default())
        .await;
    match second {
        Err(kurrentdb::Error::Grpc { code, message }) => {
            assert_eq!(code, tonic::Code::FailedPrecondition);
            assert!(
                message.starts_with("Maximum subscriptions reached"),
                "{message}"
            );
        }
        other => panic!("expected the maximum reached, got {:?}", other.err()),
    }
}

async fn restart_subsystem_drops_consumers_and_serves_the_groups_again(client: Client) {
    append(&client, "restart-1", 0..2).await;
    client
        .create_persistent_subscription("restart-1", "g", &from_start())
        .await
        .unwrap();
    let mut sub = subscribe(&client, "restart-1", "g").await;
    let (first, _) = next(&mut sub).await;
    sub.ack(&first).await.unwrap();
    // The ack reaches the group before the restart.
    eventually(&client, "restart-1", "g", "the ack", |i| {
        i.stats.total_items == 1
    })
    .await;
    client
        .restart_persistent_subscription_subsystem(
            &RestartPersistentSubscriptionSubsystem::default(),
        )
        .await
        .unwrap();
    ended(&mut sub).await;
    let mut sub = subscribe(&client, "restart-1", "g").await;
    let (event, _) = next(&mut sub).await;
    assert_eq!(revision(&event), 1, "served again after the checkpoint");
}

/// A restarted server resumes each group after its checkpoint: after a graceful stop
/// (the checkpoint of every acked event written) exactly after the last ack; after a
/// crash after the last stored checkpoint, delivering some events again but losing
/// none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_resumes_after_the_checkpoint_without_losing_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    for graceful in [true, false] {
        let stream = if graceful { "graceful-1" } else { "crash-1" };
        // First life: 20 events, 10 acked.
        let store = sqlite(&path).await;
        let subs = Arc::new(
            PersistentSubscriptions::open(Arc::new(store.clone()))
                .await
                .unwrap(),
        );
        let server = Server::serve(
            Services::new(Arc::new(store.clone()))
                .persistent(subs.clone())
                .router(),
        )
        .await;
        let client = server.client();
        append(&client, stream, 0..20).await;
        let options = from_start()
            .checkpoint_lower_bound(5)
            .checkpoint_upper_bound(5);
        client
            .create_persistent_subscription(stream, "g", &options)
            .await
            .unwrap();
        let mut sub = subscribe(&client, stream, "g").await;
        for expected in 0..10 {
            let (event, _) = next(&mut sub).await;
            assert_eq!(revision(&event), expected);
            sub.ack(&event).await.unwrap();
        }
        eventually(&client, stream, "g", "ten acked", |i| {
            i.stats.total_items == 10
        })
        .await;
        if graceful {
            subs.shutdown().await;
        }
        drop((sub, client, server, subs));
        store.close().await.unwrap();

        // Second life over the same file.
        let store = sqlite(&path).await;
        let subs = Arc::new(
            PersistentSubscriptions::open(Arc::new(store.clone()))
                .await
                .unwrap(),
        );
        let server = Server::serve(
            Services::new(Arc::new(store.clone()))
                .persistent(subs.clone())
                .router(),
        )
        .await;
        let client = server.client();
        let mut sub = subscribe(&client, stream, "g").await;
        let (first, _) = next(&mut sub).await;
        if graceful {
            assert_eq!(revision(&first), 10, "exactly after the last ack");
        } else {
            assert!(
                revision(&first) <= 10,
                "no acked-but-unstored event is skipped"
            );
        }
        let mut seen = vec![revision(&first)];
        sub.ack(&first).await.unwrap();
        while seen.last() != Some(&19) {
            let (event, _) = next(&mut sub).await;
            seen.push(revision(&event));
            sub.ack(&event).await.unwrap();
        }
        let expected: Vec<u64> = (seen[0]..20).collect();
        assert_eq!(seen, expected, "every event after the checkpoint, in order");
        subs.shutdown().await;
        drop((sub, client, server, subs));
        store.close().await.unwrap();
    }
}

/// Tokens for the authentication test: `admin` may do anything, `reader` only read,
/// `acct` anything on `acct-` streams.
struct Tokens;

impl Authenticator for Tokens {
    fn authenticate(&self, credentials: Credentials<'_>) -> Option<Grant> {
        let Credentials::Basic { username, password } = credentials else {
            return None;
        };
        let grant = match (username, password) {
            ("admin", "admin-secret") => Grant {
                read: true,
                write: true,
                admin: true,
                prefixes: Vec::new(),
            },
            ("reader", "reader-secret") => Grant {
                read: true,
                ..Grant::default()
            },
            ("acct", "acct-secret") => Grant {
                read: true,
                write: true,
                admin: true,
                prefixes: vec!["acct-".to_owned()],
            },
            _ => return None,
        };
        Some(grant)
    }
}

/// Consuming needs read and the stream's reach; managing groups needs admin; a caller
/// limited to prefixes neither sees nor consumes other streams' groups nor `$all`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_prefixes_limit_who_consumes_manages_and_sees_groups() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let subs = Arc::new(PersistentSubscriptions::open(store.clone()).await.unwrap());
    let grpc = Services::new(store)
        .persistent(subs.clone())
        .authenticator(Arc::new(Tokens))
        .router();
    let server = Server::serve(grpc).await;
    let admin = server.client_as("admin:admin-secret@");
    let reader = server.client_as("reader:reader-secret@");
    let acct = server.client_as("acct:acct-secret@");
    let nobody = server.client();

    let anonymous = nobody
        .list_all_persistent_subscriptions(&Default::default())
        .await;
    assert!(
        matches!(anonymous, Err(kurrentdb::Error::AccessDenied)),
        "{anonymous:?}"
    );
    let anonymous = nobody
        .create_persistent_subscription("acct-1", "g", &from_start())
        .await;
    assert!(
        matches!(anonymous, Err(kurrentdb::Error::AccessDenied)),
        "{anonymous:?}"
    );

    append(&admin, "acct-1", 0..1).await;
    append(&admin, "order-1", 0..1).await;
    let denied = reader
        .create_persistent_subscription("order-1", "g", &from_start())
        .await;
    assert!(
        matches!(denied, Err(kurrentdb::Error::AccessDenied)),
        "managing needs admin: {denied:?}"
    );
    admin
        .create_persistent_subscription("order-1", "g", &from_start())
        .await
        .unwrap();
    admin
        .create_persistent_subscription_to_all("everything", &all_from_start())
        .await
        .unwrap();
    acct.create_persistent_subscription("acct-1", "g", &from_start())
        .await
        .unwrap();
    let outside = acct
        .create_persistent_subscription("order-1", "h", &from_start())
        .await;
    assert!(
        matches!(outside, Err(kurrentdb::Error::AccessDenied)),
        "{outside:?}"
    );
    let all = acct
        .create_persistent_subscription_to_all("mine", &all_from_start())
        .await;
    assert!(
        matches!(all, Err(kurrentdb::Error::AccessDenied)),
        "{all:?}"
    );

    // The reader consumes any stream's group; `acct` only its own streams'.
    let mut sub = subscribe(&reader, "order-1", "g").await;
    assert_eq!(revision(&next(&mut sub).await.0), 0);
    let mut sub = subscribe(&acct, "acct-1", "g").await;
    assert_eq!(revision(&next(&mut sub).await.0), 0);
    for (stream, to_all) in [("order-1", false), ("", true)] {
        let denied = if to_all {
            acct.subscribe_to_persistent_subscription_to_all("everything", &Default::default())
                .await
        } else {
            acct.subscribe_to_persistent_subscription(stream, "g", &Default::default())
                .await
        };
        assert!(
            matches!(denied, Err(kurrentdb::Error::AccessDenied)),
            "{stream}: {:?}",
            denied.err()
        );
    }

    // What each sees.
    let listed = |client: Client| async move {
        let mut groups: Vec<_> = client
            .list_all_persistent_subscriptions(&Default::default())
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.event_source)
            .collect();
        groups.sort();
        groups
    };
    assert_eq!(listed(reader.clone()).await, ["$all", "acct-1", "order-1"]);
    assert_eq!(listed(acct.clone()).await, ["acct-1"]);
    let hidden = acct
        .get_persistent_subscription_info("order-1", "g", &Default::default())
        .await;
    assert!(
        matches!(hidden, Err(kurrentdb::Error::AccessDenied)),
        "{hidden:?}"
    );
    let restart = acct
        .restart_persistent_subscription_subsystem(&Default::default())
        .await;
    assert!(
        matches!(restart, Err(kurrentdb::Error::AccessDenied)),
        "{restart:?}"
    );
    subs.shutdown().await;
}

/// `GetSupportedMethods` lists the persistent calls (with `stream` and `all`) only when
/// the server serves them; without, they answer `Unimplemented`. `TruncateParked`, not
/// in the clients' protocol, answers `Unimplemented` naming the way to truncate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_calls_are_listed_only_when_served() {
    use tower::ServiceExt;
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let subs = Arc::new(PersistentSubscriptions::open(store.clone()).await.unwrap());
    let call = |router: axum::Router, path: &'static str| async move {
        let request = axum::http::Request::post(path)
            .header("content-type", "application/grpc")
            .body(axum::body::Body::from(vec![0u8, 0, 0, 0, 0]))
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        (header("grpc-status"), header("grpc-message"))
    };
    let plain = foldstore_grpc::routes(store.clone());
    let (status, message) = call(
        plain,
        "/event_store.client.persistent_subscriptions.PersistentSubscriptions/List",
    )
    .await;
    assert_eq!(
        status, "12",
        "Unimplemented without persistent subscriptions"
    );
    assert!(message.contains("PersistentSubscriptions"), "{message}");

    let served = Services::new(store.clone())
        .persistent(subs.clone())
        .router();
    let (status, message) = call(
        served,
        "/event_store.client.persistent_subscriptions.PersistentSubscriptions/TruncateParked",
    )
    .await;
    assert_eq!(status, "12");
    assert!(
        message.contains("%24tb") || message.contains("$tb"),
        "{message}"
    );

    // The listing, as the clients read it.
    let methods = |router: axum::Router| async move {
        let request = axum::http::Request::post(
            "/event_store.client.server_features.ServerFeatures/GetSupportedMethods",
        )
        .header("content-type", "application/grpc")
        .body(axum::body::Body::from(vec![0u8, 0, 0, 0, 0]))
        .unwrap();
        let response = router.oneshot(request).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        <SupportedMethods as prost::Message>::decode(&body[5..])
            .unwrap()
            .methods
    };
    let listed = methods(
        Services::new(store.clone())
            .persistent(subs.clone())
            .router(),
    )
    .await;
    let persistent: Vec<_> = listed
        .iter()
        .filter(|m| {
            m.service_name == "event_store.client.persistent_subscriptions.persistentsubscriptions"
        })
        .collect();
    let names: HashSet<_> = persistent.iter().map(|m| m.method_name.as_str()).collect();
    let expected: HashSet<_> = [
        "create",
        "update",
        "delete",
        "read",
        "getinfo",
        "replayparked",
        "list",
        "restartsubsystem",
    ]
    .into_iter()
    .collect();
    assert_eq!(names, expected);
    assert!(persistent.iter().all(|m| m.features == ["stream", "all"]));
    let listed = methods(foldstore_grpc::routes(store)).await;
    assert!(
        listed
            .iter()
            .all(|m| !m.service_name.contains("persistent")),
        "{listed:?}"
    );
    subs.shutdown().await;
}

/// `ServerFeatures.GetSupportedMethods`' answer, decoded by the test itself.
#[derive(Clone, PartialEq, prost::Message)]
struct SupportedMethods {
    #[prost(message, repeated, tag = "1")]
    methods: Vec<SupportedMethod>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SupportedMethod {
    #[prost(string, tag = "1")]
    method_name: String,
    #[prost(string, tag = "2")]
    service_name: String,
    #[prost(string, repeated, tag = "3")]
    features: Vec<String>,
}
