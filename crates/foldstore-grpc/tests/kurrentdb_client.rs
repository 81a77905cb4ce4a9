//! KurrentDB's official Rust client (`kurrentdb`) against our gRPC routes, over h2c on
//! a free port, on the in-memory store, on SQLite and on PostgreSQL (when
//! `FOLDSTORE_TEST_POSTGRES_URL` is set; skipped saying so otherwise): each call the crate implements,
//! as an unchanged KurrentDB application makes it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::Server;
use foldstore_core::{EventStore, InMemoryStore};
use kurrentdb::{
    AppendToStreamOptions, Client, CurrentRevision, DeleteStreamOptions, EventData, ReadAllOptions,
    ReadStreamOptions, StreamPosition, StreamState, SubscribeToAllOptions,
    SubscribeToStreamOptions, SubscriptionEvent, SubscriptionFilter, TombstoneStreamOptions,
};
use uuid::Uuid;

/// Runs `test` against a server over each backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = Server::start(Arc::new(foldstore_core::InMemoryStore::new())).await;
                    super::$name(server.client()).await;
                }
            )*
        }
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("events.db");
                    let options = foldstore_sqlite::SqliteOptions::default();
                    let store = foldstore_sqlite::SqliteStore::open(path, options).await.unwrap();
                    let server = Server::start(Arc::new(store)).await;
                    super::$name(server.client()).await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let how = "cargo test -p foldstore-grpc --test kurrentdb_client postgres";
                    let Some(url) = foldstore_postgres::testkit::test_url(stringify!($name), how) else {
                        return;
                    };
                    let (store, _schema) = foldstore_postgres::testkit::fresh_store(&url).await;
                    let server = Server::start(Arc::new(store)).await;
                    super::$name(server.client()).await;
                }
            )*
        }
    };
}

on_every_backend!(
    append_then_read_forwards_and_backwards,
    wrong_expected_revision_is_a_result_with_current_and_expected,
    retried_append_is_idempotent,
    binary_data_and_custom_metadata_round_trip,
    read_all_forwards_backwards_and_from_a_position,
    stream_subscription_sends_history_caught_up_then_live,
    filtered_all_subscription_sends_history_then_live_and_checkpoints,
    delete_then_append_continues_revisions,
    tombstoned_stream_refuses_reads_and_appends,
    batch_append_answers_each_correlation_id,
    stream_metadata_round_trips_and_applies_to_reads,
    concurrent_metadata_writes_at_one_expected_revision_let_one_win,
);

const WAIT: Duration = Duration::from_secs(10);

fn json(event_type: &str, n: u64) -> EventData {
    EventData::json(event_type, &serde_json::json!({ "n": n })).unwrap()
}

async fn read_stream(client: &Client, stream: &str, options: ReadStreamOptions) -> Vec<u64> {
    let mut read = client.read_stream(stream, &options).await.unwrap();
    let mut revisions = Vec::new();
    while let Some(event) = read.next().await.unwrap() {
        revisions.push(event.get_original_event().revision);
    }
    revisions
}

async fn append_then_read_forwards_and_backwards(client: Client) {
    let info = client.server_info().await.unwrap();
    assert_eq!(
        info.version().to_string(),
        foldstore_grpc::SERVER_VERSION,
        "the client's first call, GetSupportedMethods, answered"
    );
    let events = (0..5).map(|n| json("Counted", n)).collect::<Vec<_>>();
    let options = AppendToStreamOptions::default().stream_state(StreamState::NoStream);
    let written = client
        .append_to_stream("count-1", &options, events)
        .await
        .unwrap();
    assert_eq!(written.next_expected_version, 4);
    // The position is the last event's (both halves carry a narrow position; a wide
    // PostgreSQL one is split, see the README).
    let mut last = client
        .read_all(
            &ReadAllOptions::default()
                .backwards()
                .position(StreamPosition::End)
                .max_count(1),
        )
        .await
        .unwrap();
    let last = last.next().await.unwrap().unwrap();
    assert_eq!(last.get_original_event().position, written.position);

    let forwards = read_stream(&client, "count-1", ReadStreamOptions::default()).await;
    assert_eq!(forwards, [0, 1, 2, 3, 4]);
    let backwards = ReadStreamOptions::default()
        .backwards()
        .position(StreamPosition::End)
        .max_count(2);
    assert_eq!(read_stream(&client, "count-1", backwards).await, [4, 3]);
    let from_two = ReadStreamOptions::default().position(StreamPosition::Position(2));
    assert_eq!(read_stream(&client, "count-1", from_two).await, [2, 3, 4]);

    let mut read = client
        .read_stream("count-1", &ReadStreamOptions::default().max_count(1))
        .await
        .unwrap();
    let first = read.next().await.unwrap().unwrap();
    let event = first.get_original_event();
    assert_eq!(event.event_type, "Counted");
    assert!(event.is_json);
    assert_eq!(event.as_json::<serde_json::Value>().unwrap()["n"], 0);
    assert_eq!(event.stream_id(), "count-1");
    assert!(event.created.timestamp() > 1_700_000_000, "created is set");

    let missing = client
        .read_stream("never-written", &ReadStreamOptions::default())
        .await
        .unwrap()
        .next()
        .await;
    assert!(
        matches!(missing, Err(kurrentdb::Error::ResourceNotFound)),
        "{missing:?}"
    );
}

async fn wrong_expected_revision_is_a_result_with_current_and_expected(client: Client) {
    let options = AppendToStreamOptions::default().stream_state(StreamState::Any);
    client
        .append_to_stream("race-1", &options, vec![json("A", 0), json("A", 1)])
        .await
        .unwrap();
    let stale = AppendToStreamOptions::default().stream_state(StreamState::StreamRevision(0));
    let refused = client
        .append_to_stream("race-1", &stale, vec![json("A", 2)])
        .await;
    match refused {
        Err(kurrentdb::Error::WrongExpectedVersion { current, expected }) => {
            assert_eq!(current, CurrentRevision::Current(1));
            assert_eq!(expected, StreamState::StreamRevision(0));
        }
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }
    let no_stream = AppendToStreamOptions::default().stream_state(StreamState::NoStream);
    let refused = client
        .append_to_stream("race-1", &no_stream, vec![json("A", 2)])
        .await;
    assert!(matches!(
        refused,
        Err(kurrentdb::Error::WrongExpectedVersion {
            current: CurrentRevision::Current(1),
            expected: StreamState::NoStream
        })
    ));
    let exists = AppendToStreamOptions::default().stream_state(StreamState::StreamExists);
    let refused = client
        .append_to_stream("nobody-1", &exists, vec![json("A", 0)])
        .await;
    assert!(matches!(
        refused,
        Err(kurrentdb::Error::WrongExpectedVersion {
            current: CurrentRevision::NoStream,
            expected: StreamState::StreamExists
        })
    ));
}

async fn retried_append_is_idempotent(client: Client) {
    let ids = [Uuid::new_v4(), Uuid::new_v4()];
    let events = || {
        ids.iter()
            .map(|id| json("Paid", 1).id(*id))
            .collect::<Vec<_>>()
    };
    let options = AppendToStreamOptions::default().stream_state(StreamState::NoStream);
    let first = client
        .append_to_stream("pay-1", &options, events())
        .await
        .unwrap();
    let retry = client
        .append_to_stream("pay-1", &options, events())
        .await
        .unwrap();
    assert_eq!(retry.next_expected_version, first.next_expected_version);
    assert_eq!(
        retry.position, first.position,
        "the first append's position"
    );
    let mut read = client
        .read_stream("pay-1", &ReadStreamOptions::default())
        .await
        .unwrap();
    let mut stored = Vec::new();
    while let Some(event) = read.next().await.unwrap() {
        stored.push(event.get_original_event().id);
    }
    assert_eq!(stored, ids, "stored once, with the client's ids");
}

async fn binary_data_and_custom_metadata_round_trip(client: Client) {
    let binary = Bytes::from_static(&[0, 159, 146, 150, 255]);
    let cases = [
        EventData::binary("Blob", binary.clone()).metadata(Bytes::from_static(b"\x01not json")),
        EventData::binary("Blob", binary.clone()).metadata(Bytes::from_static(b"{ \"k\" : 1 }")),
        EventData::binary("Blob", binary.clone()).metadata(Bytes::from_static(b"{}")),
        EventData::binary("Blob", binary.clone()),
    ];
    let sent = [&b"\x01not json"[..], b"{ \"k\" : 1 }", b"{}", b""];
    client
        .append_to_stream("blob-1", &AppendToStreamOptions::default(), cases.to_vec())
        .await
        .unwrap();
    let mut read = client
        .read_stream("blob-1", &ReadStreamOptions::default())
        .await
        .unwrap();
    for expected in sent {
        let event = read.next().await.unwrap().unwrap();
        let event = event.get_original_event();
        assert!(!event.is_json);
        assert_eq!(event.data, binary, "data byte for byte");
        assert_eq!(
            event.custom_metadata.as_ref(),
            expected,
            "custom metadata byte for byte"
        );
        assert_eq!(event.metadata["content-type"], "application/octet-stream");
    }
}

async fn read_all_forwards_backwards_and_from_a_position(client: Client) {
    let any = AppendToStreamOptions::default();
    client
        .append_to_stream("left-1", &any, vec![json("L", 0), json("L", 1)])
        .await
        .unwrap();
    client
        .append_to_stream("right-1", &any, vec![json("R", 0)])
        .await
        .unwrap();
    let all = |options: ReadAllOptions| {
        let client = client.clone();
        async move {
            let mut read = client.read_all(&options).await.unwrap();
            let mut seen = Vec::new();
            while let Some(event) = read.next().await.unwrap() {
                let e = event.get_original_event();
                seen.push((e.stream_id().to_owned(), e.revision, e.position));
            }
            seen
        }
    };
    let forwards = all(ReadAllOptions::default()).await;
    let names: Vec<_> = forwards.iter().map(|(s, r, _)| (s.as_str(), *r)).collect();
    assert_eq!(names, [("left-1", 0), ("left-1", 1), ("right-1", 0)]);
    let backwards = all(ReadAllOptions::default()
        .backwards()
        .position(StreamPosition::End))
    .await;
    let reversed: Vec<_> = forwards.iter().rev().cloned().collect();
    assert_eq!(backwards, reversed);

    let second = forwards[1].2;
    let from = all(ReadAllOptions::default().position(StreamPosition::Position(second))).await;
    assert_eq!(from, forwards[1..], "forwards from a position includes it");
    let before = all(ReadAllOptions::default()
        .backwards()
        .position(StreamPosition::Position(second)))
    .await;
    assert_eq!(
        before,
        forwards[..1],
        "backwards from a position excludes it"
    );

    let filtered =
        all(ReadAllOptions::default()
            .filter(SubscriptionFilter::on_stream_name().add_prefix("right-")))
        .await;
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].0, "right-1");
}

/// The next event, skipping confirmations and the like; `None` at `CaughtUp`.
async fn next(subscription: &mut kurrentdb::Subscription) -> Option<(String, u64, String)> {
    loop {
        let event = tokio::time::timeout(WAIT, subscription.next_subscription_event())
            .await
            .expect("the subscription answers in time")
            .unwrap();
        match event {
            SubscriptionEvent::EventAppeared(e) => {
                let e = e.get_original_event();
                return Some((e.stream_id().to_owned(), e.revision, e.event_type.clone()));
            }
            SubscriptionEvent::CaughtUp(_) => return None,
            _ => continue,
        }
    }
}

async fn stream_subscription_sends_history_caught_up_then_live(client: Client) {
    let any = AppendToStreamOptions::default();
    client
        .append_to_stream("sub-1", &any, vec![json("H", 0), json("H", 1)])
        .await
        .unwrap();
    let from_start = SubscribeToStreamOptions::default().start_from(StreamPosition::Start);
    let mut sub = client.subscribe_to_stream("sub-1", &from_start).await;
    assert_eq!(next(&mut sub).await.unwrap().1, 0);
    assert_eq!(next(&mut sub).await.unwrap().1, 1);
    assert_eq!(next(&mut sub).await, None, "CaughtUp after the history");
    client
        .append_to_stream("sub-1", &any, vec![json("Live", 2)])
        .await
        .unwrap();
    let live = next(&mut sub).await.unwrap();
    assert_eq!((live.1, live.2.as_str()), (2, "Live"));

    let mut from_zero = client
        .subscribe_to_stream(
            "sub-1",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Position(0)),
        )
        .await;
    assert_eq!(next(&mut from_zero).await.unwrap().1, 1, "after revision 0");
    assert_eq!(next(&mut from_zero).await.unwrap().1, 2);
    assert_eq!(next(&mut from_zero).await, None);

    let mut from_end = client
        .subscribe_to_stream("sub-1", &SubscribeToStreamOptions::default())
        .await;
    assert_eq!(
        next(&mut from_end).await,
        None,
        "from the end: live at once"
    );
    client
        .append_to_stream("sub-1", &any, vec![json("Later", 3)])
        .await
        .unwrap();
    assert_eq!(next(&mut from_end).await.unwrap().1, 3);
}

async fn filtered_all_subscription_sends_history_then_live_and_checkpoints(client: Client) {
    let any = AppendToStreamOptions::default();
    for n in 0..4 {
        let stream = if n % 2 == 0 { "keep-1" } else { "skip-1" };
        client
            .append_to_stream(stream, &any, vec![json("E", n)])
            .await
            .unwrap();
    }
    // The clients' default filter shape: a regex with lookahead.
    let filter = SubscriptionFilter::on_stream_name()
        .regex("^(?!skip-).*")
        .max(1);
    let mut sub = client
        .subscribe_to_all(&SubscribeToAllOptions::default().filter(filter))
        .await;
    let mut history = Vec::new();
    let mut checkpoints = 0;
    loop {
        let event = tokio::time::timeout(WAIT, sub.next_subscription_event())
            .await
            .unwrap()
            .unwrap();
        match event {
            SubscriptionEvent::EventAppeared(e) => {
                let e = e.get_original_event();
                history.push((e.stream_id().to_owned(), e.revision));
            }
            SubscriptionEvent::Checkpoint(_) => checkpoints += 1,
            SubscriptionEvent::CaughtUp(_) => break,
            _ => {}
        }
    }
    assert_eq!(
        history,
        [("keep-1".to_owned(), 0), ("keep-1".to_owned(), 1)]
    );
    assert_eq!(
        checkpoints, 4,
        "one per scanned event (window 1, multiplier 1)"
    );
    client
        .append_to_stream("skip-1", &any, vec![json("E", 9)])
        .await
        .unwrap();
    client
        .append_to_stream("keep-2", &any, vec![json("Live", 9)])
        .await
        .unwrap();
    let live = next(&mut sub).await.unwrap();
    assert_eq!((live.0.as_str(), live.2.as_str()), ("keep-2", "Live"));
}

async fn delete_then_append_continues_revisions(client: Client) {
    let any = AppendToStreamOptions::default();
    client
        .append_to_stream("del-1", &any, vec![json("A", 0), json("A", 1)])
        .await
        .unwrap();
    let stale = DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(0));
    let refused = client.delete_stream("del-1", &stale).await;
    assert!(refused.is_err(), "a delete at the wrong revision fails");
    let exact = DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(1));
    client.delete_stream("del-1", &exact).await.unwrap();
    let read = client
        .read_stream("del-1", &ReadStreamOptions::default())
        .await
        .unwrap()
        .next()
        .await;
    assert!(
        matches!(read, Err(kurrentdb::Error::ResourceNotFound)),
        "{read:?}"
    );
    let again = AppendToStreamOptions::default().stream_state(StreamState::NoStream);
    let written = client
        .append_to_stream("del-1", &again, vec![json("A", 2)])
        .await
        .unwrap();
    assert_eq!(written.next_expected_version, 2, "revisions continue");
    assert_eq!(
        read_stream(&client, "del-1", ReadStreamOptions::default()).await,
        [2]
    );
}

async fn tombstoned_stream_refuses_reads_and_appends(client: Client) {
    let any = AppendToStreamOptions::default();
    client
        .append_to_stream("tomb-1", &any, vec![json("A", 0)])
        .await
        .unwrap();
    client
        .tombstone_stream("tomb-1", &TombstoneStreamOptions::default())
        .await
        .unwrap();
    let read = client
        .read_stream("tomb-1", &ReadStreamOptions::default())
        .await;
    let read = match read {
        Ok(mut stream) => stream.next().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        matches!(read, Err(kurrentdb::Error::ResourceDeleted)),
        "{read:?}"
    );
    let append = client
        .append_to_stream("tomb-1", &any, vec![json("A", 1)])
        .await;
    assert!(
        matches!(append, Err(kurrentdb::Error::ResourceDeleted)),
        "{append:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_services_answer_unimplemented_and_http_still_works() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let server = Server::start(store).await;
    let client = server.client();
    let list = client
        .list_all_persistent_subscriptions(&Default::default())
        .await;
    assert!(
        list.is_err(),
        "routes() serves no persistent subscriptions: they are not listed, so the client asks KurrentDB's HTTP API, which this server lacks"
    );
    // Plain HTTP/1.1 on the same port reaches the HTTP routes.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    socket
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_discovers_us_by_gossip_as_the_leader_at_the_dialled_address() {
    let server = Server::start(Arc::new(InMemoryStore::new())).await;
    // Two seeds put the client in cluster mode: it reads gossip from a seed and then
    // connects to the leader's advertised endpoint, which must be the dialled one.
    let settings = format!(
        "kurrentdb://127.0.0.1:{0},localhost:{0}?tls=false&nodePreference=leader",
        server.port
    )
    .parse::<kurrentdb::ClientSettings>()
    .unwrap();
    let client = Client::new(settings).unwrap();
    let written = client
        .append_to_stream(
            "gossip-1",
            &AppendToStreamOptions::default(),
            vec![json("A", 0)],
        )
        .await
        .unwrap();
    assert_eq!(written.next_expected_version, 0);
}

async fn batch_append_answers_each_correlation_id(client: Client) {
    let batch = client
        .batch_append(&kurrentdb::BatchAppendOptions::default())
        .await
        .unwrap();
    // Many appends in flight at once on one call, each answered with its own result.
    let appends = (0..20u64).map(|n| {
        let batch = &batch;
        async move {
            let events = (0..3)
                .map(|i| {
                    EventData::json("Batched", &serde_json::json!({ "n": n, "i": i })).unwrap()
                })
                .collect();
            let stream = format!("batch-{n}");
            let written = batch
                .append_to_stream(stream.as_str(), StreamState::NoStream, events)
                .await
                .unwrap();
            (stream, written)
        }
    });
    for (stream, written) in futures::future::join_all(appends).await {
        assert_eq!(written.stream_name(), stream);
        assert_eq!(written.current_revision(), Some(2));
        assert!(written.current_position().is_some());
        assert_eq!(
            read_stream(&client, &stream, ReadStreamOptions::default()).await,
            [0, 1, 2]
        );
    }
    // A wrong expected revision answers its own correlation id (the client then ends
    // its batch session, so the next append opens another).
    let wrong = batch
        .append_to_stream(
            "batch-0",
            StreamState::StreamRevision(7),
            vec![EventData::json("Batched", &serde_json::json!({})).unwrap()],
        )
        .await;
    assert!(
        matches!(&wrong, Err(kurrentdb::Error::Grpc { code, .. }) if *code == tonic::Code::AlreadyExists),
        "{wrong:?}"
    );
    let batch = client
        .batch_append(&kurrentdb::BatchAppendOptions::default())
        .await
        .unwrap();
    let next = batch
        .append_to_stream(
            "batch-0",
            StreamState::StreamRevision(2),
            vec![EventData::json("Batched", &serde_json::json!({})).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(next.current_revision(), Some(3));
}

async fn stream_metadata_round_trips_and_applies_to_reads(client: Client) {
    use kurrentdb::{StreamMetadata, StreamMetadataResult};
    let none = client
        .get_stream_metadata("meta-1", &ReadStreamOptions::default())
        .await
        .unwrap();
    assert!(matches!(none, StreamMetadataResult::NotFound), "{none:?}");
    let events = (0..5)
        .map(|n| EventData::json("Counted", &serde_json::json!({ "n": n })).unwrap())
        .collect::<Vec<_>>();
    client
        .append_to_stream("meta-1", &AppendToStreamOptions::default(), events)
        .await
        .unwrap();
    let metadata = StreamMetadata::builder()
        .max_count(2)
        .max_age(Duration::from_secs(3600))
        .cache_control(Duration::from_secs(30))
        .insert_custom_property("owner", "billing")
        .build();
    let written = client
        .set_stream_metadata(
            "meta-1",
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            &metadata,
        )
        .await
        .unwrap();
    assert_eq!(written.next_expected_version, 0);
    // `$maxCount` applies to reads.
    assert_eq!(
        read_stream(&client, "meta-1", ReadStreamOptions::default()).await,
        [3, 4]
    );
    let StreamMetadataResult::Success(read) = client
        .get_stream_metadata("meta-1", &ReadStreamOptions::default())
        .await
        .unwrap()
    else {
        panic!("metadata was written");
    };
    assert_eq!(read.version(), 0);
    assert_eq!(read.metadata().max_count, Some(2));
    assert_eq!(read.metadata().max_age, Some(Duration::from_secs(3600)));
    assert_eq!(read.metadata().cache_control, Some(Duration::from_secs(30)));
    assert_eq!(
        read.metadata().custom_properties.get("owner"),
        Some(&serde_json::json!("billing"))
    );
    // The metastream's revision is checked like a stream's.
    let stale = client
        .set_stream_metadata(
            "meta-1",
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            &StreamMetadata::builder().truncate_before(1).build(),
        )
        .await;
    assert!(
        matches!(stale, Err(kurrentdb::Error::WrongExpectedVersion { .. })),
        "{stale:?}"
    );
    let next = client
        .set_stream_metadata(
            "meta-1",
            &AppendToStreamOptions::default().stream_state(StreamState::StreamRevision(0)),
            &StreamMetadata::builder().truncate_before(1).build(),
        )
        .await
        .unwrap();
    assert_eq!(next.next_expected_version, 1);
    assert_eq!(
        read_stream(&client, "meta-1", ReadStreamOptions::default()).await,
        [1, 2, 3, 4]
    );
}

async fn concurrent_metadata_writes_at_one_expected_revision_let_one_win(client: Client) {
    use kurrentdb::StreamMetadata;
    // Sixteen writers race, each expecting the metastream at revision 0 after a first
    // write: exactly one may succeed, and the metastream ends at revision 1 with its
    // value.
    client
        .set_stream_metadata(
            "meta-race",
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            &StreamMetadata::builder().max_count(100).build(),
        )
        .await
        .unwrap();
    let writers = (1..=16u64).map(|n| {
        let client = client.clone();
        tokio::spawn(async move {
            let metadata = StreamMetadata::builder().max_count(n).build();
            let options =
                AppendToStreamOptions::default().stream_state(StreamState::StreamRevision(0));
            (
                n,
                client
                    .set_stream_metadata("meta-race", &options, &metadata)
                    .await,
            )
        })
    });
    let mut winners = Vec::new();
    for writer in writers {
        let (n, result) = writer.await.unwrap();
        match result {
            Ok(written) => {
                assert_eq!(written.next_expected_version, 1);
                winners.push(n);
            }
            Err(kurrentdb::Error::WrongExpectedVersion { .. }) => {}
            Err(other) => panic!("writer {n}: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let kurrentdb::StreamMetadataResult::Success(read) = client
        .get_stream_metadata("meta-race", &ReadStreamOptions::default())
        .await
        .unwrap()
    else {
        panic!("metadata was written");
    };
    assert_eq!(read.version(), 1);
    assert_eq!(read.metadata().max_count, Some(winners[0]));
}
