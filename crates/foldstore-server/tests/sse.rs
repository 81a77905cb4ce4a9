//! End to end: a real server on `127.0.0.1:0`, a real HTTP client reading server-sent
//! events, appends through the API, and a resume with `Last-Event-ID`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use foldstore_core::InMemoryStore;
use foldstore_server::{ServerConfig, serve};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server, stopped when dropped.
struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let config = ServerConfig::default().heartbeat(Duration::from_millis(200));
        let task = tokio::spawn(serve(
            listener,
            Arc::new(InMemoryStore::new()),
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// One parsed SSE event.
#[derive(Debug)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Reads SSE events from a response, skipping heartbeat comments.
struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        event.data.push_str(v.trim_start());
                    }
                }
                if event.event.is_some() || !event.data.is_empty() {
                    return event;
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("an SSE event within 10 s")
                .expect("the SSE stream is open")
                .unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn append(client: &reqwest::Client, server: &TestServer, stream: &str, n: u32) -> Value {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"type": "Ticked", "data": {"i": i}}))
        .collect();
    let response = client
        .post(server.url(&format!("/streams/{stream}")))
        .header("content-type", "application/json")
        .body(json!({"expected_revision": "any", "events": events}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn all_subscription_delivers_live_events_and_resumes_after_last_event_id() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();

    let response = client
        .get(server.url("/all/subscribe"))
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(response);

    let appended = append(&client, &server, "clock-1", 1).await;
    let first = sse.next().await;
    assert_eq!(first.event.as_deref(), Some("event"));
    assert_eq!(first.id.as_deref(), appended["position"].as_str());
    let data: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(data["stream"], "clock-1");
    assert_eq!(data["data"], json!({"i": 0}));
    assert_eq!(data["position"], appended["position"]);
    drop(sse);

    // Two more events while disconnected; a reconnect with Last-Event-ID gets only them.
    append(&client, &server, "clock-1", 2).await;
    let response = client
        .get(server.url("/all/subscribe"))
        .header("last-event-id", first.id.clone().unwrap())
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(response);
    let second = sse.next().await;
    let third = sse.next().await;
    let revisions: Vec<u64> = [&second, &third]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["revision"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(revisions, [1, 2]);
    assert_ne!(second.id, first.id);

    // from=end: only events appended after subscribing.
    let response = client
        .get(server.url("/all/subscribe?from=end"))
        .send()
        .await
        .unwrap();
    let mut tail = SseReader::new(response);
    append(&client, &server, "clock-2", 1).await;
    let latest = tail.next().await;
    assert_eq!(
        serde_json::from_str::<Value>(&latest.data).unwrap()["stream"],
        "clock-2"
    );
}

#[tokio::test]
async fn stream_subscription_uses_revisions_as_ids() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    append(&client, &server, "room-1", 3).await;

    let response = client
        .get(server.url("/streams/room-1/subscribe"))
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(response);
    assert_eq!(sse.next().await.id.as_deref(), Some("1"));
    assert_eq!(sse.next().await.id.as_deref(), Some("2"));
    append(&client, &server, "room-1", 1).await;
    assert_eq!(sse.next().await.id.as_deref(), Some("3"));

    let response = client
        .get(server.url("/streams/room-1/subscribe?from=2"))
        .send()
        .await
        .unwrap();
    let mut from_two = SseReader::new(response);
    assert_eq!(from_two.next().await.id.as_deref(), Some("2"));
}

#[tokio::test]
async fn shutdown_ends_open_subscriptions() {
    let mut server = TestServer::start().await;
    let client = reqwest::Client::new();
    let response = client
        .get(server.url("/all/subscribe"))
        .send()
        .await
        .unwrap();
    let _sse = SseReader::new(response);
    let _ = server.stop.take().unwrap().send(());
    let finished = tokio::time::timeout(Duration::from_secs(5), &mut server.task).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "the server stops with a subscription open"
    );
}

#[tokio::test]
async fn a_tombstone_ends_a_stream_subscription_with_an_error_event() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    append(&client, &server, "door-1", 1).await;
    let response = client
        .get(server.url("/streams/door-1/subscribe"))
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(response);
    assert_eq!(sse.next().await.id.as_deref(), Some("0"));

    let deleted = client
        .delete(server.url("/streams/door-1?tombstone=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let error = sse.next().await;
    assert_eq!(error.event.as_deref(), Some("error"));
    let problem: Value = serde_json::from_str(&error.data).unwrap();
    assert_eq!(problem["code"], "stream_tombstoned");
    assert_eq!(problem["status"], 410);
}

#[tokio::test]
async fn a_bad_last_event_id_is_a_problem() {
    let server = TestServer::start().await;
    let response = reqwest::Client::new()
        .get(server.url("/all/subscribe"))
        .header("last-event-id", "not-a-position")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn idle_subscriptions_get_heartbeats() {
    let server = TestServer::start().await;
    let response = reqwest::Client::new()
        .get(server.url("/all/subscribe?from=end"))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("a heartbeat within 5 s (the test server beats every 200 ms)")
        .unwrap()
        .unwrap();
    assert!(
        std::str::from_utf8(&chunk).unwrap().starts_with(':'),
        "{chunk:?}"
    );
}

/// Reads the body until `beats` heartbeat comments arrived; returns every SSE event id
/// seen before that.
async fn ids_before_heartbeats(response: reqwest::Response, beats: usize) -> Vec<String> {
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while text.lines().filter(|l| l.starts_with(':')).count() < beats {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("a heartbeat within 10 s")
            .expect("the SSE stream is open")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|id| id.trim().to_owned())
        .collect()
}

async fn subscribe(server: &TestServer, path: &str, last_event_id: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(server.url(path))
        .header("last-event-id", last_event_id)
        .send()
        .await
        .unwrap()
}

async fn assert_invalid_query(response: reqwest::Response) {
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_query");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no event can follow"),
        "{problem}"
    );
}

/// A resume point past the end of a stream means "after the end", never "from the
/// start": the greatest revision (no revision can follow it) is refused, and one that
/// the stream has not reached yet waits for the revisions after it.
#[tokio::test]
async fn a_stream_resume_point_past_the_end_never_replays_from_the_start() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    append(&client, &server, "meter-1", 3).await;

    let max = subscribe(&server, "/streams/meter-1/subscribe", &u64::MAX.to_string()).await;
    assert_invalid_query(max).await;

    let below = subscribe(
        &server,
        "/streams/meter-1/subscribe",
        &(u64::MAX - 1).to_string(),
    )
    .await;
    assert_eq!(ids_before_heartbeats(below, 2).await, Vec::<String>::new());

    // Revisions 0..=2 exist; resuming after 5 delivers 6 once the stream reaches it.
    let response = subscribe(&server, "/streams/meter-1/subscribe", "5").await;
    let mut sse = SseReader::new(response);
    append(&client, &server, "meter-1", 4).await;
    assert_eq!(sse.next().await.id.as_deref(), Some("6"));
}

/// The same for `$all`: the greatest position is refused, and positions past the end
/// (also past 64 bits, where a backend's integers end) replay nothing.
#[tokio::test]
async fn an_all_resume_point_past_the_end_never_replays_from_the_start() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    append(&client, &server, "meter-2", 3).await;

    let max = subscribe(&server, "/all/subscribe", &u128::MAX.to_string()).await;
    assert_invalid_query(max).await;

    for past in [
        u64::MAX.to_string(),
        (u128::from(u64::MAX) + 1).to_string(),
        (u128::MAX - 1).to_string(),
    ] {
        let response = subscribe(&server, "/all/subscribe", &past).await;
        assert_eq!(
            ids_before_heartbeats(response, 2).await,
            Vec::<String>::new(),
            "Last-Event-ID {past} replayed events"
        );
        let response = client
            .get(server.url(&format!("/all/subscribe?from={past}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            ids_before_heartbeats(response, 2).await,
            Vec::<String>::new(),
            "from={past} replayed events"
        );
    }
}
