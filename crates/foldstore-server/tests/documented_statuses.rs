//! The OpenAPI document describes the server: every status the server answers for an
//! operation is documented for that operation, and every error answer is a problem
//! (`application/problem+json` with a `code`).
//!
//! The test walks the operations of the served `/openapi.json` (so a new route is
//! covered without editing this file) and sends each one hostile and edge variants
//! against a real server with tokens configured and seeded streams: unknown,
//! duplicated and invalid query parameters, a token in the URL, bad path segments
//! (`%24x`, invalid UTF-8, over-long names), missing, malformed, wrongly typed and
//! oversized bodies, a body that disagrees with the query, no token, an unknown
//! token, a malformed `Authorization` header, a token without the scope, a token
//! outside its stream prefixes, the session cookie, `HEAD`, and duplicated headers.
//! Server-sent-event answers are read only up to their head.
//!
//! A method a path does not document (`OPTIONS`, `PATCH`, ...) must be refused with a
//! 4xx problem. The test also checks what the document says about security (a
//! protected operation answers 401 without a token, a public one does not) and that a
//! duplicated query parameter is refused with 400 `invalid_query` naming it, on every
//! operation that takes query parameters.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::TestServer;
use foldstore_core::InMemoryStore;
use foldstore_core::persistent::PersistentSubscriptions;
use foldstore_server::ServerConfig;
use foldstore_server::auth::{Scope, Tokens, token_line};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HeaderMap, HeaderValue};
use serde_json::{Value, json};

const ADMIN: &str = "fst_walk_admin";
const READER: &str = "fst_walk_reader";
const WRITER: &str = "fst_walk_writer";
/// Read and write, limited to streams starting with `acct-`.
const LIMITED: &str = "fst_walk_limited";
/// Admin, limited to streams starting with `acct-`.
const LIMITED_ADMIN: &str = "fst_walk_limited_admin";

/// The server's body limit here, so that an oversized body is cheap to send.
const BODY_LIMIT: usize = 16 * 1024;

fn config() -> ServerConfig {
    let acct = vec!["acct-".to_owned()];
    let lines = [
        token_line("admin", ADMIN, &[Scope::Admin], &[]),
        token_line("reader", READER, &[Scope::Read], &[]),
        token_line("writer", WRITER, &[Scope::Write], &[]),
        token_line("limited", LIMITED, &[Scope::Read, Scope::Write], &acct),
        token_line("limited-admin", LIMITED_ADMIN, &[Scope::Admin], &acct),
    ];
    ServerConfig::default()
        .tokens(Tokens::parse(&lines.join("\n")).unwrap())
        .body_limit(BODY_LIMIT)
}

/// A server with streams inside and outside the limited tokens' prefix, a deleted
/// stream and a tombstoned one.
async fn seeded_server() -> TestServer {
    let store = Arc::new(InMemoryStore::new());
    let persistent = Arc::new(PersistentSubscriptions::open(store.clone()).await.unwrap());
    let server = TestServer::start(store, config().persistent(persistent)).await;
    let client = reqwest::Client::new();
    for stream in ["acct-1", "other-1", "deleted-1", "gone-1"] {
        let response = client
            .post(server.url(&format!("/streams/{stream}")))
            .bearer_auth(ADMIN)
            .json(&json!({"expected_revision": "any", "events": [
                {"type": "Seeded", "data": {"n": 1}},
                {"type": "Seeded", "data": {"n": 2}}
            ]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "seeding {stream}");
    }
    for (stream, query) in [("deleted-1", ""), ("gone-1", "?tombstone=true")] {
        let response = client
            .delete(server.url(&format!("/streams/{stream}{query}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "deleting {stream}");
    }
    // Persistent subscription groups named like the first good path value, inside
    // and outside the limited tokens' prefix and on `$all`, one with a parked event.
    for stream in ["acct-1", "other-1", "%24all"] {
        let response = client
            .put(server.url(&format!("/subscriptions/{stream}/acct-1")))
            .bearer_auth(ADMIN)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "creating a group on {stream}");
    }
    let polled: Value = client
        .post(server.url("/subscriptions/acct-1/acct-1/messages?count=1&wait_ms=5000"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = polled["messages"][0]["key"].clone();
    let response = client
        .post(server.url("/subscriptions/acct-1/acct-1/nack"))
        .bearer_auth(ADMIN)
        .json(&json!({"keys": [key], "action": "park"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204, "parking an event");
    server
}

/// One operation of the document.
struct Operation {
    method: Method,
    path: String,
    doc: Value,
}

impl Operation {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn documented(&self, status: u16) -> bool {
        let responses = &self.doc["responses"];
        let range = format!("{}XX", status / 100);
        responses.get(status.to_string()).is_some()
            || responses.get(&range).is_some()
            || responses.get("default").is_some()
    }

    /// Whether the document says the operation needs a token.
    fn protected(&self, document: &Value) -> bool {
        let security = self
            .doc
            .get("security")
            .or_else(|| document.get("security"));
        match security.and_then(Value::as_array) {
            None => false,
            Some(requirements) => {
                !requirements.is_empty()
                    && requirements
                        .iter()
                        .all(|r| r.as_object().is_some_and(|o| !o.is_empty()))
            }
        }
    }

    fn parameters(&self, location: &str) -> Vec<String> {
        self.doc["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == location)
                    .map(|p| p["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The documented request body's media types.
    fn body_types(&self) -> Vec<String> {
        self.doc["requestBody"]["content"]
            .as_object()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A body the operation accepts, when it takes one: picked by the name of its
    /// JSON schema, `{}` for a schema this test does not know.
    fn sample_body(&self) -> Option<(String, String)> {
        let types = self.body_types();
        let media = types
            .iter()
            .find(|t| t.as_str() == "application/json")
            .or(types.first())?;
        let schema = self.doc["requestBody"]["content"][media]["schema"]["$ref"]
            .as_str()
            .unwrap_or("");
        let body = match schema.rsplit('/').next().unwrap_or("") {
            "AppendBody" => {
                json!({"expected_revision": "any", "events": [{"type": "Walked", "data": {}}]})
            }
            "SessionBody" => json!({"token": ADMIN}),
            "AckBody" => json!({"keys": ["1"]}),
            "NackBody" => json!({"keys": ["1"], "action": "retry"}),
            _ => json!({}),
        };
        Some((media.clone(), body.to_string()))
    }
}

fn operations(document: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, doc) in item.as_object().unwrap() {
            const METHODS: [&str; 8] = [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ];
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            out.push(Operation {
                method,
                path: path.clone(),
                doc: doc.clone(),
            });
        }
    }
    out
}

/// Values for a path parameter: good ones first, then hostile ones.
fn path_values(name: &str) -> Vec<String> {
    let mut values: Vec<String> = match name {
        "stream" => [
            "acct-1",
            "other-1",
            "deleted-1",
            "gone-1",
            "acct-missing",
            "%24all",
        ]
        .map(str::to_owned)
        .to_vec(),
        "group" => ["acct-1", "missing"].map(str::to_owned).to_vec(),
        "category" => ["acct", "other", "bad-category"]
            .map(str::to_owned)
            .to_vec(),
        "file" => ["app.js", "nope.txt"].map(str::to_owned).to_vec(),
        _ => vec!["acct-1".to_owned()],
    };
    values.extend(
        ["%24x", "%FF", "a%2Fb", "%20", "acct-%00"]
            .map(str::to_owned)
            .into_iter()
            .chain([format!("acct-{}", "x".repeat(200)), "y".repeat(10_000)]),
    );
    values
}

/// A plausible value of a query parameter.
fn query_value(name: &str) -> &'static str {
    match name {
        "from" => "0",
        "limit" => "1",
        "direction" => "backwards",
        "expected_revision" => "any",
        "tombstone" => "false",
        "category" => "acct",
        "type" => "Seeded",
        "prefix" => "acct-",
        "after" => "acct-0",
        "group_member" => "0",
        "group_size" => "1",
        "count" => "2",
        "wait_ms" => "1",
        "buffer_size" => "1",
        _ => "1",
    }
}

/// A plausible value of a header parameter.
fn header_value(name: &str) -> &'static str {
    match name.to_ascii_lowercase().as_str() {
        "last-event-id" => "0",
        _ => "1",
    }
}

/// One request of the walk.
#[derive(Clone)]
struct Variant {
    label: String,
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Option<(Option<String>, Vec<u8>)>,
}

impl Variant {
    fn new(op: &Operation, path: &str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {ADMIN}")).unwrap(),
        );
        Variant {
            label: "baseline".to_owned(),
            method: op.method.clone(),
            path: path.to_owned(),
            query: String::new(),
            headers,
            body: op
                .sample_body()
                .map(|(media, body)| (Some(media), body.into_bytes())),
        }
    }

    fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    fn token(mut self, token: Option<&str>) -> Self {
        self.headers.remove(AUTHORIZATION);
        if let Some(t) = token {
            self.headers.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
        }
        self
    }

    fn query(mut self, query: impl Into<String>) -> Self {
        self.query = query.into();
        self
    }

    fn body(mut self, media: Option<&str>, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = Some((media.map(str::to_owned), bytes.into()));
        self
    }
}

/// What came back.
struct Answer {
    status: u16,
    content_type: String,
    body: Option<Value>,
}

async fn send(client: &reqwest::Client, server: &TestServer, v: &Variant) -> Answer {
    let url = if v.query.is_empty() {
        server.url(&v.path)
    } else {
        server.url(&format!("{}?{}", v.path, v.query))
    };
    let mut request = client
        .request(v.method.clone(), url)
        .headers(v.headers.clone());
    if let Some((media, bytes)) = &v.body {
        if let Some(media) = media {
            request = request.header(CONTENT_TYPE, media);
        }
        request = request.body(bytes.clone());
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{} {} ({}): {e}", v.method, v.path, v.label));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // A live subscription never ends: its head is enough.
    let body = if content_type.starts_with("text/event-stream") || v.method == Method::HEAD {
        None
    } else {
        let bytes = response.bytes().await.unwrap();
        Some(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    };
    Answer {
        status,
        content_type,
        body,
    }
}

/// The variants of one operation, each changing one thing from a baseline that an
/// admin sends with a good body.
fn variants(op: &Operation) -> Vec<Variant> {
    let path_params = op.parameters("path");
    let query_params = op.parameters("query");
    let header_params = op.parameters("header");
    // Every combination of path values would be large; each parameter takes each of
    // its values with the others at their first (good) value.
    let mut paths = Vec::new();
    let first = |name: &String| path_values(name).remove(0);
    let fill = |chosen: &BTreeMap<&String, String>| {
        let mut path = op.path.clone();
        for name in &path_params {
            let value = chosen.get(name).cloned().unwrap_or_else(|| first(name));
            path = path.replace(&format!("{{{name}}}"), &value);
        }
        path
    };
    paths.push(fill(&BTreeMap::new()));
    for name in &path_params {
        for value in path_values(name).into_iter().skip(1) {
            paths.push(fill(&BTreeMap::from([(name, value)])));
        }
    }
    let tokens: [(&str, Option<&str>); 6] = [
        ("admin", Some(ADMIN)),
        ("no token", None),
        ("unknown token", Some("fst_not_a_token")),
        ("read-only token", Some(READER)),
        ("write-only token", Some(WRITER)),
        ("prefix-limited token", Some(LIMITED)),
    ];

    let mut out = Vec::new();
    for path in &paths {
        let base = Variant::new(op, path);
        for (label, token) in tokens {
            out.push(
                base.clone()
                    .token(token)
                    .label(format!("{path} as {label}")),
            );
        }
        out.push(
            base.clone()
                .token(Some(LIMITED_ADMIN))
                .label(format!("{path} as prefix-limited admin")),
        );
    }
    let base = Variant::new(op, &paths[0]);
    let mut malformed = base.clone().label("Authorization: Basic");
    malformed
        .headers
        .insert(AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
    out.push(malformed);
    let mut cookie = base.clone().token(None).label("session cookie");
    cookie.headers.insert(
        COOKIE,
        HeaderValue::from_str(&format!("foldstore_session={ADMIN}")).unwrap(),
    );
    out.push(cookie);
    let mut bad_cookie = base.clone().token(None).label("unknown session cookie");
    bad_cookie.headers.insert(
        COOKIE,
        HeaderValue::from_static("foldstore_session=fst_nope"),
    );
    out.push(bad_cookie);

    // The query.
    out.push(base.clone().query("foo=1").label("unknown query parameter"));
    out.push(base.clone().query("token=x").label("token in the URL"));
    out.push(base.clone().query("&&=&").label("empty query pairs"));
    out.push(base.clone().query("%FF=1").label("invalid UTF-8 query key"));
    for name in &query_params {
        let value = query_value(name);
        out.push(base.clone().query(format!("{name}={value}")).label(name));
        out.push(
            base.clone()
                .query(format!("{name}=not-a-value%FF"))
                .label(format!("invalid {name}")),
        );
        out.push(
            base.clone()
                .query(format!("{name}=18446744073709551616"))
                .label(format!("overflowing {name}")),
        );
        out.push(
            base.clone()
                .query(format!("{name}={value}&{name}={value}"))
                .label(format!("duplicated {name}")),
        );
        out.push(
            base.clone()
                .query(format!("{name}=0"))
                .label(format!("{name}=0")),
        );
    }

    // Headers.
    for name in &header_params {
        for value in [header_value(name), "not-a-value", "18446744073709551615"] {
            let mut v = base.clone().label(format!("{name}: {value}"));
            v.headers.insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
            out.push(v);
        }
        let mut twice = base.clone().label(format!("duplicated {name}"));
        let header = reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap();
        twice
            .headers
            .append(header.clone(), HeaderValue::from_static("0"));
        twice.headers.append(header, HeaderValue::from_static("1"));
        out.push(twice);
    }

    // Bodies.
    let json = Some("application/json");
    let mut bodies: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        ("no content type", None, b"{}".to_vec()),
        ("empty JSON body", json, Vec::new()),
        ("invalid JSON", json, b"{".to_vec()),
        ("a JSON array", json, b"[]".to_vec()),
        (
            "an unknown field",
            json,
            br#"{"unknown_field": 1}"#.to_vec(),
        ),
        ("text/plain", Some("text/plain"), b"{}".to_vec()),
        ("invalid UTF-8", json, vec![b'"', 0xFF, b'"']),
        (
            "an oversized body",
            json,
            format!("\"{}\"", "x".repeat(2 * BODY_LIMIT)).into_bytes(),
        ),
    ];
    for media in op.body_types() {
        let media: &'static str = Box::leak(media.into_boxed_str());
        bodies.push(("an empty array", Some(media), b"[]".to_vec()));
        bodies.push(("an empty object", Some(media), b"{}".to_vec()));
        bodies.push(("one odd item", Some(media), b"[{}]".to_vec()));
    }
    for (label, media, bytes) in bodies {
        out.push(base.clone().body(media, bytes).label(label));
    }
    let mut no_body = base.clone().label("no body");
    no_body.body = None;
    out.push(no_body);
    if op.doc.get("requestBody").is_some() {
        // A body that disagrees with the query (or agrees with it).
        for name in &query_params {
            for value in ["any", "0", "7"] {
                out.push(
                    base.clone()
                        .query(format!("{name}={value}"))
                        .label(format!("a body and {name}={value}")),
                );
            }
        }
        let mut doubled = base.clone().label("two content types");
        doubled
            .headers
            .append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        out.push(doubled);
    }

    // Methods the document derives from this one.
    if op.method == Method::GET {
        for v in out.clone().into_iter().take(paths.len() * 7) {
            let mut head = v.clone();
            head.method = Method::HEAD;
            head.label = format!("HEAD {}", v.label);
            out.push(head);
        }
    }
    out
}

/// A client that opens a connection per request: the server may close one whose
/// request body it did not read (an oversized body, a body on a GET), and a pooled
/// connection would then fail the next request.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_every_operation_is_documented_and_every_error_is_a_problem() {
    let client = client();
    let server = seeded_server().await;
    let document: Value = client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    drop(server);
    let operations = operations(&document);
    assert!(operations.len() >= 18, "{} operations", operations.len());

    let mut failures = Vec::new();
    let mut sent = 0;
    let mut seen: BTreeMap<String, std::collections::BTreeSet<u16>> = BTreeMap::new();
    for op in &operations {
        // A fresh, seeded server per operation: deletes do not leak into the next.
        let server = seeded_server().await;
        let protected = op.protected(&document);
        for v in variants(op) {
            let answer = send(&client, &server, &v).await;
            sent += 1;
            seen.entry(op.name()).or_default().insert(answer.status);
            let what = format!("{} ({})", op.name(), v.label);
            if !op.documented(answer.status) {
                failures.push(format!("{what}: {} is not documented", answer.status));
            }
            if answer.status >= 400 {
                if !answer.content_type.starts_with("application/problem+json") {
                    failures.push(format!(
                        "{what}: {} answered with content type {:?}",
                        answer.status, answer.content_type
                    ));
                } else if let Some(body) = &answer.body
                    && !body["code"].is_string()
                {
                    failures.push(format!("{what}: problem without a code: {body}"));
                }
            }
            let anonymous =
                !v.headers.contains_key(AUTHORIZATION) && !v.headers.contains_key(COOKIE);
            if anonymous && v.label.contains("no token") {
                match (protected, answer.status) {
                    (true, s) if s != 401 => failures.push(format!(
                        "{what}: the document says it needs a token, but it answered {s} without one"
                    )),
                    (false, 401) => failures.push(format!(
                        "{what}: the document says it is public, but it answered 401"
                    )),
                    _ => {}
                }
            }
        }
    }
    // A method a path does not document is refused as a problem, not served.
    let server = seeded_server().await;
    for path in document["paths"].as_object().unwrap().keys() {
        let path = path
            .replace("{stream}", "acct-1")
            .replace("{category}", "acct")
            .replace("{group}", "acct-1")
            .replace("{file}", "app.js");
        let documented = &document["paths"][&path];
        for method in [Method::OPTIONS, Method::PATCH, Method::PUT, Method::TRACE] {
            if documented.get(method.as_str().to_lowercase()).is_some() {
                continue;
            }
            for token in [None, Some(ADMIN)] {
                let v = Variant {
                    label: format!("undocumented method, token: {}", token.is_some()),
                    method: method.clone(),
                    path: path.clone(),
                    query: String::new(),
                    headers: Variant::new(&operations[0], &path).token(token).headers,
                    body: None,
                };
                let answer = send(&client, &server, &v).await;
                sent += 1;
                let problem = answer.content_type.starts_with("application/problem+json")
                    && answer.body.as_ref().is_some_and(|b| b["code"].is_string());
                if !(400..500).contains(&answer.status) || !problem {
                    failures.push(format!(
                        "{method} {path} ({}): {} {:?}",
                        v.label, answer.status, answer.content_type
                    ));
                }
            }
        }
    }
    drop(server);

    for (op, statuses) in &seen {
        eprintln!("{op}: {statuses:?}");
    }
    eprintln!(
        "{sent} requests over {} operations, {} failures",
        operations.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Item: a repeated query parameter is ambiguous (first or last wins?), so every
/// operation that takes query parameters refuses it with 400 `invalid_query` naming
/// the parameter, whatever its value.
#[tokio::test]
async fn a_duplicated_query_parameter_is_refused_by_every_operation() {
    let client = client();
    let server = seeded_server().await;
    let document: Value = client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for op in operations(&document) {
        for name in op.parameters("query") {
            let value = query_value(&name);
            let mut path = op.path.clone();
            for p in op.parameters("path") {
                path = path.replace(&format!("{{{p}}}"), &path_values(&p).remove(0));
            }
            let v = Variant::new(&op, &path).query(format!("{name}={value}&{name}={value}"));
            let answer = send(&client, &server, &v).await;
            checked += 1;
            let body = answer.body.unwrap_or(Value::Null);
            let detail = body["detail"].as_str().unwrap_or("");
            if answer.status != 400 || body["code"] != "invalid_query" || !detail.contains(&name) {
                failures.push(format!(
                    "{} with {name} twice: {} {body}",
                    op.name(),
                    answer.status
                ));
            }
        }
    }
    assert!(checked >= 10, "only {checked} query parameters");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
