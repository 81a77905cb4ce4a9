//! The operational surface: the OpenAPI document, `/metrics`, `/api/stats`,
//! `/api/streams`, and the web UI's assets and their headers.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, header};
use foldstore_core::InMemoryStore;
use foldstore_server::{ServerConfig, app, openapi};
use futures::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;

fn router() -> Router {
    app(Arc::new(InMemoryStore::new()), ServerConfig::default())
}

async fn request(
    router: &Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> axum::response::Response {
    let mut builder = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(v) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    router
        .clone()
        .oneshot(builder.body(body).unwrap())
        .await
        .unwrap()
}

async fn text(
    router: &Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (u16, HeaderMap, String) {
    let response = request(router, method, uri, body).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn json_of(router: &Router, uri: &str) -> (u16, Value) {
    let (status, _, body) = text(router, "GET", uri, None).await;
    (status, serde_json::from_str(&body).unwrap())
}

async fn append(router: &Router, stream: &str, types: &[&str]) {
    let events: Vec<Value> = types
        .iter()
        .map(|t| json!({"type": t, "data": {}}))
        .collect();
    let (status, _, body) = text(
        router,
        "POST",
        &format!("/streams/{stream}"),
        Some(json!({"expected_revision": "any", "events": events})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

// ---- OpenAPI ------------------------------------------------------------------

/// The routes the issue asks for, and those this server adds; each must be in the
/// document.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/api/stats"),
    ("get", "/api/streams"),
    ("get", "/streams/{stream}"),
    ("post", "/streams/{stream}"),
    ("delete", "/streams/{stream}"),
    ("get", "/streams/{stream}/metadata"),
    ("put", "/streams/{stream}/metadata"),
    ("get", "/streams/{stream}/subscribe"),
    ("get", "/all"),
    ("get", "/all/subscribe"),
    ("get", "/categories/{category}"),
    ("get", "/subscriptions"),
    ("get", "/subscriptions/{stream}"),
    ("put", "/subscriptions/{stream}/{group}"),
    ("post", "/subscriptions/{stream}/{group}"),
    ("get", "/subscriptions/{stream}/{group}"),
    ("delete", "/subscriptions/{stream}/{group}"),
    ("post", "/subscriptions/{stream}/{group}/replay-parked"),
    ("post", "/subscriptions/{stream}/{group}/messages"),
    ("post", "/subscriptions/{stream}/{group}/ack"),
    ("post", "/subscriptions/{stream}/{group}/nack"),
    ("get", "/subscriptions/{stream}/{group}/subscribe"),
    ("get", "/"),
    ("get", "/ui/{file}"),
    ("post", "/auth/session"),
    ("delete", "/auth/session"),
];

#[tokio::test]
async fn the_openapi_document_parses_and_is_served() {
    let router = router();
    let (status, headers, body) = text(&router, "GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let served: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(served["openapi"], "3.1.0");
    let built: Value = serde_json::from_str(&openapi().to_json().unwrap()).unwrap();
    assert_eq!(served, built);
    // It parses back into the OpenAPI model, and every reference resolves.
    // An independent OpenAPI 3.1 parser (the `oas3` crate) reads it, and every
    // operation's `$ref`s resolve.
    let spec = oas3::from_json(&body).expect("an OpenAPI 3.1 parser reads the document");
    assert_eq!(spec.openapi, "3.1.0");
    for (path, method, operation) in spec.operations() {
        assert!(
            !operation.responses(&spec).is_empty(),
            "{method} {path} has no responses"
        );
        for parameter in &operation.parameters {
            parameter
                .resolve(&spec)
                .unwrap_or_else(|e| panic!("{method} {path}: parameter does not resolve: {e}"));
        }
    }
    let mut refs = Vec::new();
    collect_refs(&served, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let (kind, name) = r
            .strip_prefix("#/components/")
            .and_then(|rest| rest.split_once('/'))
            .unwrap_or_else(|| panic!("odd $ref {r}"));
        assert!(
            served["components"][kind].get(name).is_some(),
            "$ref {r} does not resolve"
        );
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().unwrap().to_owned());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// The router is built from the document's operations (`routes.rs`); this checks
/// both directions: each expected route is documented, and each documented
/// operation is answered by a handler (never the not-found or wrong-method fallback).
#[tokio::test]
async fn every_route_is_documented_and_every_documented_operation_is_served() {
    let doc: Value = serde_json::from_str(&openapi().to_json().unwrap()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} is not in the OpenAPI document"
        );
    }
    let router = router();
    append(&router, "probe-1", &["Probed"]).await;
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            if path.starts_with("/auth/") {
                // Served only with a tokens file (tests/documented_statuses.rs walks
                // them with one).
                continue;
            }
            let uri = path
                .replace("{stream}", "probe-1")
                .replace("{category}", "probe")
                .replace("{group}", "probe")
                .replace("{file}", "app.js");
            let body = match method.as_str() {
                "post" => Some(
                    json!({"expected_revision": "any", "events": [{"type": "Probed", "data": {}}]}),
                ),
                "put" => Some(json!({})),
                _ => None,
            };
            let response = request(&router, &method.to_uppercase(), &uri, body).await;
            let status = response.status().as_u16();
            if [404, 405].contains(&status) {
                // A handler's own 404 (such as stream_not_found) is fine; the
                // router's fallbacks are not.
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                let problem: Value = serde_json::from_slice(&bytes).unwrap();
                assert!(
                    !["not_found", "method_not_allowed"]
                        .contains(&problem["code"].as_str().unwrap()),
                    "{method} {path} is documented but the router has no such route: {problem}"
                );
            }
        }
    }
    assert_eq!(
        operations,
        ROUTES.len(),
        "the document has operations this test does not know"
    );
}

// ---- Metrics ------------------------------------------------------------------

/// Parses the text format: every sample line is `name{labels} value`.
fn samples(text: &str) -> Vec<(String, f64)> {
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (name, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            if let Some(open) = name.find('{') {
                assert!(name.ends_with('}'), "bad labels in {line:?}");
                assert!(
                    name[..open]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                );
            }
            (name.to_owned(), value)
        })
        .collect()
}

fn sample(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no sample {name}"))
        .1
}

async fn scrape(router: &Router) -> Vec<(String, f64)> {
    let (status, headers, body) = text(router, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    samples(&body)
}

#[tokio::test]
async fn metrics_parse_and_count_appends_requests_and_subscribers() {
    let router = router();
    let before = scrape(&router).await;
    assert_eq!(sample(&before, "foldstore_events_appended_total"), 0.0);
    assert_eq!(sample(&before, "foldstore_subscribers"), 0.0);

    append(&router, "order-1", &["Placed", "Paid"]).await;
    append(&router, "order-2", &["Placed"]).await;
    let (status, _, _) = text(
        &router,
        "POST",
        "/streams/order-2",
        Some(json!({"expected_revision": 99, "events": [{"type": "X", "data": {}}]})),
    )
    .await;
    assert_eq!(status, 409);

    // A live subscriber that receives one event.
    let response = request(&router, "GET", "/all/subscribe?from=start", None).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body().into_data_stream();
    let first = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(first.contains("event: event"), "{first}");

    let during = scrape(&router).await;
    assert_eq!(sample(&during, "foldstore_events_appended_total"), 3.0);
    assert_eq!(
        sample(&during, "foldstore_appends_total{outcome=\"ok\"}"),
        2.0
    );
    assert_eq!(
        sample(&during, "foldstore_appends_total{outcome=\"error\"}"),
        1.0
    );
    assert_eq!(
        sample(&during, "foldstore_append_duration_seconds_count"),
        2.0
    );
    assert_eq!(sample(&during, "foldstore_subscribers"), 1.0);
    assert!(sample(&during, "foldstore_subscriber_delivery_lag_seconds_count") >= 1.0);
    assert_eq!(
        sample(
            &during,
            "foldstore_http_requests_total{route=\"/streams/{stream}\",method=\"POST\",status=\"200\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &during,
            "foldstore_http_requests_total{route=\"/streams/{stream}\",method=\"POST\",status=\"409\"}"
        ),
        1.0
    );

    // The client goes away: the subscription ends and the gauge comes down.
    drop(body);
    let mut gone = false;
    for _ in 0..200 {
        if sample(&scrape(&router).await, "foldstore_subscribers") == 0.0 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(gone, "the subscriber gauge did not come down");
}

// ---- Streams listing and stats ------------------------------------------------

#[tokio::test]
async fn streams_are_listed_by_prefix_and_category_with_their_state() {
    let router = router();
    append(&router, "order-2", &["Placed", "Paid"]).await;
    append(&router, "order-1", &["Placed"]).await;
    append(&router, "orderline-1", &["Added"]).await;
    append(&router, "user-1", &["Registered"]).await;
    append(&router, "user-2", &["Registered"]).await;
    let (status, _, _) = text(&router, "DELETE", "/streams/user-2", None).await;
    assert_eq!(status, 204);
    let (status, _, _) = text(&router, "DELETE", "/streams/order-1?tombstone=true", None).await;
    assert_eq!(status, 204);

    let (status, page) = json_of(&router, "/api/streams?category=order").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = page["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["order-1", "order-2"],
        "a category is not a bare prefix"
    );
    assert_eq!(page["streams"][0]["state"], "tombstoned");
    assert_eq!(page["streams"][1]["state"], "active");
    assert_eq!(page["streams"][1]["revision"], 1);
    assert_eq!(page["streams"][1]["last_type"], "Paid");

    let (_, page) = json_of(&router, "/api/streams?prefix=order").await;
    assert_eq!(page["streams"].as_array().unwrap().len(), 3);

    let (_, page) = json_of(&router, "/api/streams?prefix=user-").await;
    assert_eq!(page["streams"][1]["name"], "user-2");
    assert_eq!(page["streams"][1]["state"], "deleted");

    // Paging.
    let (_, first) = json_of(&router, "/api/streams?limit=2").await;
    assert_eq!(first["streams"].as_array().unwrap().len(), 2);
    assert_eq!(first["next"], "order-2");
    let (_, second) = json_of(&router, "/api/streams?limit=2&after=order-2").await;
    assert_eq!(second["streams"][0]["name"], "orderline-1");
    let (_, last) = json_of(&router, "/api/streams?limit=2&after=user-1").await;
    assert_eq!(last["streams"].as_array().unwrap().len(), 1);
    assert!(last.get("next").is_none());

    for bad in [
        "/api/streams?prefix=a&category=b",
        "/api/streams?category=a-b",
        "/api/streams?limit=0",
        "/api/streams?limit=501",
    ] {
        let (status, problem) = json_of(&router, bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(
            ["invalid_query", "invalid_stream_name"].contains(&problem["code"].as_str().unwrap()),
            "{bad}: {problem}"
        );
    }

    let (status, stats) = json_of(&router, "/api/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["streams"], 5);
    assert_eq!(stats["events_appended"], 6);
    assert_eq!(stats["appends"], 5);
    assert_eq!(stats["subscribers"], 0);
    assert!(stats["head_position"].is_string());
}

// ---- The UI ---------------------------------------------------------------------

#[tokio::test]
async fn the_ui_is_served_with_types_cache_headers_and_a_strict_policy() {
    let router = router();
    let (status, headers, page) = text(&router, "GET", "/", None).await;
    assert_eq!(status, 200);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();

    // The page links versioned assets; each is served with its type, cached for good.
    let start = page
        .find("/ui/app.js?v=")
        .expect("the page links app.js with a version");
    let js_url = &page[start..page[start..].find('"').unwrap() + start];
    for (url, content_type) in [
        (js_url.to_owned(), "text/javascript; charset=utf-8"),
        (
            js_url.replace("app.js", "app.css"),
            "text/css; charset=utf-8",
        ),
        (js_url.replace("app.js", "icon.svg"), "image/svg+xml"),
    ] {
        let (status, headers, body) = text(&router, "GET", &url, None).await;
        assert_eq!(status, 200, "{url}");
        assert_eq!(headers[header::CONTENT_TYPE], content_type, "{url}");
        assert_eq!(
            headers[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert!(!body.is_empty());
    }
    let (_, _, js) = text(&router, "GET", js_url, None).await;
    assert!(
        !js.contains("innerHTML"),
        "event content never goes through innerHTML"
    );

    // Revalidation.
    let response = router
        .clone()
        .oneshot(
            Request::get("/")
                .header(header::IF_NONE_MATCH, &etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 304);

    let (status, headers, body) = text(&router, "GET", "/ui/secrets.txt", None).await;
    assert_eq!(status, 404);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert!(body.contains("not_found"));
}
