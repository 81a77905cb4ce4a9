//! `serve --otlp-endpoint`: a fake OTLP/HTTP collector receives the server's traces,
//! and an append over HTTP arrives as a request span with the commit span as its
//! child, in one trace.
#![cfg(feature = "otlp")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use otlp_prost::Message;

/// A collector on a free port: every POST body to `/v1/traces` goes to the channel.
fn collector() -> (String, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(connection) = connection else { return };
            let tx = tx.clone();
            std::thread::spawn(move || serve_collector(connection, &tx));
        }
    });
    (url, rx)
}

/// Answers the requests of one connection with 200 and an empty body.
fn serve_collector(connection: TcpStream, tx: &mpsc::Sender<Vec<u8>>) {
    let mut writer = connection.try_clone().unwrap();
    let mut reader = BufReader::new(connection);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        assert!(
            request_line.starts_with("POST /v1/traces "),
            "{request_line}"
        );
        // Kept before the answer: the export waits for it, and the server for the
        // export before it exits.
        let _ = tx.send(body);
        writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
    }
}

#[test]
fn an_append_is_exported_as_a_request_span_whose_child_is_the_commit() {
    let (endpoint, bodies) = collector();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_foldstore"))
        .args(["serve", "--port", "0", "--otlp-endpoint", &endpoint])
        .env_remove("RUST_LOG")
        .env_remove("FOLDSTORE_DATABASE_URL")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    let body = r#"{"expected_revision":"any","events":[{"type":"Opened","data":{}}]}"#;
    let mut stream = TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "POST /streams/acct-1 HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // SIGINT: the server stops and flushes its spans before it exits.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());

    let spans: Vec<Span> = bodies
        .try_iter()
        .flat_map(|body| {
            ExportTraceServiceRequest::decode(body.as_slice())
                .expect("an OTLP protobuf body")
                .resource_spans
        })
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let request = spans
        .iter()
        .find(|s| s.name == "POST /streams/{stream}")
        .unwrap_or_else(|| panic!("no request span among {names:?}"));
    let commit = spans
        .iter()
        .find(|s| s.name == "sqlite.commit")
        .unwrap_or_else(|| panic!("no commit span among {names:?}"));
    assert_eq!(commit.trace_id, request.trace_id, "one trace");
    assert_eq!(
        commit.parent_span_id, request.span_id,
        "the commit is the request's child"
    );
    assert!(request.start_time_unix_nano <= commit.start_time_unix_nano);
    assert!(commit.end_time_unix_nano <= request.end_time_unix_nano);
}
