//! # foldstore-server
//!
//! foldstore's HTTP API over any [`EventStore`]: JSON appends and reads, stream
//! deletion and metadata, live subscriptions as server-sent events, and persistent
//! subscriptions (competing consumers that poll with leases and ack by key; see
//! [`ServerConfig::persistent`](ServerConfig#method.persistent)).
//!
//! [`app`] builds the [`Router`]; [`serve`] runs it on a listener until a shutdown
//! signal, ending live subscriptions so that the shutdown completes.
//!
//! ```
//! use std::sync::Arc;
//! use foldstore_core::InMemoryStore;
//! use foldstore_server::{ServerConfig, app};
//!
//! let router = app(Arc::new(InMemoryStore::new()), ServerConfig::default());
//! # let _ = router;
//! ```
//!
//! Every error is an RFC 9457 problem (`application/problem+json`) with a stable
//! `code`; see [`error`].
//!
//! ## Logs
//!
//! The router logs each request through `tracing` once its response head is ready:
//! refused (4xx) at `info`, failed (5xx) at `error`, slower than
//! [`ServerConfig::slow_request`] at `warn`, any other at `debug`; with the method, the
//! route template (`/streams/{stream}`), the status, the problem's `code`, the token's
//! name and the duration, never a token, a query string, a header or a body. The
//! `foldstore serve` command installs the subscriber (docs/operations.md in the
//! repository lists every line).

pub mod auth;
mod catalog;
mod cloudevents;
pub mod error;
mod extract;
mod fanout;
mod grpc_mount;
mod handlers;
pub mod live_view;
mod metrics;
mod openapi;
mod page_json;
mod parse_errors;
mod persistent;
mod quickack;
mod reach;
mod request_log;
mod routes;
mod serving;
mod sse;
mod stall;
#[cfg(feature = "testkit")]
pub mod testkit;
mod tls;
mod ui;
mod wire;

pub use openapi::openapi;
pub use tls::{TlsConfig, TlsError, serve_tls};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use foldstore_core::EventStore;
use foldstore_core::persistent::PersistentSubscriptions;
use tokio::sync::watch;

/// How the server behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The largest request body, in bytes; larger bodies get 413 `body_too_large`.
    pub body_limit: usize,
    /// How often an idle live subscription gets a heartbeat comment.
    pub heartbeat: Duration,
    /// How many events a live subscription holds for a client that is not reading.
    pub sse_buffer: usize,
    /// How many bytes of event data a live subscription holds for a client that is not
    /// reading (at least one event is always held, however large).
    pub sse_buffer_bytes: usize,
    /// How long a live subscription waits for a client that does not read while its
    /// buffer is full before it sends an `error` event (`subscriber_too_slow`) and ends.
    pub slow_client_timeout: Duration,
    /// How long a write to a client may make no progress (the client takes no bytes)
    /// before the connection is closed.
    pub write_timeout: Duration,
    /// The kernel send buffer of each accepted connection (`SO_SNDBUF`), in bytes: what
    /// the kernel holds for a client that does not read. `None` keeps the kernel's
    /// automatic sizing (up to 4 MiB per connection by default on Linux).
    pub send_buffer: Option<usize>,
    /// The accepted bearer tokens; `None` (the default) needs none. See [`auth`].
    pub tokens: Option<Arc<auth::Tokens>>,
    /// Requests whose response head takes longer than this are logged at `warn`
    /// (`None`: never). Every request is logged at `debug`, refused and failed ones at
    /// `info` and `error`: see the crate docs' "Logs". Default: 1 s.
    pub slow_request: Option<Duration>,
    /// A gRPC router served on the same port: requests whose `content-type` starts
    /// with `application/grpc` go to it, all others to the API. It does its own
    /// authentication (the tokens above do not guard it), and its streaming responses
    /// end with `Unavailable` when the server shuts down. `None` (the default): none.
    pub grpc: Option<Router>,
    /// The persistent subscriptions served under `/subscriptions` (see
    /// [`ServerConfig::persistent`](ServerConfig#method.persistent)). `None` (the
    /// default): those routes answer 404 `persistent_subscriptions_disabled`.
    pub persistent: Option<Arc<PersistentSubscriptions>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            body_limit: 32 * 1024 * 1024,
            heartbeat: Duration::from_secs(15),
            sse_buffer: 256,
            sse_buffer_bytes: 16 * 1024,
            slow_client_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            send_buffer: Some(128 * 1024),
            tokens: None,
            slow_request: Some(Duration::from_secs(1)),
            grpc: None,
            persistent: None,
        }
    }
}

impl ServerConfig {
    /// Sets the body limit.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Requires one of `tokens` on every request but the public ones (see [`auth`]).
    pub fn tokens(mut self, tokens: auth::Tokens) -> Self {
        self.tokens = Some(Arc::new(tokens));
        self
    }

    /// Serves `grpc` (for instance `foldstore_grpc::routes`) beside the API on the same
    /// port; see [`ServerConfig::grpc`](ServerConfig#structfield.grpc).
    pub fn grpc(mut self, grpc: Router) -> Self {
        self.grpc = Some(grpc);
        self
    }

    /// Serves `persistent` (competing consumers) under `/subscriptions`: groups are
    /// managed, polled and acked over HTTP. Open it over the same store as the server
    /// (and keep one per store and process: each serves every group it finds); call
    /// its `shutdown` after the server stopped, so that every group's checkpoint is
    /// written.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use foldstore_core::InMemoryStore;
    /// use foldstore_core::persistent::PersistentSubscriptions;
    /// use foldstore_server::{ServerConfig, app};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let store = Arc::new(InMemoryStore::new());
    /// let persistent = Arc::new(PersistentSubscriptions::open(store.clone()).await?);
    /// let router = app(store, ServerConfig::default().persistent(persistent.clone()));
    /// # drop(router);
    /// // ... serve the router; once it stopped:
    /// persistent.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn persistent(mut self, persistent: Arc<PersistentSubscriptions>) -> Self {
        self.persistent = Some(persistent);
        self
    }

    /// Sets the heartbeat interval of live subscriptions.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Sets how many events a live subscription holds for a client (at least 1).
    pub fn sse_buffer(mut self, events: usize) -> Self {
        self.sse_buffer = events.max(1);
        self
    }

    /// Sets how long a live subscription waits on a client that does not read.
    pub fn slow_client_timeout(mut self, timeout: Duration) -> Self {
        self.slow_client_timeout = timeout;
        self
    }

    /// Sets how many bytes of events a live subscription holds for a client.
    pub fn sse_buffer_bytes(mut self, bytes: usize) -> Self {
        self.sse_buffer_bytes = bytes;
        self
    }

    /// Sets how long a write may make no progress before the connection is closed.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets the kernel send buffer of accepted connections (`None`: the kernel's own).
    pub fn send_buffer(mut self, bytes: Option<usize>) -> Self {
        self.send_buffer = bytes;
        self
    }

    /// Sets the duration over which a request is logged as slow (`None`: never).
    pub fn slow_request(mut self, threshold: Option<Duration>) -> Self {
        self.slow_request = threshold;
        self
    }
}

/// What every handler sees.
#[derive(Clone)]
struct AppState {
    store: Arc<dyn EventStore>,
    config: ServerConfig,
    /// Set to `true` when the server shuts down: live subscriptions end on it.
    shutdown: Arc<watch::Sender<bool>>,
    /// Counters and histograms served at `/metrics`.
    metrics: Arc<metrics::Metrics>,
    /// The stream count shown on the dashboard, cached (see `catalog`).
    catalog: Arc<catalog::Catalog>,
    /// The events HTTP pollers of persistent subscriptions hold (see `persistent`).
    leases: Arc<persistent::Leases>,
}

/// The HTTP API over `store`.
///
/// Routes: `POST`/`GET`/`DELETE /streams/{stream}`, `GET`/`PUT
/// /streams/{stream}/metadata`, `GET /streams/{stream}/subscribe`, `GET /all`, `GET
/// /all/subscribe`, `GET /categories/{category}`, the persistent subscriptions under
/// `/subscriptions` (with [`ServerConfig::persistent`]), `GET /health`, `GET
/// /metrics`, `GET /api/stats`, `GET /api/streams`, `GET /openapi.json` (every route
/// is in [`openapi()`]), and the web UI at `/`.
pub fn app(store: Arc<dyn EventStore>, config: ServerConfig) -> Router {
    build(store, config, false).0
}

/// The router and the shutdown switch of its live subscriptions; `tls` marks session
/// cookies `Secure`.
fn build(
    store: Arc<dyn EventStore>,
    config: ServerConfig,
    tls: bool,
) -> (Router, Arc<watch::Sender<bool>>) {
    let tokens = config.tokens.clone();
    let grpc = config.grpc.clone();
    let shutdown = Arc::new(watch::Sender::new(false));
    // `$all` subscriptions share one live tail instead of a store read each per commit.
    let store = fanout::LiveTail::wrap(store, shutdown.subscribe());
    let body_limit = config.body_limit;
    let (routes, doc) = routes::api().split_for_parts();
    // `/auth/session` is routed by the auth layer, outside the API's router.
    let templates = doc.paths.paths.keys().map(String::as_str);
    let request_log = Arc::new(request_log::RequestLog::new(
        templates.chain(["/auth/session"]),
        config.slow_request,
    ));
    let state = AppState {
        store,
        config,
        shutdown: shutdown.clone(),
        metrics: Arc::new(metrics::Metrics::new()),
        catalog: Arc::new(catalog::Catalog::default()),
        leases: Arc::new(persistent::Leases::default()),
    };
    let router = routes
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track_requests,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state);
    let router = match tokens {
        Some(tokens) => auth::protect(router, tokens, tls),
        None => router,
    };
    // Outermost, so that the requests the auth layer refuses are logged too.
    let router = router.layer(axum::middleware::from_fn_with_state(
        request_log,
        request_log::log_request,
    ));
    let router = match grpc {
        Some(grpc) => grpc_mount::split(grpc, router, shutdown.subscribe()),
        None => router,
    };
    (router, shutdown)
}

/// Serves the API over `store` on `listener` until `shutdown` completes, then ends the
/// live subscriptions and waits for requests in flight to finish.
///
/// HTTP/1.1 and HTTP/2 (h2c with prior knowledge) are served on the same port.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn EventStore>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, stop) = build(store, config.clone(), false);
    serving::serve(listener, None, router, &config, stop, shutdown).await
}
