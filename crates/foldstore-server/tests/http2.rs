//! HTTP/2 in clear text with prior knowledge (h2c) on the same port as HTTP/1.1: a
//! plain request, a problem, and a live subscription.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use foldstore_core::InMemoryStore;
use foldstore_server::ServerConfig;
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn h2c_with_prior_knowledge_serves_requests_and_subscriptions() {
    let server = TestServer::start(Arc::new(InMemoryStore::new()), ServerConfig::default()).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();

    let health = h2.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.version(), reqwest::Version::HTTP_2);
    assert_eq!(health.status(), 200);

    let missing = h2.get(server.url("/nowhere")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );

    let subscription = h2
        .get(server.url("/streams/h2-1/subscribe"))
        .send()
        .await
        .unwrap();
    assert_eq!(subscription.version(), reqwest::Version::HTTP_2);
    assert_eq!(subscription.status(), 200);
    assert!(subscription.headers().get("connection").is_none());
    server
        .append("h2-1", json!([{"type": "Ticked", "data": {}}]))
        .await;
    let mut body = subscription.bytes_stream();
    let mut text = String::new();
    while !text.contains("id: 0") && !text.contains("id:0") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}
