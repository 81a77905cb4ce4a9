//! The app over a real socket: the page, the JSON API with its problem+json errors,
//! and the live board over server-sent events, which shows each change without a
//! reload.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

/// The app on a free loopback port; stopped when the test's runtime ends.
async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = kanban::app::router(Arc::new(foldstore_core::InMemoryStore::new()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Reads `state` events from a server-sent event stream.
struct Live {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Live {
    async fn open(url: &str) -> Self {
        let response = reqwest::get(format!("{url}/board/live")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next board state.
    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let message: String = self.buffer.drain(..end + 2).collect();
                if message.lines().any(|l| l == "event: state") {
                    let data = message
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .expect("a data line");
                    return serde_json::from_str::<Value>(data).unwrap()["view"].clone();
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("a state within 10 s")
                .expect("the stream stays open")
                .unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next state for which `f` holds.
    async fn until(&mut self, f: impl Fn(&Value) -> bool) -> Value {
        loop {
            let state = self.next().await;
            if f(&state) {
                return state;
            }
        }
    }
}

fn titles(board: &Value, column: &str) -> Vec<String> {
    board["columns"][column]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap().to_owned())
        .collect()
}

async fn post(url: &str, body: Option<Value>) -> reqwest::Response {
    let request = reqwest::Client::new().post(url);
    match body {
        Some(b) => request.json(&b),
        None => request,
    }
    .send()
    .await
    .unwrap()
}

async fn problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_changes_live_and_refuses_with_problem_details() {
    let url = start().await;
    let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(
        page.contains("new EventSource(\"/board/live\")"),
        "the page follows the board live"
    );

    let mut live = Live::open(&url).await;
    let empty = live.next().await;
    assert_eq!(empty["wip_limit"], 3);
    assert_eq!(titles(&empty, "todo"), Vec::<String>::new());

    // Four cards: each appears in "todo" on the open stream.
    let mut ids = Vec::new();
    for title in ["design", "build", "test", "ship"] {
        let response = post(&format!("{url}/cards"), Some(json!({ "title": title }))).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        ids.push(body["id"].as_u64().unwrap());
    }
    live.until(|b| titles(b, "todo").len() == 4).await;

    // Three fill "doing"; the fourth is refused with the limit's code and a remedy.
    for id in &ids[..3] {
        let response = post(
            &format!("{url}/cards/{id}/move"),
            Some(json!({ "to": "doing" })),
        )
        .await;
        assert_eq!(response.status(), 204);
    }
    let board = live.until(|b| titles(b, "doing").len() == 3).await;
    assert_eq!(titles(&board, "doing"), ["design", "build", "test"]);
    let refused = post(
        &format!("{url}/cards/{}/move", ids[3]),
        Some(json!({ "to": "doing" })),
    )
    .await;
    let body = problem(refused, 409, "wip_limit").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("finish or move one out"),
        "{body}"
    );

    // Finishing one makes room; archiving takes a card off every page.
    let done = post(
        &format!("{url}/cards/{}/move", ids[0]),
        Some(json!({ "to": "done" })),
    )
    .await;
    assert_eq!(done.status(), 204);
    let started = post(
        &format!("{url}/cards/{}/move", ids[3]),
        Some(json!({ "to": "doing" })),
    )
    .await;
    assert_eq!(started.status(), 204);
    let archived = post(&format!("{url}/cards/{}/archive", ids[1]), None).await;
    assert_eq!(archived.status(), 204);
    let board = live
        .until(|b| titles(b, "doing") == ["test", "ship"] && titles(b, "done") == ["design"])
        .await;
    assert_eq!(titles(&board, "todo"), Vec::<String>::new());

    // A second browser starts from the current board.
    let mut second = Live::open(&url).await;
    assert_eq!(second.next().await, board);
    let current: Value = reqwest::get(format!("{url}/board"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current, board);

    // Bad input loses nothing and says what to fix.
    problem(
        post(&format!("{url}/cards/{}/archive", 999), None).await,
        404,
        "unknown_card",
    )
    .await;
    problem(
        post(
            &format!("{url}/cards/{}/move", ids[1]),
            Some(json!({ "to": "done" })),
        )
        .await,
        409,
        "card_archived",
    )
    .await;
    problem(
        post(&format!("{url}/cards"), Some(json!({ "title": "  " }))).await,
        400,
        "bad_title",
    )
    .await;
    problem(
        post(&format!("{url}/cards"), Some(json!({ "name": "x" }))).await,
        400,
        "invalid_body",
    )
    .await;
    problem(
        post(
            &format!("{url}/cards/{}/move", ids[2]),
            Some(json!({ "to": "later" })),
        )
        .await,
        400,
        "invalid_body",
    )
    .await;
    let after: Value = reqwest::get(format!("{url}/board"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after, board, "refused requests changed nothing");
}
