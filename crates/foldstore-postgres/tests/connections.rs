//! The store's connections: the pool's, and the readers that global-order pages run
//! on, which the reading task drives itself (`driven.rs`).
//!
//! `tokio-postgres` reads a socket 8 KiB at a time: a page of many MiB, and single
//! events of hundreds of KiB, arrive in many reads and must come back byte for byte
//! and in order, through reads and through a subscription, over TCP and over a Unix
//! socket. Reads abandoned midway must leave nothing behind for the next read on the
//! same connection, and a connection the server ended must cost no read its answer.

mod common;

use foldstore_core::{
    EventFilter, EventStore, ExpectedRevision, NewEvent, ReadAllOptions, ReadStreamOptions,
    StreamName, SubscribeFrom,
};
use std::time::Duration;

use foldstore_postgres::PostgresStore;
use futures::StreamExt;

/// The data of event `i`: sizes from a few bytes to 600 KiB, every
/// byte value, and a pattern that tells a shifted or truncated copy from the original.
fn data_of(i: usize) -> Vec<u8> {
    let len = match i % 10 {
        0 => 600 * 1024,
        1 | 2 => 70 * 1024,
        _ => 20 + i * 37 % 3_000,
    };
    (0..len).map(|k| (k * 31 + i * 7) as u8).collect()
}

const EVENTS: usize = 120;

/// Appends [`EVENTS`] binary events over four streams, a few at a time.
async fn fill(store: &PostgresStore) -> Vec<StreamName> {
    let streams: Vec<StreamName> = (0..4)
        .map(|s| StreamName::new(format!("blob-{s}")).unwrap())
        .collect();
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(3) {
        let stream = &streams[chunk[0] % streams.len()];
        let events = chunk
            .iter()
            .map(|&i| NewEvent::raw("Blob", data_of(i), "application/octet-stream"))
            .collect();
        store
            .append(stream, ExpectedRevision::Any, events)
            .await
            .unwrap_or_else(|e| panic!("append to {stream}: {e}"));
    }
    streams
}

/// Reads everything back three ways and checks every byte.
async fn check_round_trip(store: &PostgresStore) {
    let streams = fill(store).await;

    // $all in one page: about 15 MiB.
    let all = store
        .read_all(ReadAllOptions::forwards().max_count(EVENTS * 2))
        .await
        .unwrap();
    assert_eq!(all.len(), EVENTS);
    for (i, event) in all.iter().enumerate() {
        assert_eq!(
            event.data.as_ref(),
            data_of(i).as_slice(),
            "event {i} of $all"
        );
        assert_eq!(event.content_type, "application/octet-stream");
    }
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));

    // Each stream, backwards.
    for stream in &streams {
        let mut expected: Vec<&[u8]> = all
            .iter()
            .filter(|e| &e.stream == stream)
            .map(|e| e.data.as_ref())
            .collect();
        expected.reverse();
        let read = store
            .read_stream(stream, ReadStreamOptions::backwards().max_count(EVENTS))
            .await
            .unwrap();
        let got: Vec<&[u8]> = read.iter().map(|e| e.data.as_ref()).collect();
        assert_eq!(got, expected, "{stream} backwards");
    }

    // A subscription catching up from the start, in its own pages.
    let mut sub = store
        .subscribe_to_all(SubscribeFrom::Start, EventFilter::all())
        .await
        .unwrap();
    for (i, stored) in all.iter().enumerate() {
        let event = sub.next().await.expect("a live subscription").unwrap();
        assert_eq!(
            event.position, stored.position,
            "event {i} of the subscription"
        );
        assert_eq!(event.data, stored.data, "event {i} of the subscription");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pages_and_events_read_back_whole_over_tcp() {
    let Some(url) = common::test_url("large_pages_and_events_read_back_whole_over_tcp") else {
        return;
    };
    let (store, _guard) = common::fresh_store(&url).await;
    check_round_trip(&store).await;
}

/// The test database's Unix socket, as a connection string, when the test URL points
/// at this machine and the server's socket is in the usual directory.
fn unix_socket_url(url: &str) -> Option<String> {
    let config: tokio_postgres::Config = url.parse().ok()?;
    let local = matches!(
        config.get_hosts(),
        [tokio_postgres::config::Host::Tcp(h)] if h == "127.0.0.1" || h == "localhost"
    );
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dir = "/var/run/postgresql";
    let exists = std::path::Path::new(&format!("{dir}/.s.PGSQL.{port}")).exists();
    (local && exists).then(|| {
        format!(
            "host={dir} port={port} user={} dbname={}",
            config.get_user().unwrap_or("postgres"),
            config.get_dbname().unwrap_or("postgres"),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pages_and_events_read_back_whole_over_a_unix_socket() {
    let test = "large_pages_and_events_read_back_whole_over_a_unix_socket";
    let Some(url) = common::test_url(test) else {
        return;
    };
    let Some(socket_url) = unix_socket_url(&url) else {
        eprintln!(
            "SKIPPED {test}: {url} is not this machine's server, or its socket is not in \
             /var/run/postgresql"
        );
        return;
    };
    let (store, _guard) = common::fresh_store(&socket_url).await;
    check_round_trip(&store).await;
}

/// `url` with an `application_name` of its own, so that this store's server-side
/// connections can be told from every other test's; and that name.
fn named(url: &str, prefix: &str) -> (String, String) {
    let name = format!("{prefix}_{:016x}", rand::random::<u64>());
    let sep = if url.contains('?') { '&' } else { '?' };
    (format!("{url}{sep}application_name={name}"), name)
}

/// Reads abandoned at every stage (before the query is sent, while rows arrive, while
/// names are read) leave the readers usable: each later read gets exactly the log.
/// And no server backend is left blocked sending an abandoned read's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_reads_leave_nothing_behind() {
    let Some(url) = common::test_url("abandoned_reads_leave_nothing_behind") else {
        return;
    };
    let (named_url, name) = named(&url, "foldstore_abandon");
    let (store, _guard) = common::fresh_store(&named_url).await;
    fill(&store).await;
    let everything = || ReadAllOptions::forwards().max_count(EVENTS * 2);
    let expected = store.read_all(everything()).await.unwrap();
    for i in 0..40u64 {
        // Two at once, so that both readers (and then the pool) are in use.
        let cut = Duration::from_micros(150 * i);
        let _ = tokio::join!(
            tokio::time::timeout(cut, store.read_all(everything())),
            tokio::time::timeout(cut / 2, store.read_all(everything())),
        );
        let again = store.read_all(everything()).await.unwrap();
        assert_eq!(again.len(), expected.len(), "after cut {i}");
        for (a, b) in again.iter().zip(&expected) {
            assert_eq!(
                (a.position, &a.data),
                (b.position, &b.data),
                "after cut {i}"
            );
        }
    }
    // A backend still sending an abandoned read's rows waits on the client
    // (`ClientWrite`), holding its snapshot and its locks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let blocked =
        count_connections(&url, &name, "AND wait_event = 'ClientWrite'", "count(*)").await;
    assert_eq!(blocked, 0, "backends blocked sending abandoned rows");
}

/// Every connection of the store is ended by the server (as a restart or an
/// administrator would): the next reads still answer, on new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answer_after_the_server_ends_every_connection() {
    let Some(url) = common::test_url("reads_answer_after_the_server_ends_every_connection") else {
        return;
    };
    // A name of its own, so that only this store's connections are ended.
    let (named_url, name) = named(&url, "foldstore_ended");
    let (store, _guard) = common::fresh_store(&named_url).await;
    let stream = StreamName::new("ended-1").unwrap();
    let event = NewEvent::json("Noted", &serde_json::json!({})).unwrap();
    store
        .append(&stream, ExpectedRevision::Any, vec![event])
        .await
        .unwrap();
    // Open both readers and some pooled connections.
    let page = || ReadAllOptions::forwards().max_count(10);
    let (a, b) = tokio::join!(store.read_all(page()), store.read_all(page()));
    assert_eq!((a.unwrap().len(), b.unwrap().len()), (1, 1));

    let ended = count_connections(&url, &name, "", "count(pg_terminate_backend(pid))").await;
    // The server ends them asynchronously; give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(ended >= 2, "ended {ended} connections");
    for _ in 0..4 {
        let (a, b) = tokio::join!(store.read_all(page()), store.read_all(page()));
        assert_eq!((a.unwrap().len(), b.unwrap().len()), (1, 1));
    }
}

/// `select` (an aggregate) over the server's connections named `application_name`
/// that also meet `and`.
async fn count_connections(url: &str, application_name: &str, and: &str, select: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let row = client
        .query_one(
            &format!("SELECT {select} FROM pg_stat_activity WHERE application_name = $1 {and}"),
            &[&application_name],
        )
        .await
        .unwrap();
    drop(client);
    let _ = driver.await;
    row.get(0)
}
