//! Live view models (`foldstore_server::live_view`): a view folded inside the server
//! and pushed over SSE. Checked on a real socket: a browser-like client gets the current
//! state at once, then each new state as events are appended, and a client connecting
//! later starts from the state folded so far.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use foldstore_core::{
    EventFilter, EventStore, ExpectedRevision, InMemoryStore, NewEvent, Position, StreamName,
};
use foldstore_server::live_view::LiveView;
use futures::StreamExt;
use serde_json::Value;

type Counts = BTreeMap<String, u64>;

/// Reads `state` messages from an SSE response body.
struct StateReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl StateReader {
    fn new(response: reqwest::Response) -> Self {
        Self {
            body: response.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next `state` message's JSON, skipping comments (heartbeats).
    async fn next_state(&mut self) -> Value {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let mut event = None;
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = Some(e.to_owned());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                if event.as_deref() == Some("state") {
                    return serde_json::from_str(&data).expect("state data is JSON");
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("a state within 10 s")
                .expect("the stream is open")
                .expect("a chunk");
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// Reads states until one satisfies `done`; returns it.
    async fn until(&mut self, done: impl Fn(&Value) -> bool) -> Value {
        loop {
            let state = self.next_state().await;
            if done(&state) {
                return state;
            }
        }
    }
}

async fn append(store: &InMemoryStore, stream: &str, event_type: &str) -> Position {
    let stream = StreamName::new(stream).unwrap();
    let event = NewEvent::json(event_type, &serde_json::json!({})).unwrap();
    store
        .append(&stream, ExpectedRevision::Any, vec![event])
        .await
        .unwrap()
        .position
}

fn count(state: &Value, event_type: &str) -> u64 {
    state["view"][event_type].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_get_the_current_state_then_every_change() {
    let store = InMemoryStore::new();
    append(&store, "card-1", "Opened").await;
    let view = LiveView::spawn(
        Arc::new(store.clone()) as Arc<dyn EventStore>,
        EventFilter::category("card").unwrap(),
        Counts::new(),
        |counts, event| *counts.entry(event.event_type.clone()).or_default() += 1,
    );
    let served = view.clone();
    let app = Router::new().route("/views/cards", get(move || async move { served.sse() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let url = format!("http://{addr}/views/cards");
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut first = StateReader::new(response);
    // The state folded so far arrives first (possibly still the initial one while the
    // view catches up, then the caught-up one).
    let caught_up = first.until(|s| count(s, "Opened") == 1).await;
    assert!(caught_up["position"].is_string(), "{caught_up}");

    append(&store, "card-2", "Opened").await;
    let moved = append(&store, "card-1", "Moved").await;
    append(&store, "other-1", "Opened").await; // not in the view's category
    let state = first
        .until(|s| count(s, "Opened") == 2 && count(s, "Moved") == 1)
        .await;
    assert_eq!(state["view"].as_object().unwrap().len(), 2, "{state}");

    // A client connecting now starts from the current state.
    // (wait_for takes the position of an event the view folds: with a filter, the
    // store's head may be an event the view never sees.)
    let current = view.wait_for(moved).await;
    assert_eq!(current.view.get("Opened"), Some(&2));
    let mut second = StateReader::new(reqwest::get(&url).await.unwrap());
    let at_connect = second.next_state().await;
    assert_eq!(count(&at_connect, "Opened"), 2);
    assert_eq!(count(&at_connect, "Moved"), 1);

    // Both clients see the next change.
    append(&store, "card-3", "Archived").await;
    for reader in [&mut first, &mut second] {
        let s = reader.until(|s| count(s, "Archived") == 1).await;
        assert_eq!(count(&s, "Opened"), 2);
    }
    assert_eq!(view.stopped(), foldstore_server::live_view::Stopped::Live);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_skips_to_the_latest_state() {
    let store = InMemoryStore::new();
    let view = LiveView::spawn(
        Arc::new(store.clone()) as Arc<dyn EventStore>,
        EventFilter::all(),
        0_u64,
        |n, _| *n += 1,
    );
    let mut sse_states = {
        // The same stream a handler returns, read without a socket.
        let app = Router::new().route(
            "/v",
            get({
                let view = view.clone();
                move || async move { view.sse() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        StateReader::new(reqwest::get(format!("http://{addr}/v")).await.unwrap())
    };
    assert_eq!(sse_states.next_state().await["view"], 0);
    // 500 events while the client does not read: the view holds one state, not 500.
    for i in 0..500 {
        append(&store, &format!("s-{i}"), "E").await;
    }
    let head = store.head_position().await.unwrap().unwrap();
    assert_eq!(view.wait_for(head).await.view, 500);
    let mut seen = Vec::new();
    loop {
        let s = sse_states.next_state().await;
        let n = s["view"].as_u64().unwrap();
        seen.push(n);
        if n == 500 {
            break;
        }
    }
    assert!(
        seen.len() < 500,
        "the client skipped intermediate states ({} states for 500 events)",
        seen.len()
    );
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "states only move forward: {seen:?}"
    );
}
