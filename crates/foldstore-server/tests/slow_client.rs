//! A live subscriber that stops reading is told so and cut off, never buffered
//! without bound (the failure of KurrentDB #4007 and OpenCTI #13908, where one slow
//! SSE client grew the server's memory until it died).
//!
//! The client opens `GET /all/subscribe` over a socket with a 4 KiB receive buffer,
//! reads the response head, then stops reading while 12 MiB of events are appended:
//! far more than the socket buffers, the server's channel (4 events) and hyper's
//! write buffer hold. The server must end the subscription (gauge back to 0, the
//! slow-disconnect counter at 1) while the client is still not reading, and when the
//! client reads again it finds a prefix of the events, in order, then an `error`
//! event with the code `subscriber_too_slow`, then the end of the body.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use foldstore_core::InMemoryStore;
use foldstore_server::ServerConfig;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const EVENTS: usize = 192;
const EVENT_BYTES: usize = 64 * 1024;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in metrics"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_gets_an_error_event_and_is_disconnected() {
    let config = ServerConfig::default()
        .sse_buffer(4)
        .slow_client_timeout(Duration::from_millis(300))
        .heartbeat(Duration::from_secs(3600));
    let server = TestServer::start(Arc::new(InMemoryStore::new()), config).await;

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = socket.connect(server.addr).await.unwrap();
    client
        .write_all(b"GET /all/subscribe?from=end HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 1024];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed before answering");
        received.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&received).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_, metrics) = server.get_text("/metrics").await;
    assert_eq!(metric(&metrics, "foldstore_subscribers"), 1.0);

    // The client stops reading; the writers go on.
    let payload = "x".repeat(EVENT_BYTES);
    for i in 0..EVENTS {
        server
            .append(
                &format!("load-{}", i % 8),
                json!([{"type": "Loaded", "data": {"i": i, "pad": payload}}]),
            )
            .await;
    }

    // The server gives up on the client while it is still not reading.
    let mut cut_off = false;
    for _ in 0..400 {
        let (_, metrics) = server.get_text("/metrics").await;
        if metric(&metrics, "foldstore_slow_subscribers_disconnected_total") == 1.0
            && metric(&metrics, "foldstore_subscribers") == 0.0
        {
            cut_off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(cut_off, "the stalled subscription was not ended");

    // Reading again: some events in order, the error event, and the end of the body.
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = client.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            received.extend_from_slice(&chunk[..n]);
            if received.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the body did not end");
    let text = String::from_utf8_lossy(&received);
    let error_at = text.find("event: error").expect("an error event");
    let error_line = text[error_at..]
        .lines()
        .find(|l| l.starts_with("data:"))
        .unwrap();
    let problem: serde_json::Value =
        serde_json::from_str(error_line.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(problem["code"], "subscriber_too_slow");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Last-Event-ID")
    );

    let ids: Vec<u64> = text[..error_at]
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|id| id.trim().parse().unwrap())
        .collect();
    println!(
        "{} of {EVENTS} events reached the client before the cut-off",
        ids.len()
    );
    assert!(
        ids.len() < EVENTS,
        "the slow client got everything: nothing was cut off"
    );
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "delivered events are in order without gaps"
    );
    assert!(
        text.ends_with("\r\n0\r\n\r\n"),
        "the body ended after the error event"
    );
}
