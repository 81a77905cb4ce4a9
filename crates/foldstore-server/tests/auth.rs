//! Bearer tokens and TLS: scopes, stream-prefix limits on every read route and on
//! subscriptions, the 401/403 answers, the browser session cookie, and an HTTPS round
//! trip with a certificate made in the test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use foldstore_core::InMemoryStore;
use foldstore_server::auth::{Scope, Tokens, token_line};
use foldstore_server::{ServerConfig, TlsConfig, app, serve, serve_tls};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tower::ServiceExt;

const ADMIN: &str = "fst_admin_token";
const READER: &str = "fst_reader_token";
const WRITER: &str = "fst_writer_token";
const ACCOUNTS: &str = "fst_accounts_token";
const TWO_PREFIXES: &str = "fst_two_prefixes";

fn tokens() -> Tokens {
    let lines = [
        token_line("admin", ADMIN, &[Scope::Admin], &[]),
        token_line("reader", READER, &[Scope::Read], &[]),
        token_line("writer", WRITER, &[Scope::Write], &[]),
        token_line(
            "accounts",
            ACCOUNTS,
            &[Scope::Read, Scope::Write],
            &["account-".to_owned()],
        ),
        token_line(
            "two",
            TWO_PREFIXES,
            &[Scope::Read],
            &["account-".to_owned(), "order-".to_owned()],
        ),
    ];
    Tokens::parse(&lines.join("\n")).unwrap()
}

fn config() -> ServerConfig {
    ServerConfig::default()
        .tokens(tokens())
        .heartbeat(Duration::from_millis(200))
}

fn router() -> axum::Router {
    app(Arc::new(InMemoryStore::new()), config())
}

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let request = match body {
        Some(b) => request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

fn one_event(event_type: &str) -> Value {
    json!({"expected_revision": "any", "events": [{"type": event_type, "data": {}}]})
}

/// Appends one event to each stream with the admin token.
async fn seed(router: &axum::Router, streams: &[&str]) {
    for s in streams {
        let (status, body) = call(
            router,
            "POST",
            &format!("/streams/{s}"),
            Some(ADMIN),
            Some(one_event("Seeded")),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
}

fn streams_of(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn missing_or_unknown_tokens_are_401_with_a_challenge() {
    let router = router();
    for (token, header_value) in [
        (None, None),
        (None, Some("Bearer not-a-token")),
        (None, Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l")),
        (Some("wrong"), None),
    ] {
        let mut request = Request::builder().uri("/streams/account-1");
        if let Some(t) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(v) = header_value {
            request = request.header(header::AUTHORIZATION, v);
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert!(
            response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let body: Value = serde_json::from_slice(
            &axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(body["code"], "unauthorized");
        assert_eq!(body["status"], 401);
    }
    // Public: health needs no token.
    let (status, _) = call(&router, "GET", "/health", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn tokens_in_the_url_are_refused() {
    let router = router();
    for uri in ["/all?token=fst_admin_token", "/health?access_token=x"] {
        let (status, body) = call(&router, "GET", uri, None, None).await;
        assert_eq!(status, 400, "{uri}");
        assert_eq!(body["code"], "token_in_url");
    }
}

#[tokio::test]
async fn scopes_decide_what_a_token_may_do() {
    let router = router();
    let (status, body) = call(
        &router,
        "POST",
        "/streams/a-1",
        Some(READER),
        Some(one_event("E")),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (403, Some("insufficient_scope"))
    );
    let (status, _) = call(
        &router,
        "POST",
        "/streams/a-1",
        Some(WRITER),
        Some(one_event("E")),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = call(&router, "GET", "/streams/a-1", Some(WRITER), None).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (403, Some("insufficient_scope"))
    );
    let (status, body) = call(&router, "GET", "/streams/a-1", Some(READER), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["events"].as_array().unwrap().len(), 1);

    // Deletes and metadata writes need admin.
    for token in [READER, WRITER, ACCOUNTS] {
        let (status, _) = call(&router, "DELETE", "/streams/a-1", Some(token), None).await;
        assert_eq!(status, 403);
        let (status, _) = call(
            &router,
            "PUT",
            "/streams/a-1/metadata",
            Some(token),
            Some(json!({"max_count": 1})),
        )
        .await;
        assert_eq!(status, 403);
    }
    let (status, _) = call(&router, "GET", "/streams/a-1/metadata", Some(READER), None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&router, "DELETE", "/streams/a-1", Some(ADMIN), None).await;
    assert_eq!(status, 204);
    // An unknown route still needs a token.
    let (status, _) = call(&router, "GET", "/nothing-here", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = call(&router, "GET", "/nothing-here", Some(READER), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn prefix_limits_apply_to_every_read_route() {
    let router = router();
    seed(
        &router,
        &[
            "account-1",
            "order-1",
            "account-2",
            "account",
            "accountant-1",
        ],
    )
    .await;

    // One stream.
    let (status, _) = call(&router, "GET", "/streams/account-1", Some(ACCOUNTS), None).await;
    assert_eq!(status, 200);
    for uri in [
        "/streams/order-1",
        "/streams/order-1/metadata",
        "/streams/order-1/subscribe",
        "/streams/account",
    ] {
        let (status, body) = call(&router, "GET", uri, Some(ACCOUNTS), None).await;
        assert_eq!(
            (status.as_u16(), body["code"].as_str()),
            (403, Some("stream_forbidden")),
            "{uri}"
        );
    }
    let (status, _) = call(
        &router,
        "POST",
        "/streams/order-2",
        Some(ACCOUNTS),
        Some(one_event("E")),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &router,
        "POST",
        "/streams/account-3",
        Some(ACCOUNTS),
        Some(one_event("E")),
    )
    .await;
    assert_eq!(status, 200);

    // $all: the prefix filter is added, narrowed, or refused.
    let (status, page) = call(&router, "GET", "/all", Some(ACCOUNTS), None).await;
    assert_eq!(status, 200);
    assert_eq!(streams_of(&page), ["account-1", "account-2", "account-3"]);
    let (_, page) = call(
        &router,
        "GET",
        "/all?prefix=account-2",
        Some(ACCOUNTS),
        None,
    )
    .await;
    assert_eq!(streams_of(&page), ["account-2"]);
    let (_, page) = call(&router, "GET", "/all?prefix=a", Some(ACCOUNTS), None).await;
    assert_eq!(streams_of(&page), ["account-1", "account-2", "account-3"]);
    let (status, _) = call(&router, "GET", "/all?prefix=order-", Some(ACCOUNTS), None).await;
    assert_eq!(status, 403);
    let (_, page) = call(
        &router,
        "GET",
        "/all?direction=backwards&limit=1",
        Some(ACCOUNTS),
        None,
    )
    .await;
    assert_eq!(streams_of(&page), ["account-3"]);

    // Several prefixes: the client picks one.
    let (status, body) = call(&router, "GET", "/all", Some(TWO_PREFIXES), None).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (403, Some("stream_forbidden"))
    );
    let (_, page) = call(
        &router,
        "GET",
        "/all?prefix=order-",
        Some(TWO_PREFIXES),
        None,
    )
    .await;
    assert_eq!(streams_of(&page), ["order-1"]);

    // Categories: narrowed to the prefix (the stream named `account` stays hidden).
    let (status, page) = call(&router, "GET", "/categories/account", Some(ACCOUNTS), None).await;
    assert_eq!(status, 200);
    assert_eq!(streams_of(&page), ["account-1", "account-2", "account-3"]);
    let (_, page) = call(&router, "GET", "/categories/account", Some(ADMIN), None).await;
    assert_eq!(
        streams_of(&page),
        ["account-1", "account-2", "account", "account-3"]
    );
    let (status, _) = call(&router, "GET", "/categories/order", Some(ACCOUNTS), None).await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &router,
        "GET",
        "/categories/account?group_member=0&group_size=2",
        Some(ACCOUNTS),
        None,
    )
    .await;
    assert_eq!(status, 403);
    // /metrics covers every stream: admin without prefixes only.
    let (status, _) = call(&router, "GET", "/metrics", Some(ACCOUNTS), None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn browsers_log_in_with_a_session_cookie() {
    let router = router();
    let (status, body) = call(
        &router,
        "POST",
        "/auth/session",
        None,
        Some(json!({"token": "nope"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (401, Some("unauthorized"))
    );

    let request = Request::builder()
        .method("POST")
        .uri("/auth/session")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"token": READER}).to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 204);
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();

    let request = Request::builder()
        .uri("/all")
        .header(header::COOKIE, format!("theme=dark; {pair}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(router.clone().oneshot(request).await.unwrap().status(), 200);
}

/// A running server, stopped when dropped.
struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    async fn start(tls: Option<TlsConfig>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let store = Arc::new(InMemoryStore::new());
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = match tls {
            Some(tls) => tokio::spawn(serve_tls(listener, tls, store, config(), shutdown)),
            None => tokio::spawn(serve(listener, store, config(), shutdown)),
        };
        Self {
            addr,
            stop: Some(stop),
            task,
        }
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

/// The `data:` lines of SSE events, until `count` events arrived.
async fn sse_streams(response: reqwest::Response, count: usize) -> Vec<String> {
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut streams = Vec::new();
    while streams.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an SSE event within 10 s")
            .unwrap()
            .unwrap();
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    let event: Value = serde_json::from_str(data.trim()).unwrap();
                    streams.push(event["stream"].as_str().unwrap().to_owned());
                }
            }
        }
    }
    streams
}

#[tokio::test]
async fn subscriptions_see_only_the_tokens_streams() {
    let server = TestServer::start(None).await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://{}{p}", server.addr);
    let append = |stream: &'static str| {
        let client = client.clone();
        let url = url(&format!("/streams/{stream}"));
        async move {
            let r = client
                .post(url)
                .bearer_auth(ADMIN)
                .json(&one_event("E"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    append("order-0").await;
    append("account-1").await;

    let unauthenticated = client.get(url("/all/subscribe")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let other = client
        .get(url("/streams/order-0/subscribe"))
        .bearer_auth(ACCOUNTS)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);

    let all = client
        .get(url("/all/subscribe"))
        .bearer_auth(ACCOUNTS)
        .send()
        .await
        .unwrap();
    let category = client
        .get(url("/all/subscribe?category=order"))
        .bearer_auth(ACCOUNTS)
        .send()
        .await
        .unwrap();
    // A category outside the token's prefix gets the prefix added: nothing matches both.
    assert_eq!(category.status(), 200);
    append("order-2").await;
    append("account-3").await;
    append("order-4").await;
    append("account-5").await;
    assert_eq!(
        sse_streams(all, 3).await,
        ["account-1", "account-3", "account-5"]
    );
    let stream = client
        .get(url("/streams/account-1/subscribe"))
        .bearer_auth(ACCOUNTS)
        .send()
        .await
        .unwrap();
    assert_eq!(sse_streams(stream, 1).await, ["account-1"]);
}

#[tokio::test]
async fn https_round_trip_with_a_self_signed_certificate() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let tls = TlsConfig::from_pem_files(&cert_path, &key_path).unwrap();
    let server = TestServer::start(Some(tls)).await;

    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .resolve("localhost", server.addr)
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", server.addr.port());
    let r = client
        .post(format!("{base}/streams/account-1"))
        .bearer_auth(ACCOUNTS)
        .json(&one_event("Opened"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page: Value = client
        .get(format!("{base}/streams/account-1"))
        .bearer_auth(ACCOUNTS)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"][0]["type"], "Opened");
    let r = client.get(format!("{base}/all")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // A client that does not trust the certificate fails the handshake.
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", server.addr)
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(format!("{base}/health"))
            .send()
            .await
            .is_err()
    );
    // Plain HTTP on the TLS port gets no answer.
    assert!(
        reqwest::Client::new()
            .get(format!("http://{}/health", server.addr))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_err()
    );
    // Bad files are told apart.
    std::fs::write(&key_path, "not a key").unwrap();
    let err = TlsConfig::from_pem_files(&cert_path, &key_path).unwrap_err();
    assert!(err.to_string().contains("private key"), "{err}");
}
