//! The edits API over a socket: an edit answers with its revision, the document reads
//! back as JSON, and bad edits get problem+json answers with stable codes and change
//! nothing.

use std::sync::Arc;

use serde_json::{Value, json};

async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = collab_editor::app::router(Arc::new(foldstore_core::InMemoryStore::new()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn post(url: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn problem(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_answer_with_their_revision_and_bad_ones_change_nothing() {
    let url = start().await;
    let edits = format!("{url}/api/docs/notes/edits");
    let first = post(
        &edits,
        json!({"author": "ada", "after": null, "text": "ac", "deleted": []}),
    )
    .await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.json::<Value>().await.unwrap(), json!({"revision": 0}));
    let second = post(
        &edits,
        json!({"author": "bo", "after": [0, 0], "text": "b", "deleted": []}),
    )
    .await;
    assert_eq!(
        second.json::<Value>().await.unwrap(),
        json!({"revision": 1})
    );

    let doc: Value = reqwest::get(format!("{url}/api/docs/notes"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["revision"], 2);
    assert_eq!(
        doc["chars"],
        json!([[0, 0, "a", false], [1, 0, "b", false], [0, 1, "c", false]])
    );

    problem(
        post(
            &edits,
            json!({"author": "x", "after": [9, 0], "text": "z", "deleted": []}),
        )
        .await,
        409,
        "unknown_char",
    )
    .await;
    problem(
        post(
            &edits,
            json!({"author": "x", "after": null, "text": "", "deleted": []}),
        )
        .await,
        400,
        "empty_edit",
    )
    .await;
    problem(
        post(&edits, json!({"author": "x", "text": "z"})).await,
        400,
        "invalid_body",
    )
    .await;
    problem(
        post(
            &format!("{url}/api/docs/No%20Such/edits"),
            json!({"author": "x", "after": null, "text": "z", "deleted": []}),
        )
        .await,
        400,
        "bad_document_name",
    )
    .await;
    let after: Value = reqwest::get(format!("{url}/api/docs/notes"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after, doc, "refused edits changed nothing");
    let page = reqwest::get(format!("{url}/d/notes"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("new EventSource(`${api}/live`)"));
}
