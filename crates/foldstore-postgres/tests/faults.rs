//! PostgreSQL going away under load (issue 3, restart tests).
//!
//! Guards against losing or doubling events when the database goes away, in two ways:
//! a small TCP proxy in the test cuts every connection (and refuses new ones) for a
//! while, as a network failure does; and a private PostgreSQL cluster started by the
//! test is crashed (`pg_ctl stop -m immediate`) and restarted, so the server's own
//! crash recovery is part of the test. Meanwhile writers append and a subscriber reads
//! through the same store. Checked against the record of what was acknowledged:
//!
//! - while the server is away, appends fail fast with a retryable error: `Unavailable`
//!   (nothing was written: those ids must never appear) or `OutcomeUnknown` (the
//!   writer retries with the same ids until it gets an answer; the retry is
//!   idempotent, so each event is stored once);
//! - the store recovers by itself when the server is back;
//! - the subscriber goes on from its last position: every acknowledged event exactly
//!   once, in the order of `$all`.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foldstore_core::{
    AppendError, BackendErrorKind, EventFilter, EventStore, ExpectedRevision, NewEvent,
    ReadAllOptions, StreamName, SubscribeFrom,
};
use foldstore_postgres::PostgresStore;
use foldstore_postgres::testkit::PrivateCluster;
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use uuid::Uuid;

/// A TCP proxy that can cut all its connections and refuse new ones.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                links2.lock().expect("lock").push(link.abort_handle());
            }
        })
        .abort_handle();
        Self {
            addr,
            up,
            links,
            accept,
        }
    }

    /// Breaks every connection and refuses new ones, as a stopped server does.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().expect("lock").drain(..) {
            link.abort();
        }
    }

    /// Lets connections through again.
    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// The TCP address of the test server, if the URL names one.
fn server_addr(url: &str) -> Option<SocketAddr> {
    let config: tokio_postgres::Config = url.parse().expect("test URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => return None,
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let host = if host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    format!("{host}:{port}").parse().ok()
}

/// The test URL with its host and port replaced by the proxy's.
fn through(url: &str, proxy: SocketAddr) -> String {
    let config: tokio_postgres::Config = url.parse().expect("test URL");
    let user = config.get_user().unwrap_or("postgres");
    let password = config
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}{password}@{proxy}/{db}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_loses_nothing_and_doubles_nothing() {
    let Some(url) = common::test_url("a_server_restart_loses_nothing_and_doubles_nothing") else {
        return;
    };
    let Some(target) = server_addr(&url) else {
        eprintln!("skipped: the test URL does not name a TCP host and port");
        return;
    };
    let proxy = Proxy::start(target).await;
    let proxied = through(&url, proxy.addr);

    // The schema is made and dropped over the direct URL; the store goes through the
    // proxy.
    let schema = common::fresh_schema();
    let guard = common::SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    let mut options = common::options(&proxied, &schema);
    options.connect_timeout = Duration::from_millis(500);
    let store = foldstore_postgres::PostgresStore::connect(options)
        .await
        .expect("connect through the proxy");

    check_outage(&store, || proxy.cut(), || proxy.restore()).await;
    drop(store);
    drop(proxy);
    drop(guard);
}

/// Runs 4 writers and a subscriber through an outage made by `begin_outage` and ended
/// by `end_outage`, then checks the log against what was acknowledged.
async fn check_outage(
    store: &PostgresStore,
    begin_outage: impl FnOnce(),
    end_outage: impl FnOnce(),
) {
    let seen: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let sub_seen = seen.clone();
    let reader = store.clone();
    let subscriber = tokio::spawn(async move {
        let mut sub = reader
            .subscribe_to_all(SubscribeFrom::Start, EventFilter::all())
            .await
            .expect("subscribe");
        while let Some(item) = sub.next().await {
            let e = item.expect("the subscription outlives the outage");
            sub_seen.lock().expect("lock").push(e.id);
        }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let stream = StreamName::new(format!("restart-{w}")).expect("name");
            let mut acknowledged = Vec::new();
            let mut refused = Vec::new();
            let mut unknown = 0;
            let mut slowest_failure = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                let events: Vec<NewEvent> = (0..5)
                    .map(|i| NewEvent::json("Tick", &serde_json::json!({ "i": i })).expect("json"))
                    .collect();
                let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
                // Retry an unknown outcome with the same ids until it is answered. Once
                // an outcome was unknown, a later `Unavailable` only says that the retry
                // wrote nothing, not the first try: keep retrying.
                let mut uncertain = false;
                loop {
                    let started = Instant::now();
                    match store
                        .append(&stream, ExpectedRevision::Any, events.clone())
                        .await
                    {
                        Ok(_) => {
                            acknowledged.extend(ids.iter().copied());
                            break;
                        }
                        Err(AppendError::Backend(e)) => {
                            slowest_failure = slowest_failure.max(started.elapsed());
                            match e.kind {
                                BackendErrorKind::Unavailable if !uncertain => {
                                    refused.extend(ids.iter().copied());
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                    break;
                                }
                                BackendErrorKind::Unavailable => {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                                BackendErrorKind::OutcomeUnknown => {
                                    uncertain = true;
                                    unknown += 1;
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                                other => panic!("append failed with {other:?}: {e}"),
                            }
                        }
                        Err(e) => panic!("append refused: {e}"),
                    }
                }
            }
            (acknowledged, refused, unknown, slowest_failure)
        }));
    }

    tokio::time::sleep(Duration::from_millis(700)).await;
    tokio::task::block_in_place(begin_outage);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(end_outage);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);

    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    let mut unknown = 0;
    let mut slowest_failure = Duration::ZERO;
    for w in writers {
        let (a, r, u, s) = w.await.expect("writer");
        acknowledged.extend(a);
        refused.extend(r);
        unknown += u;
        slowest_failure = slowest_failure.max(s);
    }
    assert!(
        !refused.is_empty() || unknown > 0,
        "the outage was noticed by the writers"
    );
    assert!(
        slowest_failure < Duration::from_secs(3),
        "appends fail fast while the server is away (slowest failure took {slowest_failure:?})"
    );

    // After the outage the store works again, and the log holds each acknowledged
    // event once and nothing that was refused.
    let log: Vec<Uuid> = store
        .read_all(ReadAllOptions::forwards())
        .await
        .expect("the store recovered by itself")
        .iter()
        .map(|e| e.id)
        .collect();
    let in_log: HashSet<Uuid> = log.iter().copied().collect();
    assert_eq!(in_log.len(), log.len(), "no event is stored twice");
    let want: HashSet<Uuid> = acknowledged.iter().copied().collect();
    let refused_set: HashSet<Uuid> = refused.iter().copied().collect();
    let extra: Vec<_> = in_log.difference(&want).collect();
    let missing: Vec<_> = want.difference(&in_log).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "exactly the acknowledged events are stored: {} stored but not acknowledged \
         ({} of them answered Unavailable), {} acknowledged but not stored",
        extra.len(),
        extra.iter().filter(|id| refused_set.contains(**id)).count(),
        missing.len()
    );
    assert!(
        refused.iter().all(|id| !in_log.contains(id)),
        "an append answered Unavailable wrote nothing"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().expect("lock").len() < log.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    subscriber.abort();
    assert_eq!(
        *seen.lock().expect("lock"),
        log,
        "the subscriber resumed with no gap and no duplicate"
    );
    eprintln!(
        "{} events acknowledged, {} refused while the server was away, {unknown} unknown outcomes retried",
        acknowledged.len(),
        refused.len()
    );
}

/// A real crash of PostgreSQL (`pg_ctl stop -m immediate`, then crash recovery on
/// start) under load: acknowledged commits survive the crash, in-flight ones either
/// commit or vanish whole, positions stay ordered across the restart, and the store and
/// its subscriber recover by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_and_restart_loses_nothing_and_doubles_nothing() {
    let name = "a_postgres_crash_and_restart_loses_nothing_and_doubles_nothing";
    // This is a PostgreSQL test like the others: it runs where they run.
    if common::test_url(name).is_none() {
        return;
    }
    let cluster = match PrivateCluster::start() {
        Ok(c) => c,
        Err(why) => {
            assert!(
                std::env::var("FOLDSTORE_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "{name}: could not start a private PostgreSQL cluster: {why}"
            );
            eprintln!("SKIPPED {name}: could not start a private PostgreSQL cluster: {why}");
            return;
        }
    };
    let mut options = common::options(&cluster.url(), "foldstore");
    options.connect_timeout = Duration::from_millis(500);
    let store = PostgresStore::connect(options)
        .await
        .expect("connect to the private cluster");
    check_outage(
        &store,
        || cluster.crash().expect("crash the server"),
        || cluster.up().expect("restart the server"),
    )
    .await;
    drop(store);
    drop(cluster);
}
