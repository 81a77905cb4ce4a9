//! Every route in `/openapi.json`, called with a prefix-limited token, keeps to the
//! token's prefixes: nothing outside them is named, counted or returned.
//!
//! The walk reads the operations from the served document, so a route added later is
//! walked without a change here. Two checks:
//!
//! - **Differential**: the same read-only walk runs against two servers whose
//!   streams under the token's prefixes are identical, one of which also holds
//!   streams outside them (written after the others, so the shared events keep
//!   their positions). Every answer the limited token gets, whatever its status,
//!   must be the same on both: a listing, a count or a head position that moved
//!   with the outside streams would differ.
//! - **Markers**: no answer on either server, to any method, carries the outside
//!   streams' names, event types or data. An operation that writes is refused
//!   outside the prefixes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use foldstore_core::InMemoryStore;
use foldstore_core::persistent::PersistentSubscriptions;
use foldstore_server::auth::{Scope, Tokens, token_line};
use foldstore_server::{ServerConfig, app};
use futures::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "fst_walk_admin";
const LIMITED: &str = "fst_walk_accounts";
/// What the outside streams carry; no answer to the limited token may hold it.
const MARKERS: [&str; 4] = ["secret-", "vault", "SecretMoved", "TOPSECRETDATA"];

/// A server with tokens and persistent subscriptions over a fresh store. (The
/// subscriptions' tasks stop when the test's runtime does.)
async fn router() -> axum::Router {
    let lines = [
        token_line("admin", ADMIN, &[Scope::Admin], &[]),
        token_line(
            "accounts",
            LIMITED,
            &[Scope::Read, Scope::Write, Scope::Admin],
            &["account-".to_owned()],
        ),
    ];
    let config = ServerConfig::default()
        .tokens(Tokens::parse(&lines.join("\n")).unwrap())
        .heartbeat(Duration::from_millis(50));
    let store = Arc::new(InMemoryStore::new());
    let persistent = PersistentSubscriptions::open(store.clone()).await.unwrap();
    app(store, config.persistent(Arc::new(persistent)))
}

/// An answer: status, content type and body (the first moments of a stream).
#[derive(Debug, PartialEq)]
struct Answer {
    status: StatusCode,
    body: String,
}

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    token: &str,
    body: Option<Value>,
) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    let request = match body {
        Some(b) => request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let mut chunks = response.into_body().into_data_stream();
    let mut bytes = Vec::new();
    // Live subscriptions never end: keep what arrives in their first moments.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, chunks.next()).await {
        bytes.extend_from_slice(&chunk);
    }
    Answer {
        status,
        body: normalize(&String::from_utf8_lossy(&bytes)),
    }
}

/// Drops what differs between two servers for reasons other than their streams:
/// times, uptimes, and the heartbeat comments of live subscriptions (with the blank
/// lines that end them: how many heartbeats fit in the first moments varies).
fn normalize(body: &str) -> String {
    if let Ok(mut value) = serde_json::from_str::<Value>(body) {
        strip_times(&mut value);
        return value.to_string();
    }
    body.lines()
        .filter(|line| !line.starts_with(':') && !line.is_empty())
        .map(|line| match line.strip_prefix("data:") {
            Some(data) => match serde_json::from_str::<Value>(data.trim()) {
                Ok(mut value) => {
                    strip_times(&mut value);
                    format!("data: {value}")
                }
                Err(_) => line.to_owned(),
            },
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn strip_times(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for key in ["recorded_at", "last_recorded_at", "uptime_seconds"] {
                map.remove(key);
            }
            map.values_mut().for_each(strip_times);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_times),
        _ => {}
    }
}

fn event(id: &str, event_type: &str, data: Value) -> Value {
    json!({"expected_revision": "any", "events": [{"id": id, "type": event_type, "data": data}]})
}

/// The streams the limited token reaches, the same on both servers (fixed ids, so
/// the answers match byte for byte).
async fn seed_inside(router: &axum::Router) {
    let inside = [
        ("account-1", "00000000-0000-4000-8000-000000000001"),
        ("account-2", "00000000-0000-4000-8000-000000000002"),
        ("account-1", "00000000-0000-4000-8000-000000000003"),
    ];
    for (stream, id) in inside {
        let body = event(id, "Deposited", json!({"amount": 5}));
        let answer = call(
            router,
            "POST",
            &format!("/streams/{stream}"),
            ADMIN,
            Some(body),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
}

/// A persistent subscription group on `stream`, named like it (the walk fills every
/// path parameter with one value), and, once its task has read the stream's events,
/// the same answers on both servers.
async fn seed_group(router: &axum::Router, stream: &str, events: usize) {
    let answer = call(
        router,
        "PUT",
        &format!("/subscriptions/{stream}/{stream}"),
        ADMIN,
        Some(json!({})),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    for _ in 0..500 {
        let info = call(
            router,
            "GET",
            &format!("/subscriptions/{stream}/{stream}"),
            ADMIN,
            None,
        )
        .await;
        let info: Value = serde_json::from_str(&info.body).unwrap();
        if info["waiting"] == events {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the group on {stream} did not read its {events} events");
}

/// The groups the limited token reaches, the same on both servers.
async fn seed_inside_groups(router: &axum::Router) {
    seed_group(router, "account-1", 2).await;
}

/// Groups outside the token's prefixes: on outside streams and on `$all` (one with
/// events leased, so that its figures are not zero).
async fn seed_outside_groups(router: &axum::Router) {
    seed_group(router, "secret-1", 2).await;
    seed_group(router, "vault-9", 1).await;
    let answer = call(
        router,
        "PUT",
        "/subscriptions/$all/secret-1",
        ADMIN,
        Some(json!({"filter": {"category": "secret"}})),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let polled = call(
        router,
        "POST",
        "/subscriptions/secret-1/secret-1/messages?count=1&wait_ms=1000",
        ADMIN,
        None,
    )
    .await;
    assert!(polled.body.contains("TOPSECRETDATA"), "{}", polled.body);
}

/// Streams outside the token's prefixes, several per category so that a count or a
/// listing that included them would change.
async fn seed_outside(router: &axum::Router) {
    for (n, stream) in ["secret-1", "secret-2", "vault-9", "secret-1", "accounting"]
        .iter()
        .enumerate()
    {
        let body = json!({"expected_revision": "any", "events": [
            {"type": "SecretMoved", "data": {"note": "TOPSECRETDATA", "n": n}}
        ]});
        let answer = call(
            router,
            "POST",
            &format!("/streams/{stream}"),
            ADMIN,
            Some(body),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
}

/// The operations of the served document: (method, path template).
async fn operations(router: &axum::Router) -> Vec<(String, String)> {
    let answer = router
        .clone()
        .oneshot(
            Request::builder()
                .uri("/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX)
        .await
        .unwrap();
    let document: Value = serde_json::from_slice(&bytes).unwrap();
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(operations.len() >= 10, "too few operations: {operations:?}");
    operations
}

/// The URIs a walk tries for `template`: each path parameter inside and outside the
/// prefixes; for reads, query parameters that ask for the outside streams.
fn uris(method: &str, template: &str) -> Vec<String> {
    let values: &[&str] = if template.contains("{category}") {
        &["account", "secret", "accounting"]
    } else {
        &["account-1", "secret-1", "vault-9", "$all"]
    };
    let mut paths = Vec::new();
    for value in values {
        let mut path = template.to_owned();
        while let Some(start) = path.find('{') {
            let end = path[start..].find('}').map(|e| start + e).unwrap();
            path.replace_range(start..=end, value);
        }
        paths.push(path);
        if !template.contains('{') {
            break;
        }
    }
    if method != "GET" {
        return paths;
    }
    let queries = [
        "",
        "?prefix=secret",
        "?prefix=s",
        "?prefix=",
        "?prefix=account",
        "?category=secret",
        "?category=account",
        "?direction=backwards",
        "?from=1",
        "?stream_prefix=secret",
        "?event_type=SecretMoved",
    ];
    paths
        .iter()
        .flat_map(|p| queries.iter().map(move |q| format!("{p}{q}")))
        .collect()
}

fn assert_no_markers(what: &str, answer: &Answer) {
    for marker in MARKERS {
        assert!(
            !answer.body.contains(marker),
            "{what} answered {} with {marker:?} from outside the token's prefixes: {}",
            answer.status,
            answer.body
        );
    }
}

#[tokio::test]
async fn every_route_keeps_to_the_tokens_prefixes() {
    let plain = router().await;
    let mixed = router().await;
    seed_inside(&plain).await;
    seed_inside(&mixed).await;
    seed_outside(&mixed).await;
    seed_inside_groups(&plain).await;
    seed_inside_groups(&mixed).await;
    seed_outside_groups(&mixed).await;
    let operations = operations(&mixed).await;

    let mut reads = 0;
    for (method, template) in operations.iter().filter(|(m, _)| m == "GET") {
        for uri in uris(method, template) {
            let on_plain = call(&plain, method, &uri, LIMITED, None).await;
            let on_mixed = call(&mixed, method, &uri, LIMITED, None).await;
            // Asking for an outside stream by name may echo the name back in a 403;
            // nothing else may carry the outside streams.
            if !(on_mixed.status == StatusCode::FORBIDDEN
                || uri.contains("secret")
                || uri.contains("vault")
                || uri.contains("accounting"))
            {
                assert_no_markers(&format!("{method} {uri}"), &on_mixed);
            }
            assert_eq!(
                on_plain, on_mixed,
                "{method} {uri}: the limited token's answer changes with streams outside its prefixes"
            );
            reads += 1;
        }
    }
    assert!(reads > 50, "the walk made only {reads} reads");

    // Writes outside the prefixes are refused; inside, the answer names no outside
    // stream. Deletes go last, so that the other writes find what they act on.
    let mut writes: Vec<&(String, String)> =
        operations.iter().filter(|(m, _)| m != "GET").collect();
    writes.sort_by_key(|(m, _)| m == "DELETE");
    let mut exercised = 0;
    for (method, template) in writes {
        if !template.contains('{') {
            continue;
        }
        for uri in uris(method, template) {
            let body = write_body(method, template);
            let answer = call(&mixed, method, &uri, LIMITED, body).await;
            if answer.status.is_success() {
                exercised += 1;
            }
            let outside = !uri.contains("/account-1") && !uri.contains("/account/");
            if outside {
                assert_eq!(
                    answer.status,
                    StatusCode::FORBIDDEN,
                    "{method} {uri} outside the prefixes: {}",
                    answer.body
                );
            } else {
                assert_no_markers(&format!("{method} {uri}"), &answer);
            }
        }
    }
    assert!(
        exercised >= 8,
        "only {exercised} writes inside the prefixes succeeded"
    );
}

/// A body each write takes, so that writes inside the prefixes succeed.
fn write_body(method: &str, template: &str) -> Option<Value> {
    if template.starts_with("/subscriptions/") {
        return match template.rsplit('/').next() {
            Some("ack") => Some(json!({"keys": ["0"]})),
            Some("nack") => Some(json!({"keys": ["1"], "action": "retry"})),
            Some("{group}") if method != "DELETE" => Some(json!({"message_timeout_ms": 1000})),
            _ => None,
        };
    }
    match method {
        "POST" => Some(event(
            "00000000-0000-4000-8000-0000000000ff",
            "Deposited",
            json!({}),
        )),
        "PUT" => Some(json!({"max_count": 100})),
        _ => None,
    }
}

#[tokio::test]
async fn the_streams_listing_and_the_figures_narrow_to_the_tokens_prefixes() {
    let router = router().await;
    seed_inside(&router).await;
    seed_outside(&router).await;
    let listing = call(&router, "GET", "/api/streams", LIMITED, None).await;
    assert_eq!(listing.status, 200);
    let page: Value = serde_json::from_str(&listing.body).unwrap();
    let names: Vec<&str> = page["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["account-1", "account-2"]);

    for uri in ["/api/streams?prefix=secret", "/api/streams?category=vault"] {
        let answer = call(&router, "GET", uri, LIMITED, None).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{uri}");
        assert!(answer.body.contains("stream_forbidden"), "{}", answer.body);
    }
    let broader = call(&router, "GET", "/api/streams?prefix=acc", LIMITED, None).await;
    let page: Value = serde_json::from_str(&broader.body).unwrap();
    assert_eq!(page["streams"].as_array().unwrap().len(), 2, "{page}");

    let figures = call(&router, "GET", "/api/stats", LIMITED, None).await;
    let stats: Value = serde_json::from_str(&figures.body).unwrap();
    assert_eq!(stats["streams"], 2, "{stats}");
    assert_eq!(stats["prefixes"], json!(["account-"]));
    for store_wide in ["head_position", "appends", "events_appended", "subscribers"] {
        assert!(stats.get(store_wide).is_none(), "{store_wide}: {stats}");
    }
    let figures = call(&router, "GET", "/api/stats", ADMIN, None).await;
    let stats: Value = serde_json::from_str(&figures.body).unwrap();
    assert_eq!(stats["streams"], 6, "{stats}");
    assert_eq!(stats["appends"], 8, "{stats}");

    // A repeated prefix is ambiguous for every token, limited or not.
    let repeated = "/all?prefix=account-1&prefix=secret";
    for token in [LIMITED, ADMIN] {
        let answer = call(&router, "GET", repeated, token, None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    }

    // Persistent subscription groups: the listing shows the groups of the token's
    // streams, and the others (on `$all` too) are out of its reach.
    seed_inside_groups(&router).await;
    seed_outside_groups(&router).await;

    let groups = |body: &str| -> Vec<(String, String)> {
        let list: Value = serde_json::from_str(body).unwrap();
        list["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let name = |k: &str| g[k].as_str().unwrap().to_owned();
                (name("stream"), name("group"))
            })
            .collect()
    };
    let listing = call(&router, "GET", "/subscriptions", LIMITED, None).await;
    assert_eq!(listing.status, 200, "{}", listing.body);
    assert_eq!(
        groups(&listing.body),
        [("account-1".to_owned(), "account-1".to_owned())]
    );
    let listing = call(&router, "GET", "/subscriptions", ADMIN, None).await;
    assert_eq!(groups(&listing.body).len(), 4, "{}", listing.body);
    for uri in [
        "/subscriptions/secret-1",
        "/subscriptions/$all",
        "/subscriptions/%24all/secret-1",
        "/subscriptions/secret-1/secret-1/messages",
    ] {
        let method = if uri.ends_with("messages") {
            "POST"
        } else {
            "GET"
        };
        let answer = call(&router, method, uri, LIMITED, None).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{uri}: {}",
            answer.body
        );
    }
}
