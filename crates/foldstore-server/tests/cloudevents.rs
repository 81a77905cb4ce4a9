//! CloudEvents 1.0 batch appends (`application/cloudevents-batch+json`): mapping to
//! events, idempotent retries of non-UUID ids, and problem answers that write nothing.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use foldstore_core::InMemoryStore;
use foldstore_server::{ServerConfig, app};
use serde_json::{Value, json};
use tower::ServiceExt;

const BATCH: &str = "application/cloudevents-batch+json";

fn router() -> Router {
    app(Arc::new(InMemoryStore::new()), ServerConfig::default())
}

async fn send(
    router: &Router,
    method: &str,
    uri: &str,
    body: Option<(&str, String)>,
) -> (u16, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    let body = match body {
        Some((content_type, text)) => {
            request = request.header(header::CONTENT_TYPE, content_type);
            Body::from(text)
        }
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value)
}

async fn post_batch(router: &Router, uri: &str, batch: &Value) -> (u16, Value) {
    send(router, "POST", uri, Some((BATCH, batch.to_string()))).await
}

async fn read(router: &Router, stream: &str) -> (u16, Value) {
    send(router, "GET", &format!("/streams/{stream}"), None).await
}

fn batch() -> Value {
    json!([
        {
            "specversion": "1.0",
            "id": "0b3c5c2e-8f5e-4a53-9d51-2d0d6a1f7e10",
            "source": "/checkout",
            "type": "com.example.order.placed",
            "subject": "order-17",
            "time": "2026-11-27T06:00:00Z",
            "datacontenttype": "application/json",
            "data": {"total": 42, "items": ["a", "b"]},
            "traceparent": "00-abc-def-01"
        },
        {
            "specversion": "1.0",
            "id": "A-234-1234-1234",
            "source": "https://example.com/payments",
            "type": "com.example.payment.received",
            "data": {"amount": 42}
        }
    ])
}

#[tokio::test]
async fn a_batch_becomes_events_with_cloudevents_attributes_in_metadata() {
    let router = router();
    let (status, answer) = post_batch(&router, "/streams/order-17", &batch()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["next_expected_revision"], 1);

    let (status, page) = read(&router, "order-17").await;
    assert_eq!(status, 200);
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    // A UUID id is the event id.
    assert_eq!(events[0]["id"], "0b3c5c2e-8f5e-4a53-9d51-2d0d6a1f7e10");
    assert_eq!(events[0]["type"], "com.example.order.placed");
    assert_eq!(events[0]["data"], json!({"total": 42, "items": ["a", "b"]}));
    let ce = &events[0]["metadata"]["cloudevents"];
    assert_eq!(ce["source"], "/checkout");
    assert_eq!(ce["subject"], "order-17");
    assert_eq!(ce["time"], "2026-11-27T06:00:00Z");
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["traceparent"], "00-abc-def-01", "extensions are kept");
    // Any other id becomes a UUIDv5 of source and id.
    let derived = events[1]["id"].as_str().unwrap();
    let uuid = uuid::Uuid::parse_str(derived).unwrap();
    assert_eq!(uuid.get_version_num(), 5);
    assert_eq!(
        events[1]["metadata"]["cloudevents"]["id"],
        "A-234-1234-1234"
    );
}

#[tokio::test]
async fn a_retried_batch_is_stored_once() {
    let router = router();
    let (_, first) = post_batch(&router, "/streams/order-17", &batch()).await;
    let (status, second) = post_batch(&router, "/streams/order-17", &batch()).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(first, second, "a retry answers the first result");
    let (_, page) = read(&router, "order-17").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);

    // The same id from another source is another event.
    let mut other = batch();
    other[1]["source"] = json!("https://example.com/refunds");
    let other = json!([other[1].clone()]);
    let (status, _) = post_batch(&router, "/streams/order-17", &other).await;
    assert_eq!(status, 200);
    let (_, page) = read(&router, "order-17").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn binary_and_text_data_keep_their_content_type() {
    let router = router();
    let batch = json!([
        {"specversion": "1.0", "id": "1", "source": "/cam", "type": "frame",
         "datacontenttype": "image/png", "data_base64": "iVBORw0KGgo="},
        {"specversion": "1.0", "id": "2", "source": "/log", "type": "line",
         "datacontenttype": "text/plain", "data": "hello <world>"}
    ]);
    let (status, answer) = post_batch(&router, "/streams/media-1", &batch).await;
    assert_eq!(status, 200, "{answer}");
    let (_, page) = read(&router, "media-1").await;
    let events = &page["events"];
    assert_eq!(events[0]["content_type"], "image/png");
    assert_eq!(events[0]["data"], "iVBORw0KGgo=");
    assert_eq!(events[1]["content_type"], "text/plain");
    assert_eq!(
        events[1]["data"], "aGVsbG8gPHdvcmxkPg==",
        "text is stored as given"
    );
}

#[tokio::test]
async fn the_expected_revision_comes_from_the_query() {
    let router = router();
    let (status, _) = post_batch(
        &router,
        "/streams/order-17?expected_revision=no_stream",
        &batch(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, problem) = post_batch(
        &router,
        "/streams/order-17?expected_revision=no_stream",
        &json!([{"specversion": "1.0", "id": "x", "source": "/s", "type": "t", "data": {}}]),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(problem["code"], "wrong_expected_revision");
}

/// Each invalid batch is a 400 with a stable code, and writes nothing.
#[tokio::test]
async fn invalid_batches_are_problems_and_write_nothing() {
    let router = router();
    let valid = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": {}});
    let mut missing_source = valid.clone();
    missing_source.as_object_mut().unwrap().remove("source");
    let mut old_version = valid.clone();
    old_version["specversion"] = json!("0.3");
    let mut both = valid.clone();
    both["data_base64"] = json!("AAAA");
    let mut bad_time = valid.clone();
    bad_time["time"] = json!("yesterday");
    let mut empty_id = valid.clone();
    empty_id["id"] = json!("");
    let cases = [
        (
            json!([valid.clone(), missing_source]),
            "invalid_cloudevent",
            "source",
        ),
        (json!([old_version]), "invalid_cloudevent", "specversion"),
        (json!([both]), "invalid_cloudevent", "data_base64"),
        (json!([bad_time]), "invalid_cloudevent", "RFC 3339"),
        (json!([empty_id]), "invalid_cloudevent", "id"),
        (json!({"not": "an array"}), "invalid_cloudevent", "array"),
        (json!([42]), "invalid_cloudevent", "object"),
        (json!([]), "invalid_event", ""),
    ];
    for (body, code, mentions) in cases {
        let (status, problem) = post_batch(&router, "/streams/bad-1", &body).await;
        assert_eq!(status, 400, "{body}: {problem}");
        assert_eq!(problem["code"], code, "{body}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(mentions),
            "{body}: {problem}"
        );
    }
    let (status, _) = read(&router, "bad-1").await;
    assert_eq!(status, 404, "nothing was written");

    let (status, problem) = send(
        &router,
        "POST",
        "/streams/bad-1",
        Some(("text/plain", "hello".into())),
    )
    .await;
    assert_eq!(status, 415);
    assert_eq!(problem["code"], "unsupported_media_type");
    assert!(problem["detail"].as_str().unwrap().contains(BATCH));

    let (status, problem) = post_batch(&router, "/streams/bad-1?expected=1", &json!([valid])).await;
    assert_eq!(status, 400);
    assert_eq!(problem["code"], "invalid_query");
}
