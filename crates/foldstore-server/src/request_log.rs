//! One log line per request, written by the outermost middleware (so requests the
//! auth layer refuses are logged too) once the response head is ready.
//!
//! | what | level | message |
//! | --- | --- | --- |
//! | 5xx | `error` | `request failed` |
//! | 4xx | `info` | `request refused` |
//! | slower than [`ServerConfig::slow_request`](crate::ServerConfig::slow_request) (a long poll's wait not counted) | `warn` | `slow request` |
//! | every other request | `debug` | `request` |
//!
//! Each line has `method`, `route` (the route template such as
//! `/streams/{stream}`, never the path with its stream names; `unmatched` when no
//! route matched), `status`, `code` (the problem's stable code, when the answer is a
//! problem), `duration_ms` (until the response head; a live subscription's events
//! come after it) and `token` (the name of the request's token, never the token).
//! Query strings, headers, cookies and bodies are never logged.
//!
//! With `RUST_LOG=debug` or a trace export, each request also gets a span named for
//! its method and route template (`POST /streams/{stream}`), the parent of the
//! store's spans (such as the append's commit).
//!
//! The code and token name travel outward as response extensions ([`ProblemCode`] set
//! by [`ApiError`](crate::error::ApiError), [`TokenName`] set by the auth layer), so
//! this middleware reads no body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The stable code of a problem answer, in the response's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProblemCode(pub(crate) &'static str);

/// How long a request waited on purpose (a long poll's `wait_ms`), in the response's
/// extensions: that time does not make it a slow request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waited(pub(crate) Duration);

/// The name of the token a request presented, in the response's extensions.
#[derive(Debug, Clone)]
pub(crate) struct TokenName(pub(crate) String);

/// Tags `response` with the name of the token its request presented.
pub(crate) fn with_token_name(mut response: Response, name: &str) -> Response {
    response.extensions_mut().insert(TokenName(name.to_owned()));
    response
}

/// What the middleware needs: the route templates and the slow-request threshold.
pub(crate) struct RequestLog {
    routes: matchit::Router<Arc<str>>,
    slow: Option<Duration>,
}

impl RequestLog {
    /// A log of requests to `templates` (axum's route syntax, `/streams/{stream}`).
    pub(crate) fn new<'a>(
        templates: impl IntoIterator<Item = &'a str>,
        slow: Option<Duration>,
    ) -> Self {
        let mut routes = matchit::Router::new();
        for t in templates {
            // A template already present (or overlapping one) keeps the first.
            let _ = routes.insert(t, Arc::<str>::from(t));
        }
        Self { routes, slow }
    }

    /// The route template `path` matches, as the router matches it.
    fn route(&self, path: &str) -> &str {
        self.routes
            .at(path)
            .map_or("unmatched", |m| m.value.as_ref())
    }
}

/// How a finished request is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Failed,
    Refused,
    Slow,
    Ok,
}

impl Line {
    fn of(status: StatusCode, took: Duration, slow: Option<Duration>) -> Self {
        if status.is_server_error() {
            Line::Failed
        } else if status.is_client_error() {
            Line::Refused
        } else if slow.is_some_and(|s| took > s) {
            Line::Slow
        } else {
            Line::Ok
        }
    }
}

/// The middleware: runs the request, then logs it at the level its outcome calls for.
pub(crate) async fn log_request(
    State(log): State<Arc<RequestLog>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method: Method = request.method().clone();
    let uri = request.uri().clone();
    // A span only where a layer wants one (RUST_LOG=debug, or the trace export): at
    // the default level this is `Span::none()`, and costs nothing.
    let span = tracing::debug_span!(
        "request",
        otel.name = %format_args!("{method} {}", log.route(uri.path())),
        otel.kind = "server",
        http.request.method = %method,
        http.route = log.route(uri.path()),
        http.response.status_code = tracing::field::Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    let waited = response
        .extensions()
        .get::<Waited>()
        .map_or(Duration::ZERO, |w| w.0);
    let line = Line::of(status, took.saturating_sub(waited), log.slow);
    if line == Line::Ok && !tracing::enabled!(tracing::Level::DEBUG) {
        return response;
    }
    let route = log.route(uri.path());
    let code = response.extensions().get::<ProblemCode>().map(|c| c.0);
    let token = response
        .extensions()
        .get::<TokenName>()
        .map(|t| t.0.as_str());
    let duration_ms = took.as_micros() as f64 / 1000.0;
    let method = method.as_str();
    let status = status.as_u16();
    macro_rules! emit {
        ($level:ident, $message:literal) => {
            tracing::$level!(method, route, status, code, token, duration_ms, $message)
        };
    }
    match line {
        Line::Failed => emit!(error, "request failed"),
        Line::Refused => emit!(info, "request refused"),
        Line::Slow => emit!(warn, "slow request"),
        Line::Ok => emit!(debug, "request"),
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve_to_their_templates() {
        let log = RequestLog::new(
            ["/streams/{stream}", "/streams/{stream}/metadata", "/all"],
            None,
        );
        assert_eq!(log.route("/streams/acct-1"), "/streams/{stream}");
        assert_eq!(
            log.route("/streams/acct-1/metadata"),
            "/streams/{stream}/metadata"
        );
        assert_eq!(log.route("/all"), "/all");
        assert_eq!(log.route("/nope"), "unmatched");
    }

    #[test]
    fn levels_follow_the_outcome() {
        let slow = Some(Duration::from_millis(100));
        let fast = Duration::from_millis(1);
        let long = Duration::from_millis(500);
        assert_eq!(
            Line::of(StatusCode::SERVICE_UNAVAILABLE, fast, slow),
            Line::Failed
        );
        assert_eq!(Line::of(StatusCode::CONFLICT, long, slow), Line::Refused);
        assert_eq!(Line::of(StatusCode::OK, long, slow), Line::Slow);
        assert_eq!(Line::of(StatusCode::OK, long, None), Line::Ok);
        assert_eq!(Line::of(StatusCode::CREATED, fast, slow), Line::Ok);
    }
}
