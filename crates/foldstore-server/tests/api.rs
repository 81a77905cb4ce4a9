//! Handler tests: each endpoint through `app(...).oneshot(request)` over an in-memory
//! store, with its error answers.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use foldstore_core::{EventStore, InMemoryStore, ReadAllOptions};
use foldstore_server::{ServerConfig, app};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

async fn call(router: &Router, method: &str, uri: &str, body: Option<(&str, Vec<u8>)>) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    let body = match body {
        Some((content_type, bytes)) => {
            request = request.header(header::CONTENT_TYPE, content_type);
            Body::from(bytes)
        }
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Answer {
        status,
        content_type,
        body,
    }
}

async fn post(router: &Router, uri: &str, body: Value) -> Answer {
    call(
        router,
        "POST",
        uri,
        Some(("application/json", body.to_string().into_bytes())),
    )
    .await
}

async fn get(router: &Router, uri: &str) -> Answer {
    call(router, "GET", uri, None).await
}

fn setup() -> (Arc<InMemoryStore>, Router) {
    let store = Arc::new(InMemoryStore::new());
    let router = app(store.clone(), ServerConfig::default().body_limit(4096));
    (store, router)
}

/// Asserts a problem answer with `status` and `code`.
fn assert_problem(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(answer.body["code"], code, "{}", answer.body);
    assert_eq!(answer.body["status"], status.as_u16());
    assert!(answer.body["type"].is_string());
    assert!(answer.body["title"].is_string());
    assert!(answer.body["detail"].is_string());
}

async fn append_n(router: &Router, stream: &str, n: usize) {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"type": "Deposited", "data": {"amount": i}}))
        .collect();
    let answer = post(
        router,
        &format!("/streams/{stream}"),
        json!({"expected_revision": "any", "events": events}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

async fn events_written(store: &InMemoryStore) -> usize {
    store
        .read_all(ReadAllOptions::forwards())
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn append_then_read_a_stream() {
    let (_, router) = setup();
    let id = "0190b3a6-7f4e-7a1c-9c1e-2f6f5e0a4b11";
    let answer = post(
        &router,
        "/streams/account-1",
        json!({"expected_revision": "no_stream", "events": [
            {"id": id, "type": "Opened", "data": {"owner": "ada"}, "metadata": {"correlation_id": "c"}},
            {"type": "Blob", "data": "AAEC", "content_type": "application/octet-stream"}
        ]}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["next_expected_revision"], 1);
    assert!(answer.body["position"].is_string());

    let next = post(
        &router,
        "/streams/account-1",
        json!({"expected_revision": 1, "events": [{"type": "Closed", "data": null}]}),
    )
    .await;
    assert_eq!(next.body["next_expected_revision"], 2);

    let read = get(&router, "/streams/account-1").await;
    assert_eq!(read.status, StatusCode::OK);
    let events = read.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    let first = &events[0];
    assert_eq!(first["id"], id);
    assert_eq!(first["stream"], "account-1");
    assert_eq!(first["type"], "Opened");
    assert_eq!(first["revision"], 0);
    assert!(first["position"].is_string());
    assert_eq!(first["data"], json!({"owner": "ada"}));
    assert_eq!(first["metadata"], json!({"correlation_id": "c"}));
    assert!(first["recorded_at"].is_string());
    assert!(first.get("content_type").is_none());
    assert_eq!(events[1]["data"], "AAEC");
    assert_eq!(events[1]["content_type"], "application/octet-stream");
    assert!(read.body.get("next").is_none());
}

#[tokio::test]
async fn stream_pages_forwards_and_backwards() {
    let (_, router) = setup();
    append_n(&router, "cart-1", 5).await;

    let page = get(&router, "/streams/cart-1?limit=2").await;
    assert_eq!(page.body["events"].as_array().unwrap().len(), 2);
    assert_eq!(page.body["next"], 2);
    let page = get(&router, "/streams/cart-1?limit=2&from=4").await;
    assert_eq!(page.body["events"][0]["revision"], 4);
    assert!(page.body.get("next").is_none());

    let back = get(&router, "/streams/cart-1?direction=backwards&limit=3").await;
    let revisions: Vec<_> = back.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions, [4, 3, 2]);
    assert_eq!(back.body["next"], 1);

    assert_problem(
        &get(&router, "/streams/cart-1?limit=1001").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_problem(
        &get(&router, "/streams/cart-1?direction=sideways").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_problem(
        &get(&router, "/streams/cart-1?colour=red").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
}

#[tokio::test]
async fn wrong_expected_revision_is_409_with_expected_and_actual() {
    let (store, router) = setup();
    append_n(&router, "order-1", 2).await;
    let answer = post(
        &router,
        "/streams/order-1",
        json!({"expected_revision": 0, "events": [{"type": "T", "data": {}}]}),
    )
    .await;
    assert_problem(&answer, StatusCode::CONFLICT, "wrong_expected_revision");
    assert_eq!(answer.body["expected"], 0);
    assert_eq!(answer.body["actual"], 1);

    let answer = post(
        &router,
        "/streams/order-2",
        json!({"expected_revision": "stream_exists", "events": [{"type": "T", "data": {}}]}),
    )
    .await;
    assert_problem(&answer, StatusCode::CONFLICT, "wrong_expected_revision");
    assert_eq!(answer.body["expected"], "stream_exists");
    assert_eq!(answer.body["actual"], "no_stream");
    assert_eq!(events_written(&store).await, 2);
}

#[tokio::test]
async fn malformed_appends_are_problems_and_write_nothing() {
    let (store, router) = setup();
    let bad_json = call(
        &router,
        "POST",
        "/streams/a-1",
        Some(("application/json", b"{\"expected_revision\": ".to_vec())),
    )
    .await;
    assert_problem(&bad_json, StatusCode::BAD_REQUEST, "invalid_json");

    let unknown = post(
        &router,
        "/streams/a-1",
        json!({"expected_revision": "any", "events": [{"type": "T", "data": 1, "colour": "red"}]}),
    )
    .await;
    assert_problem(&unknown, StatusCode::BAD_REQUEST, "unknown_field");
    assert!(unknown.body["detail"].as_str().unwrap().contains("colour"));

    let unknown_top = post(
        &router,
        "/streams/a-1",
        json!({"expected_revision": "any", "events": [], "extra": 1}),
    )
    .await;
    assert_problem(&unknown_top, StatusCode::BAD_REQUEST, "unknown_field");

    let no_type = post(
        &router,
        "/streams/a-1",
        json!({"expected_revision": "any", "events": [{"data": 1}]}),
    )
    .await;
    assert_problem(&no_type, StatusCode::BAD_REQUEST, "invalid_body");

    let empty_type = post(
        &router,
        "/streams/a-1",
        json!({"expected_revision": "any", "events": [{"type": "ok", "data": 1}, {"type": "", "data": 1}]}),
    )
    .await;
    assert_problem(&empty_type, StatusCode::BAD_REQUEST, "invalid_event");

    let bad_base64 = post(
        &router,
        "/streams/a-1",
        json!({"expected_revision": "any", "events": [{"type": "B", "data": "!!", "content_type": "image/png"}]}),
    )
    .await;
    assert_problem(&bad_base64, StatusCode::BAD_REQUEST, "invalid_event");

    let bad_name = post(
        &router,
        "/streams/%24all",
        json!({"expected_revision": "any", "events": [{"type": "T", "data": 1}]}),
    )
    .await;
    assert_problem(&bad_name, StatusCode::BAD_REQUEST, "invalid_stream_name");

    let not_json = call(
        &router,
        "POST",
        "/streams/a-1",
        Some(("text/plain", b"hello".to_vec())),
    )
    .await;
    assert_problem(
        &not_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    let big = "x".repeat(5000);
    let too_large = post(
        &router,
        "/streams/a-1",
        json!({"expected_revision": "any", "events": [{"type": "T", "data": big}]}),
    )
    .await;
    assert_problem(&too_large, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    assert_eq!(events_written(&store).await, 0);
}

#[tokio::test]
async fn missing_and_tombstoned_streams() {
    let (_, router) = setup();
    assert_problem(
        &get(&router, "/streams/nobody-1").await,
        StatusCode::NOT_FOUND,
        "stream_not_found",
    );

    append_n(&router, "temp-1", 2).await;
    let deleted = call(&router, "DELETE", "/streams/temp-1", None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_problem(
        &get(&router, "/streams/temp-1").await,
        StatusCode::NOT_FOUND,
        "stream_not_found",
    );

    append_n(&router, "gone-1", 2).await;
    let conflict = call(
        &router,
        "DELETE",
        "/streams/gone-1?expected_revision=0",
        None,
    )
    .await;
    assert_problem(&conflict, StatusCode::CONFLICT, "wrong_expected_revision");
    let tombstoned = call(
        &router,
        "DELETE",
        "/streams/gone-1?tombstone=true&expected_revision=1",
        None,
    )
    .await;
    assert_eq!(tombstoned.status, StatusCode::NO_CONTENT);
    assert_problem(
        &get(&router, "/streams/gone-1").await,
        StatusCode::GONE,
        "stream_tombstoned",
    );
    let append = post(
        &router,
        "/streams/gone-1",
        json!({"expected_revision": "any", "events": [{"type": "T", "data": 1}]}),
    )
    .await;
    assert_problem(&append, StatusCode::GONE, "stream_tombstoned");
    assert_problem(
        &call(
            &router,
            "DELETE",
            "/streams/x-1?expected_revision=soon",
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
}

#[tokio::test]
async fn all_and_category_reads() {
    let (_, router) = setup();
    append_n(&router, "account-1", 2).await;
    append_n(&router, "order-1", 1).await;
    append_n(&router, "account-2", 2).await;

    let all = get(&router, "/all?limit=3").await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.body["events"].as_array().unwrap().len(), 3);
    let next = all.body["next"].as_str().unwrap().to_owned();
    let rest = get(&router, &format!("/all?from={next}")).await;
    assert_eq!(rest.body["events"].as_array().unwrap().len(), 2);
    assert_eq!(rest.body["events"][0]["position"], next.as_str());
    assert!(rest.body.get("next").is_none());

    let backwards = get(&router, "/all?direction=backwards&limit=1").await;
    assert_eq!(backwards.body["events"][0]["stream"], "account-2");

    let filtered = get(&router, "/all?category=order").await;
    assert_eq!(filtered.body["events"].as_array().unwrap().len(), 1);
    let by_prefix = get(&router, "/all?prefix=account-2&type=Deposited,Other").await;
    assert_eq!(by_prefix.body["events"].as_array().unwrap().len(), 2);
    let by_type = get(&router, "/all?type=Other").await;
    assert_eq!(by_type.body["events"].as_array().unwrap().len(), 0);

    let category = get(&router, "/categories/account").await;
    assert_eq!(category.body["events"].as_array().unwrap().len(), 4);
    let mut total = 0;
    for member in 0..2 {
        let part = get(
            &router,
            &format!("/categories/account?group_member={member}&group_size=2"),
        )
        .await;
        total += part.body["events"].as_array().unwrap().len();
    }
    assert_eq!(total, 4);

    assert_problem(
        &get(&router, "/categories/account?group_member=2&group_size=2").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_problem(
        &get(&router, "/categories/account?group_member=0").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_problem(
        &get(&router, "/all?from=yesterday").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
}

#[tokio::test]
async fn stream_metadata_roundtrip() {
    let (_, router) = setup();
    append_n(&router, "log-1", 3).await;
    let none = get(&router, "/streams/log-1/metadata").await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(none.body, json!({}));

    let put = call(
        &router,
        "PUT",
        "/streams/log-1/metadata",
        Some((
            "application/json",
            json!({"max_count": 1, "custom": {"owner": "ops"}})
                .to_string()
                .into_bytes(),
        )),
    )
    .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let got = get(&router, "/streams/log-1/metadata").await;
    assert_eq!(
        got.body,
        json!({"max_count": 1, "custom": {"owner": "ops"}})
    );
    let read = get(&router, "/streams/log-1").await;
    assert_eq!(read.body["events"].as_array().unwrap().len(), 1);

    let unknown = call(
        &router,
        "PUT",
        "/streams/log-1/metadata",
        Some(("application/json", b"{\"max_cnt\": 1}".to_vec())),
    )
    .await;
    assert_problem(&unknown, StatusCode::BAD_REQUEST, "unknown_field");
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let (_, router) = setup();
    let health = get(&router, "/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");
    assert_problem(
        &get(&router, "/nowhere").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_problem(
        &call(&router, "PATCH", "/streams/a-1", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn subscribe_refuses_bad_starts() {
    let (_, router) = setup();
    assert_problem(
        &get(&router, "/all/subscribe?from=soon").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_problem(
        &get(&router, "/streams/%24bad/subscribe").await,
        StatusCode::BAD_REQUEST,
        "invalid_stream_name",
    );
}
