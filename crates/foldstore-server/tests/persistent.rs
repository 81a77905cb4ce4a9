//! Persistent subscriptions over HTTP, against a real server on a loopback port:
//! managing groups, polling with leases, acks and nacks, parking and replay, leases
//! that run out, two pollers racing over 5,000 events, and a restart over a SQLite
//! file; on PostgreSQL, two servers over one database and a restart.
//!
//! Guards against: an event held by two pollers at once, an event lost or acked
//! twice by the group's accounting, a lease that never comes back, and a restart that
//! skips or loses events after the checkpoint.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestServer;
use foldstore_core::persistent::{LockFactory, PersistentSubscriptions};
use foldstore_core::projection::RunnerLock;
use foldstore_core::{EventStore, ExpectedRevision, InMemoryStore, NewEvent, StreamName};
use foldstore_postgres::projection::AdvisoryLock;
use foldstore_postgres::testkit;
use foldstore_server::ServerConfig;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

/// A client of one server.
#[derive(Clone)]
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(server: &TestServer) -> Self {
        Self {
            base: server.url(""),
            client: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(method.clone(), path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        answer
    }

    /// Polls; answers the messages' (key, revision, retry count).
    async fn poll(&self, group: &str, query: &str) -> Vec<(String, u64, u64)> {
        let answer = self
            .ok(
                Method::POST,
                &format!("/subscriptions/{group}/messages{query}"),
                None,
            )
            .await;
        let messages = answer["messages"].as_array().unwrap();
        assert_eq!(
            answer.get("lease").is_some(),
            !messages.is_empty(),
            "a lease when there are events: {answer}"
        );
        messages
            .iter()
            .map(|m| {
                (
                    m["key"].as_str().unwrap().to_owned(),
                    m["event"]["revision"].as_u64().unwrap(),
                    m["retry_count"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    async fn ack(&self, group: &str, keys: &[String]) {
        self.ok(
            Method::POST,
            &format!("/subscriptions/{group}/ack"),
            Some(json!({ "keys": keys })),
        )
        .await;
    }

    async fn nack(&self, group: &str, keys: &[String], action: &str) {
        self.ok(
            Method::POST,
            &format!("/subscriptions/{group}/nack"),
            Some(json!({ "keys": keys, "action": action })),
        )
        .await;
    }

    /// Waits until the group's info satisfies `check`.
    async fn info_until(&self, group: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..500 {
            let (status, info) = self.get(&format!("/subscriptions/{group}")).await;
            assert_eq!(status, 200, "{info}");
            if check(&info) {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, info) = self.get(&format!("/subscriptions/{group}")).await;
        panic!("timed out waiting for {what}: {info}");
    }
}

async fn append(store: &dyn EventStore, stream: &str, count: usize) {
    let stream = StreamName::new(stream).unwrap();
    let events: Vec<NewEvent> = (0..count)
        .map(|i| NewEvent::json("Job", &json!({ "n": i })).unwrap())
        .collect();
    for chunk in events.chunks(500) {
        store
            .append(&stream, ExpectedRevision::Any, chunk.to_vec())
            .await
            .unwrap();
    }
}

/// A server over a fresh in-memory store with persistent subscriptions.
async fn server() -> (TestServer, Arc<InMemoryStore>, Arc<PersistentSubscriptions>) {
    let store = Arc::new(InMemoryStore::new());
    let subs = Arc::new(PersistentSubscriptions::open(store.clone()).await.unwrap());
    let config = ServerConfig::default().persistent(subs.clone());
    let server = TestServer::start(store.clone(), config).await;
    (server, store, subs)
}

#[tokio::test]
async fn groups_are_created_listed_read_updated_and_deleted() {
    let (server, store, subs) = server().await;
    let api = Api::new(&server);
    append(store.as_ref(), "job-1", 3).await;

    assert_eq!(
        api.get("/subscriptions").await,
        (200, json!({"subscriptions": []}))
    );
    let created = api
        .ok(
            Method::PUT,
            "/subscriptions/job-1/mailer",
            Some(json!({"message_timeout_ms": 5000, "strategy": "dispatch_to_single"})),
        )
        .await;
    assert_eq!(created["stream"], "job-1");
    assert_eq!(created["group"], "mailer");
    assert_eq!(created["settings"]["message_timeout_ms"], 5000);
    assert_eq!(created["settings"]["strategy"], "dispatch_to_single");
    assert_eq!(created["settings"]["start_from"], "start");
    assert_eq!(created["settings"]["max_retry_count"], 10, "a default");

    let (status, again) = api
        .call(Method::PUT, "/subscriptions/job-1/mailer", Some(json!({})))
        .await;
    assert_eq!(
        (status, again["code"].as_str()),
        (409, Some("subscription_exists"))
    );

    // `end` is stored as where the end was.
    let at_end = api
        .ok(
            Method::PUT,
            "/subscriptions/job-1/late",
            Some(json!({"start_from": "end"})),
        )
        .await;
    assert_eq!(at_end["settings"]["start_after"], "2", "{at_end}");
    let all = api
        .ok(
            Method::PUT,
            "/subscriptions/$all/audit",
            Some(json!({"filter": {"category": "job", "types": ["Job"]}})),
        )
        .await;
    assert_eq!(all["stream"], "$all");
    assert_eq!(
        all["settings"]["filter"],
        json!({"category": "job", "types": ["Job"]})
    );

    let (_, listed) = api.get("/subscriptions").await;
    let names: Vec<(&str, &str)> = listed["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["stream"].as_str().unwrap(), g["group"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [("job-1", "late"), ("job-1", "mailer"), ("$all", "audit")]
    );
    let (_, of_stream) = api.get("/subscriptions/job-1").await;
    assert_eq!(of_stream["subscriptions"].as_array().unwrap().len(), 2);
    let (_, of_all) = api.get("/subscriptions/%24all").await;
    assert_eq!(of_all["subscriptions"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.get("/subscriptions/job-2").await,
        (200, json!({"subscriptions": []}))
    );

    let info = api
        .info_until("job-1/mailer", "the three events read", |i| {
            i["waiting"] == 3 && i["serving"] == true
        })
        .await;
    assert_eq!(info["parked"], 0);
    assert_eq!(info["consumers"], json!([]));

    let updated = api
        .ok(
            Method::POST,
            "/subscriptions/job-1/mailer",
            Some(json!({"max_retry_count": 2})),
        )
        .await;
    assert_eq!(updated["settings"]["max_retry_count"], 2);
    assert_eq!(
        updated["settings"]["message_timeout_ms"], 5000,
        "an update keeps what it does not give"
    );

    for (body, code) in [
        (json!({"message_timeout_ms": 0}), "invalid_settings"),
        (json!({"filter": {"category": "job"}}), "invalid_settings"),
        (json!({"strategy": "random"}), "invalid_body"),
        (json!({"nope": 1}), "unknown_field"),
    ] {
        let (status, problem) = api
            .call(
                Method::POST,
                "/subscriptions/job-1/mailer",
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    let long = "g".repeat(101);
    let (status, problem) = api
        .call(
            Method::PUT,
            &format!("/subscriptions/job-1/{long}"),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_group_name"))
    );
    let (status, problem) = api
        .call(Method::PUT, "/subscriptions/%24nope/g", Some(json!({})))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_stream_name"))
    );

    let (status, _) = api
        .call(Method::DELETE, "/subscriptions/job-1/mailer", None)
        .await;
    assert_eq!(status, 204);
    for (method, path) in [
        (Method::GET, "/subscriptions/job-1/mailer"),
        (Method::DELETE, "/subscriptions/job-1/mailer"),
        (Method::POST, "/subscriptions/job-1/mailer/messages"),
        (Method::POST, "/subscriptions/job-1/mailer/replay-parked"),
    ] {
        let (status, problem) = api.call(method.clone(), path, None).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (404, Some("subscription_not_found")),
            "{method} {path}"
        );
    }
    let (_, of_stream) = api.get("/subscriptions/job-1").await;
    assert_eq!(of_stream["subscriptions"].as_array().unwrap().len(), 1);
    server.stop().await;
    subs.shutdown().await;
}

#[tokio::test]
async fn a_server_without_persistent_subscriptions_says_so() {
    let server = TestServer::start(Arc::new(InMemoryStore::new()), ServerConfig::default()).await;
    let api = Api::new(&server);
    for (method, path) in [
        (Method::GET, "/subscriptions"),
        (Method::GET, "/subscriptions/job-1/g"),
        (Method::POST, "/subscriptions/job-1/g/messages"),
    ] {
        let (status, problem) = api.call(method, path, None).await;
        assert_eq!(status, 404);
        assert_eq!(problem["code"], "persistent_subscriptions_disabled");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("started without")
        );
    }
}

#[tokio::test]
async fn polled_events_are_leased_to_one_poller_and_acks_finish_them() {
    let (server, store, subs) = server().await;
    let api = Api::new(&server);
    append(store.as_ref(), "job-1", 5).await;
    api.ok(Method::PUT, "/subscriptions/job-1/g", Some(json!({})))
        .await;
    api.info_until("job-1/g", "the events read", |i| i["waiting"] == 5)
        .await;

    let first = api.poll("job-1/g", "?count=3").await;
    assert_eq!(first.len(), 3);
    let second = api.poll("job-1/g", "?count=10").await;
    let revisions: BTreeSet<u64> = first.iter().chain(&second).map(|m| m.1).collect();
    assert_eq!(revisions, (0..5).collect(), "each event to one poller");
    assert_eq!(first.len() + second.len(), 5);
    assert!(api.poll("job-1/g", "").await.is_empty(), "all are leased");

    let info = api.get("/subscriptions/job-1/g").await.1;
    assert_eq!(info["leases"], 2);
    assert_eq!(info["in_flight"], 5);
    let keys: Vec<String> = first.iter().chain(&second).map(|m| m.0.clone()).collect();
    api.ack("job-1/g", &keys).await;
    let info = api
        .info_until("job-1/g", "five finished", |i| i["finished"] == 5)
        .await;
    assert_eq!(info["in_flight"], 0);
    assert_eq!(info["leases"], 0, "a lease with nothing left ends");

    // A long poll waits for the next event.
    let waiting = {
        let api = api.clone();
        tokio::spawn(async move { api.poll("job-1/g", "?wait_ms=10000").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    append(store.as_ref(), "job-1", 1).await;
    let late = waiting.await.unwrap();
    assert_eq!(late.iter().map(|m| m.1).collect::<Vec<_>>(), [5]);
    let started = std::time::Instant::now();
    assert!(api.poll("job-1/g", "?wait_ms=300").await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));

    for query in ["?count=0", "?count=1001", "?wait_ms=60001", "?count=x"] {
        let (status, problem) = api
            .call(
                Method::POST,
                &format!("/subscriptions/job-1/g/messages{query}"),
                None,
            )
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some("invalid_query")),
            "{query}"
        );
    }
    for keys in [json!([]), json!(["x"]), json!(["parked:y"])] {
        let (status, problem) = api
            .call(
                Method::POST,
                "/subscriptions/job-1/g/ack",
                Some(json!({ "keys": keys })),
            )
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some("invalid_key")),
            "{keys}"
        );
    }
    server.stop().await;
    subs.shutdown().await;
}

#[tokio::test]
async fn a_parked_event_is_replayed_and_acked() {
    let (server, store, subs) = server().await;
    let api = Api::new(&server);
    append(store.as_ref(), "job-1", 2).await;
    api.ok(Method::PUT, "/subscriptions/job-1/g", Some(json!({})))
        .await;

    let taken = api.poll("job-1/g", "?count=2&wait_ms=5000").await;
    assert_eq!(taken.len(), 2);
    api.nack("job-1/g", &[taken[0].0.clone()], "park").await;
    api.ack("job-1/g", &[taken[1].0.clone()]).await;
    api.info_until("job-1/g", "one parked", |i| {
        i["parked"] == 1 && i["finished"] == 2
    })
    .await;

    let replayed = api
        .ok(Method::POST, "/subscriptions/job-1/g/replay-parked", None)
        .await;
    assert_eq!(replayed, json!({"replayed": 1}));
    let again = api.poll("job-1/g", "?wait_ms=5000").await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1, taken[0].1, "the parked event");
    assert_eq!(again[0].0, "parked:0", "a replayed event's key");
    api.ack("job-1/g", &[again[0].0.clone()]).await;
    api.info_until("job-1/g", "nothing parked", |i| i["parked"] == 0)
        .await;
    server.stop().await;
    subs.shutdown().await;
}

#[tokio::test]
async fn a_lease_not_acked_comes_back_after_the_message_timeout() {
    let (server, store, subs) = server().await;
    let api = Api::new(&server);
    append(store.as_ref(), "job-1", 3).await;
    api.ok(
        Method::PUT,
        "/subscriptions/job-1/g",
        Some(json!({"message_timeout_ms": 300, "max_retry_count": 5})),
    )
    .await;

    let first = api.poll("job-1/g", "?count=1&wait_ms=5000").await;
    assert_eq!(first[0].2, 0);
    let lease_ms = api
        .ok(
            Method::POST,
            "/subscriptions/job-1/g/messages?count=2",
            None,
        )
        .await;
    assert_eq!(lease_ms["lease_ms"], 300);
    assert_eq!(lease_ms["messages"].as_array().unwrap().len(), 2);
    // Nobody else gets the first event while it is leased; after the timeout it comes
    // back, counted as a retry.
    let again = api.poll("job-1/g", "?count=1&wait_ms=5000").await;
    assert_eq!((again[0].1, again[0].2), (first[0].1, 1));
    // The first poller's late ack still finishes it.
    api.ack("job-1/g", &[first[0].0.clone()]).await;

    // `retry` gives an event back at once, counted; `stop` ends the lease without
    // counting; `skip` finishes.
    let mut retried = Vec::new();
    while retried.len() < 2 {
        // They timed out meanwhile, or come back now.
        retried.extend(api.poll("job-1/g", "?count=2&wait_ms=5000").await);
    }
    assert!(retried.iter().all(|m| m.2 >= 1), "{retried:?}");
    api.nack("job-1/g", &[retried[0].0.clone()], "retry").await;
    let after_retry = api.poll("job-1/g", "?count=1&wait_ms=5000").await;
    assert_eq!(after_retry[0].1, retried[0].1);
    assert_eq!(after_retry[0].2, retried[0].2 + 1);
    api.nack("job-1/g", &[after_retry[0].0.clone()], "stop")
        .await;
    let after_stop = api.poll("job-1/g", "?count=1&wait_ms=100").await;
    assert_eq!(
        (after_stop[0].1, after_stop[0].2),
        (after_retry[0].1, after_retry[0].2),
        "stop gives it back without a retry"
    );
    api.nack(
        "job-1/g",
        &[after_stop[0].0.clone(), retried[1].0.clone()],
        "skip",
    )
    .await;
    api.info_until("job-1/g", "all finished", |i| {
        i["checkpoint"] == "2" || (i["finished"] == 3 && i["in_flight"] == 0)
    })
    .await;
    server.stop().await;
    subs.shutdown().await;
}

/// One consumer as server-sent events: it is given at most its buffer, its acks go
/// through the ack route, and closing the connection gives its events to others.
#[tokio::test]
async fn a_consumer_over_server_sent_events_gets_its_buffer_and_acks_by_key() {
    let (server, store, subs) = server().await;
    let api = Api::new(&server);
    append(store.as_ref(), "job-1", 4).await;
    api.ok(Method::PUT, "/subscriptions/job-1/g", Some(json!({})))
        .await;
    let response = reqwest::Client::new()
        .get(server.url("/subscriptions/job-1/g/subscribe?buffer_size=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let messages = |text: &str| -> Vec<Value> {
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    };
    while messages(&text).len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: message"), "{text}");
    let first = messages(&text);
    // Two in flight at it: the other two wait for a consumer with room.
    api.info_until("job-1/g", "two in flight, two waiting", |i| {
        i["in_flight"] == 2 && i["waiting"] == 2
    })
    .await;
    let key = first[0]["key"].as_str().unwrap().to_owned();
    api.ack("job-1/g", &[key]).await;
    while messages(&text).len() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Closing the connection gives back what it holds, without a retry.
    drop(body);
    let rest = {
        let mut rest = Vec::new();
        while rest.len() < 3 {
            rest.extend(api.poll("job-1/g", "?count=10&wait_ms=5000").await);
        }
        rest
    };
    assert!(rest.iter().all(|m| m.2 == 0), "{rest:?}");
    assert_eq!(
        rest.iter().map(|m| m.1).collect::<BTreeSet<_>>().len() + 1,
        4,
        "{rest:?}"
    );
    server.stop().await;
    subs.shutdown().await;
}

/// Scopes and prefixes: reading and consuming a group needs `read`, managing it
/// `admin`; a prefix-limited token reaches the groups of its streams only, none on
/// `$all`.
#[tokio::test]
async fn tokens_reach_groups_by_scope_and_prefix() {
    use foldstore_server::auth::{Scope, Tokens, token_line};
    let store = Arc::new(InMemoryStore::new());
    let subs = Arc::new(PersistentSubscriptions::open(store.clone()).await.unwrap());
    let prefixes = vec!["job-".to_owned()];
    let lines = [
        token_line("admin", "t-admin", &[Scope::Admin], &[]),
        token_line("reader", "t-reader", &[Scope::Read], &[]),
        token_line("jobs", "t-jobs", &[Scope::Admin], &prefixes),
    ];
    let config = ServerConfig::default()
        .tokens(Tokens::parse(&lines.join("\n")).unwrap())
        .persistent(subs.clone());
    let server = TestServer::start(store.clone(), config).await;
    append(store.as_ref(), "job-1", 1).await;
    let client = reqwest::Client::new();
    let call = |method: Method, path: &str, token: &str| {
        let request = client
            .request(method, server.url(path))
            .bearer_auth(token)
            .json(&json!({}));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body["code"].as_str().unwrap_or("").to_owned())
        }
    };
    for path in [
        "/subscriptions/job-1/g",
        "/subscriptions/order-1/g",
        "/subscriptions/$all/g",
    ] {
        assert_eq!(call(Method::PUT, path, "t-admin").await.0, 201, "{path}");
    }
    assert_eq!(
        call(Method::PUT, "/subscriptions/job-1/h", "t-reader").await,
        (403, "insufficient_scope".to_owned())
    );
    assert_eq!(
        call(
            Method::POST,
            "/subscriptions/job-1/g/replay-parked",
            "t-reader"
        )
        .await,
        (403, "insufficient_scope".to_owned())
    );
    assert_eq!(
        call(Method::GET, "/subscriptions/job-1/g", "t-reader")
            .await
            .0,
        200
    );
    assert_eq!(
        call(Method::POST, "/subscriptions/job-1/g/messages", "t-reader")
            .await
            .0,
        200
    );
    assert_eq!(
        call(Method::PUT, "/subscriptions/job-1/h", "t-jobs")
            .await
            .0,
        201
    );
    for (method, path) in [
        (Method::GET, "/subscriptions/order-1/g"),
        (Method::POST, "/subscriptions/order-1/g/messages"),
        (Method::GET, "/subscriptions/$all/g"),
        (Method::GET, "/subscriptions/%24all"),
        (Method::PUT, "/subscriptions/$all/h"),
    ] {
        assert_eq!(
            call(method.clone(), path, "t-jobs").await,
            (403, "stream_forbidden".to_owned()),
            "{method} {path}"
        );
    }
    let listed: Value = client
        .get(server.url("/subscriptions"))
        .bearer_auth("t-jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["stream"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["job-1", "job-1"]);
    server.stop().await;
    subs.shutdown().await;
}

/// Two pollers take 5,000 events concurrently. No event is ever held by both; the
/// message timeout is far away, so none is delivered twice; the group counts each
/// ack once and its checkpoint reaches the last event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pollers_never_hold_one_event_and_five_thousand_are_acked_once() {
    const EVENTS: usize = 5_000;
    let (server, store, subs) = server().await;
    let api = Api::new(&server);
    append(store.as_ref(), "job-1", EVENTS).await;
    api.ok(
        Method::PUT,
        "/subscriptions/job-1/g",
        Some(json!({"message_timeout_ms": 120000, "max_checkpoint_count": 100})),
    )
    .await;
    let outcome = race(vec![api.clone(), api.clone()], "job-1/g", EVENTS).await;
    assert_eq!(
        outcome.duplicates, 0,
        "nothing timed out, so nothing came twice"
    );
    assert!(
        outcome.per_poller.iter().all(|n| *n > 0),
        "{:?}",
        outcome.per_poller
    );
    let info = api
        .info_until("job-1/g", "every event finished", |i| {
            i["finished"] == EVENTS && i["checkpoint"] == json!((EVENTS - 1).to_string())
        })
        .await;
    assert_eq!(info["in_flight"], 0);
    assert_eq!(info["parked"], 0);
    server.stop().await;
    subs.shutdown().await;
}

/// What a race of pollers saw.
struct Race {
    /// Events each poller acked.
    per_poller: Vec<usize>,
    /// Deliveries of an event already acked (possible only after a timeout).
    duplicates: usize,
    /// The revisions acked.
    acked: HashSet<u64>,
}

/// Pollers (one per `apis`, which may be different servers) take events of `group`
/// and ack them until at least `events` distinct revisions were acked (a poller that
/// took a batch before the count was reached acks it too), checking that no event is
/// held by two at once.
async fn race(apis: Vec<Api>, group: &str, events: usize) -> Race {
    let held = Arc::new(Mutex::new(HashSet::new()));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let duplicates = Arc::new(Mutex::new(0usize));
    let mut tasks = Vec::new();
    for api in apis {
        let (held, acked, duplicates) = (held.clone(), acked.clone(), duplicates.clone());
        let group = group.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut mine = 0;
            while acked.lock().unwrap().len() < events {
                let taken = api.poll(&group, "?count=50&wait_ms=200").await;
                for (_, revision, _) in &taken {
                    assert!(
                        held.lock().unwrap().insert(*revision),
                        "revision {revision} is held by two pollers at once"
                    );
                }
                tokio::task::yield_now().await;
                let mut keys = Vec::new();
                for (key, revision, _) in taken {
                    held.lock().unwrap().remove(&revision);
                    if acked.lock().unwrap().insert(revision) {
                        mine += 1;
                    } else {
                        *duplicates.lock().unwrap() += 1;
                    }
                    keys.push(key);
                }
                if !keys.is_empty() {
                    api.ack(&group, &keys).await;
                }
            }
            mine
        }));
    }
    let mut per_poller = Vec::new();
    for task in tasks {
        per_poller.push(
            tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= events, "{} acked", acked.len());
    assert_eq!(per_poller.iter().sum::<usize>(), acked.len());
    let duplicates = *duplicates.lock().unwrap();
    Race {
        per_poller,
        duplicates,
        acked,
    }
}

/// A server restarted over the same SQLite file resumes the group after its
/// checkpoint: events acked below it are not delivered again, and none after it is
/// lost (an event acked above it may come again: at-least-once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_over_a_sqlite_file_resumes_after_the_checkpoint() {
    use foldstore_sqlite::{SqliteOptions, SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foldstore.db");

    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let dyn_store: Arc<dyn EventStore> = Arc::new(store.clone());
    append(dyn_store.as_ref(), "job-1", 10).await;
    let subs = Arc::new(
        PersistentSubscriptions::open(dyn_store.clone())
            .await
            .unwrap(),
    );
    let server = TestServer::start(
        dyn_store.clone(),
        ServerConfig::default().persistent(subs.clone()),
    )
    .await;
    let api = Api::new(&server);
    api.ok(Method::PUT, "/subscriptions/job-1/g", Some(json!({})))
        .await;
    let mut taken = Vec::new();
    while taken.len() < 10 {
        taken.extend(api.poll("job-1/g", "?count=10&wait_ms=2000").await);
    }
    taken.sort_by_key(|m| m.1);
    let acked: Vec<String> = taken
        .iter()
        .filter(|m| m.1 <= 5 || m.1 == 8)
        .map(|m| m.0.clone())
        .collect();
    api.ack("job-1/g", &acked).await;
    api.info_until("job-1/g", "seven finished", |i| i["finished"] == 7)
        .await;
    server.stop().await;
    subs.shutdown().await;
    drop((subs, dyn_store));
    store.close().await.unwrap();

    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let dyn_store: Arc<dyn EventStore> = Arc::new(store.clone());
    let subs = Arc::new(
        PersistentSubscriptions::open(dyn_store.clone())
            .await
            .unwrap(),
    );
    let server = TestServer::start(
        dyn_store.clone(),
        ServerConfig::default().persistent(subs.clone()),
    )
    .await;
    let api = Api::new(&server);
    let info = api.get("/subscriptions/job-1/g").await.1;
    assert_eq!(info["checkpoint"], "5", "{info}");
    let mut again = Vec::new();
    loop {
        let more = api.poll("job-1/g", "?count=10&wait_ms=1000").await;
        if more.is_empty() {
            break;
        }
        again.extend(more);
    }
    let revisions: BTreeSet<u64> = again.iter().map(|m| m.1).collect();
    assert_eq!(revisions, BTreeSet::from([6, 7, 8, 9]));
    server.stop().await;
    subs.shutdown().await;
    drop((subs, dyn_store));
    store.close().await.unwrap();
}

fn advisory_locks(url: &str, schema: &str) -> LockFactory {
    let (url, schema) = (url.to_owned(), schema.to_owned());
    Arc::new(move |name: String| {
        let (url, name) = (url.clone(), format!("{schema}:{name}"));
        Box::pin(async move {
            let lock = AdvisoryLock::connect(&url, &name).await?;
            Ok(Box::new(lock) as Box<dyn RunnerLock>)
        })
    })
}

/// Two servers over one PostgreSQL database, each with its own persistent
/// subscriptions and advisory locks, and pollers at both: one server serves the
/// group, and no event is held by two pollers; after the serving one stops (its
/// checkpoint written), the other takes the group over and the rest is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_over_postgres_never_lease_one_event_twice() {
    let Some(url) = testkit::test_url(
        "two_servers_over_postgres_never_lease_one_event_twice",
        "cargo test -p foldstore-server --test persistent",
    ) else {
        return;
    };
    const EVENTS: usize = 1_000;
    let (store_a, schema) = testkit::fresh_store(&url).await;
    let store_b = foldstore_postgres::PostgresStore::connect(
        foldstore_postgres::PostgresOptions::new(&url).schema(&schema.schema),
    )
    .await
    .unwrap();
    let (store_a, store_b): (Arc<dyn EventStore>, Arc<dyn EventStore>) =
        (Arc::new(store_a), Arc::new(store_b));
    append(store_a.as_ref(), "job-1", EVENTS).await;
    let mut servers = Vec::new();
    for store in [&store_a, &store_b] {
        let subs = Arc::new(
            PersistentSubscriptions::open_with_locks(
                store.clone(),
                advisory_locks(&url, &schema.schema),
            )
            .await
            .unwrap(),
        );
        let server = TestServer::start(
            store.clone(),
            ServerConfig::default().persistent(subs.clone()),
        )
        .await;
        servers.push((server, subs));
    }
    let a = Api::new(&servers[0].0);
    let b = Api::new(&servers[1].0);
    a.ok(
        Method::PUT,
        "/subscriptions/job-1/g",
        Some(json!({"message_timeout_ms": 120000, "max_checkpoint_count": 50})),
    )
    .await;
    let half = race(
        vec![a.clone(), b.clone(), a.clone(), b.clone()],
        "job-1/g",
        EVENTS / 2,
    )
    .await;
    assert_eq!(half.duplicates, 0);
    // Both servers run the group (polls started it on each); one holds its lock.
    let serving =
        |api: Api| async move { api.get("/subscriptions/job-1/g").await.1["serving"] == true };
    let (a_serves, b_serves) = (serving(a.clone()).await, serving(b.clone()).await);
    assert!(
        a_serves != b_serves,
        "one server serves: {a_serves} {b_serves}"
    );

    // The serving server stops, writing its checkpoint; the other takes over.
    let (server_a, subs_a) = servers.remove(0);
    let (server_b, subs_b) = servers.remove(0);
    let (stop, stay, stay_subs, stop_subs) = if a_serves {
        (server_a, server_b, subs_b, subs_a)
    } else {
        (server_b, server_a, subs_a, subs_b)
    };
    stop.stop().await;
    stop_subs.shutdown().await;
    let remaining = Api::new(&stay);
    // Everything the race did not ack arrives at the other server (some events acked
    // after the stopped server's checkpoint may come again: at-least-once).
    let mut seen: BTreeSet<u64> = half.acked.iter().copied().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < EVENTS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {EVENTS} events acked: {}",
            seen.len(),
            remaining.get("/subscriptions/job-1/g").await.1
        );
        let taken = remaining.poll("job-1/g", "?count=100&wait_ms=2000").await;
        let keys: Vec<String> = taken.iter().map(|m| m.0.clone()).collect();
        seen.extend(taken.iter().map(|m| m.1));
        if !keys.is_empty() {
            remaining.ack("job-1/g", &keys).await;
        }
    }
    assert_eq!(seen, (0..EVENTS as u64).collect::<BTreeSet<_>>());
    stay.stop().await;
    stay_subs.shutdown().await;
}

/// A restart over PostgreSQL resumes after the stored checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_over_postgres_resumes_after_the_checkpoint() {
    let Some(url) = testkit::test_url(
        "a_restarted_server_over_postgres_resumes_after_the_checkpoint",
        "cargo test -p foldstore-server --test persistent",
    ) else {
        return;
    };
    let (store, schema) = testkit::fresh_store(&url).await;
    let store: Arc<dyn EventStore> = Arc::new(store);
    append(store.as_ref(), "job-1", 10).await;
    let open = || async {
        let subs = Arc::new(
            PersistentSubscriptions::open_with_locks(
                store.clone(),
                advisory_locks(&url, &schema.schema),
            )
            .await
            .unwrap(),
        );
        let server = TestServer::start(
            store.clone(),
            ServerConfig::default().persistent(subs.clone()),
        )
        .await;
        (server, subs)
    };
    let (server, subs) = open().await;
    let api = Api::new(&server);
    api.ok(Method::PUT, "/subscriptions/job-1/g", Some(json!({})))
        .await;
    let mut taken = Vec::new();
    while taken.len() < 10 {
        taken.extend(api.poll("job-1/g", "?count=10&wait_ms=2000").await);
    }
    let acked: Vec<String> = taken
        .iter()
        .filter(|m| m.1 <= 6)
        .map(|m| m.0.clone())
        .collect();
    api.ack("job-1/g", &acked).await;
    api.info_until("job-1/g", "seven finished", |i| i["finished"] == 7)
        .await;
    server.stop().await;
    subs.shutdown().await;
    drop(subs);

    let (server, subs) = open().await;
    let api = Api::new(&server);
    let mut again = BTreeSet::new();
    while again.len() < 3 {
        again.extend(
            api.poll("job-1/g", "?count=10&wait_ms=2000")
                .await
                .into_iter()
                .map(|m| m.1),
        );
    }
    assert_eq!(again, BTreeSet::from([7, 8, 9]));
    server.stop().await;
    subs.shutdown().await;
}
