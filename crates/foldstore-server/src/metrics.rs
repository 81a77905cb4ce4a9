//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format (which
//! Prometheus scrapes natively), with the `prometheus-client` crate.
//!
//! - `foldstore_appends_total{outcome}`: appends, by `ok` or `error`;
//! - `foldstore_events_appended_total`: events in successful appends;
//! - `foldstore_append_duration_seconds`: append latency, a histogram;
//! - `foldstore_subscribers`: live subscriptions now open;
//! - `foldstore_subscriber_delivery_lag_seconds`: time from an event's commit to its
//!   delivery to a subscriber's connection, a histogram (catch-up counts too, so an
//!   old replay shows up as large lags);
//! - `foldstore_subscriber_max_lag_milliseconds`: the largest lag of the last delivery of
//!   any open subscription;
//! - `foldstore_slow_subscribers_disconnected_total`: subscriptions ended with
//!   `subscriber_too_slow`;
//! - `foldstore_http_requests_total{route,method,status}`: requests by route pattern
//!   (never the raw path, so stream names do not multiply the series).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;

/// The media type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

/// The server's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    appends: Family<OutcomeLabels, Counter>,
    events_appended: Counter,
    append_duration: Histogram,
    subscribers: Gauge,
    delivery_lag: Histogram,
    max_lag_ms: Gauge,
    slow_disconnected: Counter,
    http_requests: Family<HttpLabels, Counter>,
    /// Lag in milliseconds of each open subscription's last delivery, by id.
    lags: Mutex<std::collections::HashMap<u64, i64>>,
    next_subscriber: AtomicU64,
    started: Instant,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("foldstore");
        let appends = Family::<OutcomeLabels, Counter>::default();
        registry.register("appends", "Appends, by outcome", appends.clone());
        let events_appended = Counter::default();
        registry.register(
            "events_appended",
            "Events written by successful appends",
            events_appended.clone(),
        );
        let append_duration = Histogram::new(exponential_buckets(0.000_125, 2.0, 16));
        registry.register(
            "append_duration_seconds",
            "Append latency, from the parsed request to the store's answer",
            append_duration.clone(),
        );
        let subscribers = Gauge::default();
        registry.register(
            "subscribers",
            "Live subscriptions now open",
            subscribers.clone(),
        );
        let delivery_lag = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "subscriber_delivery_lag_seconds",
            "Time from an event's commit to its delivery to a subscriber's connection",
            delivery_lag.clone(),
        );
        let max_lag_ms = Gauge::default();
        registry.register(
            "subscriber_max_lag_milliseconds",
            "The largest delivery lag of the last event sent to any open subscription",
            max_lag_ms.clone(),
        );
        let slow_disconnected = Counter::default();
        registry.register(
            "slow_subscribers_disconnected",
            "Subscriptions ended because the client did not read (subscriber_too_slow)",
            slow_disconnected.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests, by route pattern, method and status",
            http_requests.clone(),
        );
        Self {
            registry,
            appends,
            events_appended,
            append_duration,
            subscribers,
            delivery_lag,
            max_lag_ms,
            slow_disconnected,
            http_requests,
            lags: Mutex::default(),
            next_subscriber: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Counts an append of `events` events that took `took`.
    pub(crate) fn record_append(&self, took: Duration, events: usize, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.appends.get_or_create(&OutcomeLabels { outcome }).inc();
        if ok {
            self.events_appended.inc_by(events as u64);
            self.append_duration.observe(took.as_secs_f64());
        }
    }

    /// Events appended through this server since it started.
    pub(crate) fn events_appended(&self) -> u64 {
        self.events_appended.get()
    }

    /// Appends through this server since it started.
    pub(crate) fn appends(&self) -> u64 {
        self.appends
            .get_or_create(&OutcomeLabels { outcome: "ok" })
            .get()
    }

    /// Open live subscriptions.
    pub(crate) fn subscriber_count(&self) -> i64 {
        self.subscribers.get()
    }

    /// Seconds since the server started.
    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Registers an open subscription until the guard drops.
    pub(crate) fn subscriber(self: &Arc<Self>) -> SubscriberGuard {
        let open = self.subscribers.inc() + 1;
        tracing::debug!(open, "subscription opened");
        SubscriberGuard {
            metrics: self.clone(),
        }
    }

    /// Tracks the delivery lag of one subscription until the guard drops.
    pub(crate) fn lag_tracker(self: &Arc<Self>) -> LagTracker {
        LagTracker {
            metrics: self.clone(),
            id: self.next_subscriber.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Counts a subscription ended for a client that did not read.
    pub(crate) fn slow_client_disconnected(&self) {
        let total = self.slow_disconnected.inc() + 1;
        tracing::warn!(
            disconnected_total = total,
            open = self.subscribers.get(),
            "a live subscriber did not read its events and was disconnected (subscriber_too_slow)"
        );
    }

    fn encode(&self) -> String {
        let max = self
            .lags
            .lock()
            .map(|lags| lags.values().copied().max().unwrap_or(0))
            .unwrap_or(0);
        self.max_lag_ms.set(max);
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// An open subscription, counted in `foldstore_subscribers` until dropped.
pub(crate) struct SubscriberGuard {
    metrics: Arc<Metrics>,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        let open = self.metrics.subscribers.dec() - 1;
        tracing::debug!(open, "subscription closed");
    }
}

/// One subscription's delivery lag, in the histogram and (while it lives) in the
/// maximum gauge.
pub(crate) struct LagTracker {
    metrics: Arc<Metrics>,
    id: u64,
}

impl LagTracker {
    /// Records the delivery of an event committed at `recorded_at`.
    pub(crate) fn delivered(&self, recorded_at: chrono::DateTime<chrono::Utc>) {
        let lag = (chrono::Utc::now() - recorded_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        self.metrics.delivery_lag.observe(lag.as_secs_f64());
        let ms = i64::try_from(lag.as_millis()).unwrap_or(i64::MAX);
        if let Ok(mut lags) = self.metrics.lags.lock() {
            lags.insert(self.id, ms);
        }
    }
}

impl Drop for LagTracker {
    fn drop(&mut self) {
        if let Ok(mut lags) = self.metrics.lags.lock() {
            lags.remove(&self.id);
        }
    }
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Metrics in the OpenMetrics text format (Prometheus scrapes it)", content_type = "application/openmetrics-text", body = String))
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        state.metrics.encode(),
    )
        .into_response()
}

/// Middleware: counts each request by route pattern, method and status.
pub(crate) async fn track_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
