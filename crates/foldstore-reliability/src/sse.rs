//! A client for server-sent events: a parser for the byte stream and a subscriber
//! that reconnects with `Last-Event-ID` until told to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` (`message` when absent).
    pub event: String,
    /// `id:`, if the event had one.
    pub id: Option<String>,
    /// The `data:` lines joined by newlines.
    pub data: String,
}

/// Splits a byte stream into events (the WHATWG rules this server's output needs:
/// `event`, `id`, `data`, comments, LF or CRLF line ends).
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if self.has_data {
                    let mut e = std::mem::take(&mut self.current);
                    if e.event.is_empty() {
                        e.event = "message".to_owned();
                    }
                    out.push(e);
                }
                self.current = SseEvent::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()),
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "event" => self.current.event = value,
                "id" => self.current.id = Some(value),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(&value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        out
    }
}

/// What one resuming subscriber received.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// The `id` (position) of every `event` event, in arrival order.
    pub ids: Vec<u128>,
    /// Connections made (the first included).
    pub connections: u64,
    /// `error` events received (such as `subscriber_too_slow`).
    pub errors: u64,
}

/// Follows `url` (an SSE endpoint whose ids are numbers), reconnecting with
/// `Last-Event-ID` after every end or failure, until `stop` is set and the last id
/// received is at least `until` (0: any).
pub async fn follow(
    url: String,
    token: Option<String>,
    stop: Arc<AtomicBool>,
    until: Arc<std::sync::atomic::AtomicU64>,
) -> Received {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    let mut got = Received::default();
    let done = |got: &Received| {
        stop.load(Ordering::SeqCst)
            && got.ids.last().copied().unwrap_or(0) >= u128::from(until.load(Ordering::SeqCst))
    };
    while !done(&got) {
        let mut request = http.get(&url);
        if let Some(t) = &token {
            request = request.bearer_auth(t);
        }
        if let Some(last) = got.ids.last() {
            request = request.header("Last-Event-ID", last.to_string());
        }
        let response = match request.send().await {
            Ok(r) if r.status().is_success() => r,
            _ => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        got.connections += 1;
        let mut body = response.bytes_stream();
        let mut parser = SseParser::default();
        loop {
            if done(&got) {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(200), body.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(bytes))) => {
                    for e in parser.push(&bytes) {
                        match e.event.as_str() {
                            "event" => {
                                if let Some(id) = e.id.as_deref().and_then(|i| i.parse().ok()) {
                                    got.ids.push(id);
                                }
                            }
                            "error" => got.errors += 1,
                            _ => {}
                        }
                    }
                }
                Ok(Some(Err(_)) | None) => break,
            }
        }
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_line_ends() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: event\r\nid: 7\r\nda").is_empty());
        let got = p.push(b"ta: {\"a\":1}\r\n\r\n: keep-alive\n\ndata: x\ndata: y\n\n");
        assert_eq!(
            got,
            vec![
                SseEvent {
                    event: "event".into(),
                    id: Some("7".into()),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: "message".into(),
                    id: None,
                    data: "x\ny".into()
                }
            ]
        );
    }
}
