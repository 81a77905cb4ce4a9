//! Ambiguous requests are refused, never resolved by a silent guess: a parameter
//! given twice (should the first or the last count?), a body and a query that give
//! one value differently, a header given twice. Each is a 400 (415 for two
//! `Content-Type`s) problem naming what to fix, and writes nothing.
//!
//! One pair is not ambiguous and stays accepted: a subscription's `Last-Event-ID`
//! with a `from` query parameter, since an `EventSource` reconnects to the URL it
//! was opened with and adds the header; the header wins.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use foldstore_core::InMemoryStore;
use foldstore_server::{ServerConfig, app};
use futures::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A router over a store with `acct-1` at revision 1.
async fn router() -> Router {
    let router = app(Arc::new(InMemoryStore::new()), ServerConfig::default());
    let (status, body) = call(
        &router,
        post("/streams/acct-1", &append_body(json!("no_stream"), 2)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    router
}

fn append_body(expected: Value, events: usize) -> Value {
    let events: Vec<Value> = (0..events)
        .map(|i| json!({"type": "Counted", "data": {"i": i}}))
        .collect();
    json!({"expected_revision": expected, "events": events})
}

fn post(uri: &str, body: &Value) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn empty(method: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap()
}

async fn call(router: &Router, request: Request<Body>) -> (u16, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The revisions stored in `acct-1`.
async fn revisions(router: &Router) -> Vec<u64> {
    let (status, page) = call(router, empty("GET", "/streams/acct-1")).await;
    assert_eq!(status, 200, "{page}");
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect()
}

fn assert_problem(status: u16, body: &Value, want_status: u16, code: &str, names: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(names), "the detail names {names}: {detail}");
}

#[tokio::test]
async fn a_repeated_expected_revision_is_refused_in_either_order() {
    let router = router().await;
    for query in [
        "expected_revision=1&expected_revision=any",
        "expected_revision=any&expected_revision=1",
        "expected_revision=7&expected_revision=7",
    ] {
        // A delete: neither value wins.
        let (status, body) = call(
            &router,
            empty("DELETE", &format!("/streams/acct-1?{query}")),
        )
        .await;
        assert_problem(status, &body, 400, "invalid_query", "expected_revision");

        // A CloudEvents batch, whose expected revision is only in the query.
        let batch = json!([{"id": "e-1", "source": "/t", "type": "Counted", "specversion": "1.0", "data": {}}]);
        let request = Request::post(format!("/streams/acct-1?{query}"))
            .header(header::CONTENT_TYPE, "application/cloudevents-batch+json")
            .body(Body::from(batch.to_string()))
            .unwrap();
        let (status, body) = call(&router, request).await;
        assert_problem(status, &body, 400, "invalid_query", "expected_revision");

        // A JSON append.
        let (status, body) = call(
            &router,
            post(
                &format!("/streams/acct-1?{query}"),
                &append_body(json!("any"), 1),
            ),
        )
        .await;
        assert_problem(status, &body, 400, "invalid_query", "expected_revision");
    }
    assert_eq!(
        revisions(&router).await,
        [0, 1],
        "nothing was written or deleted"
    );

    // Every query extractor refuses a repeated parameter, whatever it is.
    for uri in [
        "/streams/acct-1?limit=1&limit=1",
        "/all?prefix=acct-&prefix=other-",
        "/categories/acct?direction=backwards&direction=forwards",
        "/api/streams?prefix=a&prefix=a",
    ] {
        let (status, body) = call(&router, empty("GET", uri)).await;
        let name = uri.split('?').nth(1).unwrap().split('=').next().unwrap();
        assert_problem(status, &body, 400, "invalid_query", name);
    }
}

#[tokio::test]
async fn a_body_and_a_query_that_disagree_are_refused_and_agreeing_ones_accepted() {
    let router = router().await;
    // The stream is at 1: the body's expected revision is right, the query's is not
    // (and the reverse). Neither is ignored.
    for (body_expected, query) in [
        (json!(1), "any"),
        (json!(1), "no_stream"),
        (json!("any"), "0"),
        (json!("stream_exists"), "1"),
    ] {
        let (status, body) = call(
            &router,
            post(
                &format!("/streams/acct-1?expected_revision={query}"),
                &append_body(body_expected.clone(), 1),
            ),
        )
        .await;
        assert_problem(
            status,
            &body,
            400,
            "conflicting_parameters",
            "expected_revision",
        );
    }
    assert_eq!(revisions(&router).await, [0, 1], "nothing was written");

    // The same value in both places is one value: accepted.
    let (status, body) = call(
        &router,
        post(
            "/streams/acct-1?expected_revision=1",
            &append_body(json!(1), 1),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &router,
        post(
            "/streams/acct-1?expected_revision=any",
            &append_body(json!("any"), 1),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(revisions(&router).await, [0, 1, 2, 3]);

    // A parameter an append does not take is refused rather than ignored.
    let (status, body) = call(
        &router,
        post(
            "/streams/acct-1?tombstone=true",
            &append_body(json!("any"), 1),
        ),
    )
    .await;
    assert_problem(status, &body, 400, "invalid_query", "tombstone");
    // So are parameters on the metadata routes, which take none.
    let (status, body) = call(
        &router,
        empty("GET", "/streams/acct-1/metadata?max_count=1"),
    )
    .await;
    assert_problem(status, &body, 400, "invalid_query", "max_count");
    let request = Request::put("/streams/acct-1/metadata?max_count=1")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let (status, body) = call(&router, request).await;
    assert_problem(status, &body, 400, "invalid_query", "max_count");
    assert_eq!(revisions(&router).await, [0, 1, 2, 3]);
}

#[tokio::test]
async fn a_repeated_header_is_refused() {
    let router = router().await;
    let request = Request::post("/streams/acct-1")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_TYPE, "application/cloudevents-batch+json")
        .body(Body::from(append_body(json!("any"), 1).to_string()))
        .unwrap();
    let (status, body) = call(&router, request).await;
    assert_problem(status, &body, 415, "unsupported_media_type", "Content-Type");
    assert_eq!(revisions(&router).await, [0, 1]);

    for uri in ["/streams/acct-1/subscribe", "/all/subscribe"] {
        let request = Request::get(uri)
            .header("last-event-id", "0")
            .header("last-event-id", "1")
            .body(Body::empty())
            .unwrap();
        let (status, body) = call(&router, request).await;
        assert_problem(status, &body, 400, "invalid_query", "Last-Event-ID");
    }
}

#[tokio::test]
async fn last_event_id_wins_over_from_as_an_event_source_reconnect_needs() {
    let router = router().await;
    // Opened with ?from=0, reconnecting after revision 0: revision 1 comes next.
    let request = Request::get("/streams/acct-1/subscribe?from=0")
        .header("last-event-id", "0")
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = body.next().await.unwrap().unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let first_id = text
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .map(str::trim);
    assert_eq!(first_id, Some("1"), "{text}");
}
