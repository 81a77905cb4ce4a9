//! The API over the SQLite backend, end to end: the same answers as over the in-memory
//! store, including a live subscription that resumes with `Last-Event-ID`.

use std::sync::Arc;
use std::time::Duration;

use foldstore_server::{ServerConfig, serve};
use foldstore_sqlite::{SqliteOptions, SqliteStore};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Reads SSE `data:` lines with their `id:` until `n` events arrived.
async fn read_events(response: reqwest::Response, n: usize) -> Vec<(String, Value)> {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an SSE event within 10 s")
            .expect("the stream is open")
            .unwrap();
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let id = block.lines().find_map(|l| l.strip_prefix("id: "));
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id.to_owned(), serde_json::from_str(data).unwrap()));
            }
        }
    }
    events
}

#[tokio::test]
async fn append_read_conflict_and_subscribe_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("foldstore.db"), SqliteOptions::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        Arc::new(store.clone()),
        ServerConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let append = |expected: Value| {
        client
            .post(format!("{base}/streams/account-1"))
            .header("content-type", "application/json")
            .body(
                json!({"expected_revision": expected, "events": [{"type": "Deposited", "data": {"amount": 5}}]})
                    .to_string(),
            )
            .send()
    };

    let first = append(json!("no_stream")).await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = serde_json::from_slice(&first.bytes().await.unwrap()).unwrap();
    assert_eq!(first["next_expected_revision"], 0);

    let conflict = append(json!("no_stream")).await.unwrap();
    assert_eq!(conflict.status(), 409);
    let conflict: Value = serde_json::from_slice(&conflict.bytes().await.unwrap()).unwrap();
    assert_eq!(conflict["code"], "wrong_expected_revision");
    assert_eq!(conflict["actual"], 0);

    let subscription = client
        .get(format!("{base}/all/subscribe"))
        .send()
        .await
        .unwrap();
    let second = append(json!(0)).await.unwrap();
    assert_eq!(second.status(), 200);
    let events = read_events(subscription, 2).await;
    assert_eq!(events[0].0, first["position"].as_str().unwrap());
    assert_eq!(events[1].1["revision"], 1);

    let resumed = client
        .get(format!("{base}/all/subscribe"))
        .header("last-event-id", events[0].0.as_str())
        .send()
        .await
        .unwrap();
    let only_later = read_events(resumed, 1).await;
    assert_eq!(only_later[0].0, events[1].0);

    let page = client
        .get(format!(
            "{base}/streams/account-1?direction=backwards&limit=1"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page: Value = serde_json::from_slice(&page.bytes().await.unwrap()).unwrap();
    assert_eq!(page["events"][0]["revision"], 1);
    assert_eq!(page["next"], 0);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    store.close().await.unwrap();
}
