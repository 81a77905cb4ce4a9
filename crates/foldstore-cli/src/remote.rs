//! The CLI's HTTP client for a running `foldstore serve` (`--server`): JSON calls,
//! problem+json errors, and server-sent events for `tail`.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use foldstore_core::{
    AppendResult, Direction, EventFilter, ExpectedRevision, Metadata, NewEvent, Position,
    RecordedEvent, StreamName,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::error::CliError;

/// A server and the token to call it with.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// The answer to a call that failed on the server.
fn problem(status: reqwest::StatusCode, body: &[u8]) -> CliError {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
    CliError::Remote {
        status: status.as_u16(),
        code: text("code").unwrap_or_else(|| "http_error".to_owned()),
        detail: text("detail")
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect()),
        body: value,
    }
}

/// The JSON form of an expected revision.
fn expected_json(expected: ExpectedRevision) -> Value {
    match expected {
        ExpectedRevision::Any => json!("any"),
        ExpectedRevision::NoStream => json!("no_stream"),
        ExpectedRevision::StreamExists => json!("stream_exists"),
        ExpectedRevision::Exact(n) => json!(n),
    }
}

/// An event as the server sends it.
#[derive(Debug, Deserialize)]
struct WireEvent {
    id: uuid::Uuid,
    stream: String,
    #[serde(rename = "type")]
    event_type: String,
    revision: u64,
    position: Position,
    data: Box<RawValue>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    metadata: Option<Box<RawValue>>,
    recorded_at: DateTime<Utc>,
}

impl WireEvent {
    fn into_recorded(self) -> Result<RecordedEvent, CliError> {
        let bad = |what: String| CliError::Protocol(what);
        let (data, content_type) = match self.content_type {
            // Other content types come as base64 strings.
            Some(ct) => {
                use base64::Engine;
                let text: String = serde_json::from_str(self.data.get())
                    .map_err(|e| bad(format!("event {}: data is not a string: {e}", self.id)))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| bad(format!("event {}: data is not base64: {e}", self.id)))?;
                (bytes, ct)
            }
            None => (
                self.data.get().as_bytes().to_vec(),
                foldstore_core::JSON.to_owned(),
            ),
        };
        let metadata = match self.metadata {
            Some(m) => Metadata::from_json(m.get())?,
            None => Metadata::new(),
        };
        Ok(RecordedEvent {
            id: self.id,
            stream: StreamName::new(self.stream)?,
            event_type: self.event_type,
            revision: self.revision,
            position: self.position,
            data: Bytes::from(data),
            content_type,
            metadata,
            recorded_at: self.recorded_at,
            tags: Vec::new(),
        })
    }
}

/// A page of events.
#[derive(Debug, Deserialize)]
struct Page {
    events: Vec<WireEvent>,
}

/// The JSON body of one event of an append.
fn event_body(event: &NewEvent) -> Result<Value, CliError> {
    let mut body = Map::new();
    body.insert("id".into(), json!(event.id));
    body.insert("type".into(), json!(event.event_type));
    if foldstore_core::rules::is_json(&event.content_type) {
        let text = std::str::from_utf8(&event.data)
            .map_err(|_| CliError::Usage("the event data is not UTF-8 JSON".to_owned()))?;
        let raw = RawValue::from_string(text.to_owned()).map_err(|e| {
            CliError::Usage(format!(
                "the event data is not valid JSON ({e}): fix it, or give its --content-type"
            ))
        })?;
        body.insert(
            "data".into(),
            serde_json::to_value(raw).map_err(|e| CliError::Protocol(e.to_string()))?,
        );
    } else {
        use base64::Engine;
        body.insert(
            "data".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(&event.data)),
        );
        body.insert("content_type".into(), json!(event.content_type));
    }
    if !event.metadata.is_empty() {
        let meta: Value = serde_json::from_str(event.metadata.as_str())
            .map_err(|e| CliError::Protocol(e.to_string()))?;
        body.insert("metadata".into(), meta);
    }
    Ok(Value::Object(body))
}

/// Percent-encodes a path segment.
pub(crate) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@$!*',;=+".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Remote {
    /// A client for `base` (`http://host:port` or `https://...`). `ca_cert` adds a PEM
    /// certificate to trust (for self-signed servers).
    pub(crate) fn new(
        base: &str,
        token: Option<String>,
        ca_cert: Option<&Path>,
    ) -> Result<Self, CliError> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "--server {base:?}: give a URL such as http://127.0.0.1:2113 or https://events.example.com"
            )));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| CliError::io(format!("could not read {}", path.display()), e))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                CliError::Usage(format!("{} is not a PEM certificate: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder
            .build()
            .map_err(|e| CliError::Usage(format!("could not set up the HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> CliError {
        CliError::Unreachable {
            server: self.base.clone(),
            source: e,
        }
    }

    /// Sends `request`; the body of a 2xx answer, else the problem as an error.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Bytes, CliError> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(problem(status, &body))
        }
    }

    /// A JSON call: `body` as the request's JSON; the answer's JSON, `None` for an
    /// answer without a body (204).
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Value>, CliError> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let answer = self.send(request).await?;
        if answer.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&answer)
            .map(Some)
            .map_err(|e| CliError::Protocol(format!("the answer to {path} did not parse: {e}")))
    }

    /// `POST /streams/{stream}`.
    pub(crate) async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: &[NewEvent],
    ) -> Result<AppendResult, CliError> {
        let events = events
            .iter()
            .map(event_body)
            .collect::<Result<Vec<_>, _>>()?;
        let body = json!({"expected_revision": expected_json(expected), "events": events});
        let request = self
            .request(
                reqwest::Method::POST,
                &format!("/streams/{}", segment(stream.as_str())),
            )
            .header("content-type", "application/json")
            .body(body.to_string());
        let answer = self.send(request).await?;
        serde_json::from_slice(&answer)
            .map_err(|e| CliError::Protocol(format!("the append answer did not parse: {e}")))
    }

    async fn page(
        &self,
        path: String,
        query: &[(&str, String)],
    ) -> Result<Vec<RecordedEvent>, CliError> {
        let body = self
            .send(self.request(reqwest::Method::GET, &path).query(query))
            .await?;
        let page: Page = serde_json::from_slice(&body)
            .map_err(|e| CliError::Protocol(format!("a page of events did not parse: {e}")))?;
        page.events
            .into_iter()
            .map(WireEvent::into_recorded)
            .collect()
    }

    /// One page of `GET /streams/{stream}`.
    pub(crate) async fn read_stream(
        &self,
        stream: &StreamName,
        from: Option<u64>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, CliError> {
        let mut query = vec![
            ("limit", limit.to_string()),
            ("direction", direction_name(direction)),
        ];
        if let Some(f) = from {
            query.push(("from", f.to_string()));
        }
        self.page(format!("/streams/{}", segment(stream.as_str())), &query)
            .await
    }

    /// One page of `GET /all`.
    pub(crate) async fn read_all(
        &self,
        from: Option<Position>,
        direction: Direction,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, CliError> {
        let mut query = vec![
            ("limit", limit.to_string()),
            ("direction", direction_name(direction)),
        ];
        if let Some(f) = from {
            query.push(("from", f.to_string()));
        }
        query.extend(filter_query(filter));
        self.page("/all".to_owned(), &query).await
    }

    /// The head position from `GET /health`.
    pub(crate) async fn head_position(&self) -> Result<Option<Position>, CliError> {
        let body = self
            .send(self.request(reqwest::Method::GET, "/health"))
            .await?;
        let health: Value = serde_json::from_slice(&body)
            .map_err(|e| CliError::Protocol(format!("/health did not parse: {e}")))?;
        match &health["head_position"] {
            Value::String(p) => p
                .parse()
                .map(Some)
                .map_err(|e| CliError::Protocol(format!("/health: {e}"))),
            _ => Ok(None),
        }
    }

    /// `DELETE /streams/{stream}`.
    pub(crate) async fn delete(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        tombstone: bool,
    ) -> Result<(), CliError> {
        let expected = match expected_json(expected) {
            Value::String(s) => s,
            other => other.to_string(),
        };
        let query = [
            ("tombstone", tombstone.to_string()),
            ("expected_revision", expected),
        ];
        self.send(
            self.request(
                reqwest::Method::DELETE,
                &format!("/streams/{}", segment(stream.as_str())),
            )
            .query(&query),
        )
        .await?;
        Ok(())
    }

    /// A live subscription over server-sent events: `path` is `/all/subscribe` or
    /// `/streams/{stream}/subscribe`, `from` its starting point (`start`, `end`, or a
    /// position or revision, inclusive). When the connection drops, it reconnects once
    /// with `Last-Event-ID`, so nothing is missed or repeated.
    pub(crate) fn subscribe(
        &self,
        path: String,
        from: String,
        filter: &EventFilter,
    ) -> BoxStream<'static, Result<RecordedEvent, CliError>> {
        let remote = self.clone();
        let mut query = vec![("from", from)];
        query.extend(filter_query(filter));
        let state = SseState {
            remote,
            path,
            query,
            last_id: None,
            body: None,
            buffer: Vec::new(),
            reconnects: 0,
        };
        futures::stream::unfold(state, |mut state| async move {
            let item = state.next_event().await;
            item.map(|item| (item, state))
        })
        .boxed()
    }
}

fn direction_name(direction: Direction) -> String {
    match direction {
        Direction::Forwards => "forwards",
        Direction::Backwards => "backwards",
    }
    .to_owned()
}

fn filter_query(filter: &EventFilter) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if let Some(c) = &filter.category {
        query.push(("category", c.clone()));
    }
    if let Some(p) = &filter.stream_prefix {
        query.push(("prefix", p.clone()));
    }
    if !filter.event_types.is_empty() {
        query.push(("type", filter.event_types.join(",")));
    }
    query
}

/// Where a server-sent-event subscription is.
struct SseState {
    remote: Remote,
    path: String,
    query: Vec<(&'static str, String)>,
    last_id: Option<String>,
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    buffer: Vec<u8>,
    reconnects: u32,
}

impl SseState {
    async fn connect(&mut self) -> Result<(), CliError> {
        let mut request = self
            .remote
            .request(reqwest::Method::GET, &self.path)
            .header("accept", "text/event-stream");
        if let Some(id) = &self.last_id {
            request = request.header("last-event-id", id.as_str());
        } else {
            request = request.query(&self.query);
        }
        if self.last_id.is_some() {
            // Filters still apply on a resume; `from` is replaced by Last-Event-ID.
            let filters: Vec<_> = self.query.iter().filter(|(k, _)| *k != "from").collect();
            request = request.query(&filters);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.remote.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(problem(status, &body));
        }
        self.body = Some(response.bytes_stream().boxed());
        Ok(())
    }

    /// The next event; `None` never (a live subscription does not end) unless the
    /// server goes away for good, which is an error.
    async fn next_event(&mut self) -> Option<Result<RecordedEvent, CliError>> {
        loop {
            if let Some(block) = take_block(&mut self.buffer) {
                match parse_block(&block) {
                    Ok(Some((id, event))) => {
                        self.last_id = id.or(self.last_id.take());
                        self.reconnects = 0;
                        return Some(event);
                    }
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e)),
                }
            }
            if self.body.is_none()
                && let Err(e) = self.connect().await
            {
                return Some(Err(e));
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            match body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(_)) | None => {
                    // Dropped: resume once after the last event received.
                    self.body = None;
                    self.buffer.clear();
                    self.reconnects += 1;
                    if self.reconnects > 1 {
                        return Some(Err(CliError::Protocol(format!(
                            "the server at {} closed the subscription",
                            self.remote.base
                        ))));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// Removes one complete event block (up to a blank line) from `buffer`.
fn take_block(buffer: &mut Vec<u8>) -> Option<String> {
    let end = buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| i + 2)?;
    let block: Vec<u8> = buffer.drain(..end).collect();
    Some(String::from_utf8_lossy(&block).into_owned())
}

/// One SSE block: `Ok(None)` for comments (heartbeats); the `id` and the event, or
/// the problem an `error` event carries.
type Parsed = Option<(Option<String>, Result<RecordedEvent, CliError>)>;

fn parse_block(block: &str) -> Result<Parsed, CliError> {
    let (mut id, mut event, mut data) = (None, None, String::new());
    for line in block.lines() {
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => event = Some(value.to_owned()),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {}
        }
    }
    if data.is_empty() {
        return Ok(None);
    }
    if event.as_deref() == Some("error") {
        return Ok(Some((
            id,
            Err(problem(reqwest::StatusCode::OK, data.as_bytes())),
        )));
    }
    let wire: WireEvent = serde_json::from_str(&data)
        .map_err(|e| CliError::Protocol(format!("an SSE event did not parse: {e}")))?;
    Ok(Some((id, wire.into_recorded())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_parse_and_heartbeats_are_skipped() {
        let mut buffer = b": heartbeat\n\nid: 7\nevent: event\ndata: {\"id\":\"00000000-0000-0000-0000-000000000001\",\"stream\":\"a-1\",\"type\":\"T\",\"revision\":0,\"position\":\"7\",\"data\":{\"x\":1},\"metadata\":{},\"recorded_at\":\"2026-01-01T00:00:00Z\"}\n\nid: 8".to_vec();
        let first = take_block(&mut buffer).unwrap();
        assert!(parse_block(&first).unwrap().is_none());
        let second = take_block(&mut buffer).unwrap();
        let (id, event) = parse_block(&second).unwrap().unwrap();
        assert_eq!(id.as_deref(), Some("7"));
        let event = event.unwrap();
        assert_eq!(event.position, Position::new(7));
        assert_eq!(&event.data[..], br#"{"x":1}"#);
        assert!(
            take_block(&mut buffer).is_none(),
            "an incomplete block waits"
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("account-1"), "account-1");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
