//! Requests hyper refuses before the router sees them (a raw byte outside ASCII in the
//! path, a head larger than the server reads, a request target too long) are answered
//! with problem+json and a stable code like every other error, over a raw TCP socket
//! since no HTTP client sends such requests; a keep-alive connection that served
//! requests first gets the same answer.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use foldstore_core::InMemoryStore;
use foldstore_server::ServerConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed response: status, lower-cased head, body.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

fn parse(raw: &[u8]) -> Answer {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    Answer {
        status,
        head,
        body: raw[end + 4..].to_vec(),
    }
}

/// Sends `request` (while reading, so a large one cannot deadlock) and reads until the
/// server closes.
async fn exchange(server: &TestServer, request: Vec<u8>) -> Vec<u8> {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        // The server may answer and close before it read everything.
        let _ = write.write_all(&request).await;
        write
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    if let Ok(Err(e)) = read {
        panic!(
            "reading the answer failed: {e}; got {:?}",
            String::from_utf8_lossy(&raw)
        );
    }
    drop(writer.await);
    raw
}

fn assert_problem(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.head);
    assert!(
        answer
            .head
            .contains("content-type: application/problem+json"),
        "{}",
        answer.head
    );
    let problem: Value = serde_json::from_slice(&answer.body).unwrap_or_else(|e| {
        panic!("{e}: {:?}", String::from_utf8_lossy(&answer.body));
    });
    assert_eq!(problem["status"], status);
    assert_eq!(problem["code"], code);
    assert!(!problem["detail"].as_str().unwrap().is_empty());
    assert!(problem["title"].is_string());
}

async fn server() -> TestServer {
    TestServer::start(Arc::new(InMemoryStore::new()), ServerConfig::default()).await
}

#[tokio::test]
async fn a_raw_byte_outside_ascii_in_the_path_is_a_problem() {
    let server = server().await;
    let raw = exchange(
        &server,
        b"GET /streams/a\xffb HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(),
    )
    .await;
    let answer = parse(&raw);
    assert_problem(&answer, 400, "malformed_request");
    assert!(
        String::from_utf8_lossy(&answer.body).contains("percent-encode"),
        "the detail says what to do"
    );
}

#[tokio::test]
async fn a_head_too_large_is_a_problem() {
    let server = server().await;
    let mut request = b"GET /health HTTP/1.1\r\nHost: test\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 500 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    let answer = parse(&exchange(&server, request).await);
    assert_problem(&answer, 431, "headers_too_large");
}

#[tokio::test]
async fn a_request_target_too_long_is_a_problem() {
    let server = server().await;
    let mut request = b"GET /streams/".to_vec();
    request.extend(std::iter::repeat_n(b'a', 70_000));
    request.extend_from_slice(b" HTTP/1.1\r\nHost: test\r\n\r\n");
    let answer = parse(&exchange(&server, request).await);
    // The target alone is over the head limit, which hyper checks first.
    assert!(matches!(answer.status, 414 | 431), "{}", answer.head);
    assert_problem(
        &answer,
        answer.status,
        if answer.status == 414 {
            "uri_too_long"
        } else {
            "headers_too_large"
        },
    );
}

/// The answers of requests the router served pass unchanged, and a malformed request
/// after them on the same connection still gets a problem.
#[tokio::test]
async fn a_malformed_request_after_good_ones_on_one_connection_is_a_problem() {
    let server = server().await;
    let mut request = Vec::new();
    for _ in 0..3 {
        request.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n");
    }
    // A 404 is the router's own problem, whose head is like hyper's 4xx ones.
    request.extend_from_slice(b"GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n");
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(&request).await.unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read the four answers before sending the malformed request.
    while raw.windows(9).filter(|w| w == b"HTTP/1.1 ").count() < 4
        || !String::from_utf8_lossy(&raw).contains("\"code\":\"not_found\"")
    {
        let n = tokio::time::timeout(Duration::from_secs(10), read.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    assert_eq!(text.matches("HTTP/1.1 404 Not Found").count(), 1, "{text}");
    write
        .write_all(b"GET /\xff HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_problem(&parse(&rest), 400, "malformed_request");
}
