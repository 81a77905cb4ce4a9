//! Live subscriptions as server-sent events.
//!
//! Each SSE event is `event: event` with the event's JSON as data and, as `id`, its
//! position (`$all`) or revision (one stream), so that an `EventSource` that
//! reconnects sends `Last-Event-ID` and resumes after it, with no gap and no
//! duplicate. A failure ends the stream with an `event: error` whose data is a problem
//! body.
//!
//! Memory stays bounded per client. A task pulls the core's subscription (which reads
//! the store page by page) into a channel of at most `ServerConfig::sse_buffer` events
//! and `ServerConfig::sse_buffer_bytes` bytes of event JSON; the response body drains
//! the channel as the socket takes it. A client that falls behind catches up from the
//! store's pages. A client that stops reading fills the channel: when it stays full for
//! `ServerConfig::slow_client_timeout`, the task drops the subscription and the body
//! sends an `error` event with the code `subscriber_too_slow` and ends, so the client
//! can reconnect with `Last-Event-ID` and catch up from the store. Over HTTP/1 the
//! response carries `Connection: close`, so the connection closes once that event is
//! written; a client that takes no bytes at all is closed by the connection's write
//! timeout (`ServerConfig::write_timeout`, see `stall.rs`) instead. Either way the
//! subscriber is counted in `foldstore_slow_subscribers_disconnected_total` and a warn
//! line names the route, the events it had buffered and how long it stalled.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Version, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use foldstore_core::{
    EventSubscription, Position, RecordedEvent, SubscribeFrom, SubscribeStreamFrom,
};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use utoipa::IntoParams;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::handlers::{StreamPath, filter};
use crate::metrics::{Metrics, SubscriberGuard};
use crate::openapi::Problem;
use crate::stall::Stalled;
use crate::wire::event_json;

/// The stable code of the `error` event sent to a client that stopped reading.
pub(crate) const TOO_SLOW: &str = "subscriber_too_slow";

/// The `Last-Event-ID` header, if any; given twice it is ambiguous, and refused.
///
/// With a `from` query parameter it wins: an `EventSource` reconnects to the URL it
/// was opened with (its `from` included) and adds the header, so the header is the
/// later and more precise of the two.
fn last_event_id(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all("last-event-id").iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::invalid_query(
            "the Last-Event-ID header is given more than once: send it once",
        ));
    }
    first
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::invalid_query("the Last-Event-ID header is not text"))
        })
        .transpose()
}

/// Query of `GET /all/subscribe`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AllSubscribeQuery {
    /// `start` (the default), `end` (new events only), or a position (inclusive).
    /// A `Last-Event-ID` header takes precedence.
    from: Option<String>,
    /// Only streams of this category (`category-...`).
    category: Option<String>,
    /// Only these event types, comma-separated.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    event_type: Option<String>,
    /// Only streams whose name starts with this.
    prefix: Option<String>,
}

/// Where a `$all` subscription starts: after `Last-Event-ID` when the client resumes;
/// else at `from` (`start`, `end`, or a position, inclusive); else at the start.
///
/// A resume point past the last event means "after the end": the subscription waits
/// for events after it. The greatest position there can be is refused (400), as no
/// event can follow it.
fn all_start(headers: &HeaderMap, from: Option<&str>) -> Result<SubscribeFrom, ApiError> {
    if let Some(id) = last_event_id(headers)? {
        let position: Position = id.parse().map_err(|_| {
            ApiError::invalid_query(format!(
                "Last-Event-ID {id:?} is not a position: send the id of the last event received"
            ))
        })?;
        if position == Position::new(u128::MAX) {
            return Err(past_the_last("Last-Event-ID", id, "position"));
        }
        return Ok(SubscribeFrom::After(position));
    }
    match from {
        None | Some("start") => Ok(SubscribeFrom::Start),
        Some("end") => Ok(SubscribeFrom::End),
        Some(text) => {
            let position: Position = text.parse().map_err(|_| {
                ApiError::invalid_query(format!(
                    "from={text:?}: use start, end, or a position a read returned"
                ))
            })?;
            Ok(if position == Position::ZERO {
                SubscribeFrom::Start
            } else {
                SubscribeFrom::After(position.prev())
            })
        }
    }
}

/// Where a stream subscription starts, as [`all_start`] with revisions: a
/// `Last-Event-ID` past the stream's last revision waits for the revisions after it, and
/// `18446744073709551615` (`u64::MAX`, which no revision can follow) is 400.
fn stream_start(headers: &HeaderMap, from: Option<&str>) -> Result<SubscribeStreamFrom, ApiError> {
    if let Some(id) = last_event_id(headers)? {
        let revision: u64 = id.parse().map_err(|_| {
            ApiError::invalid_query(format!(
                "Last-Event-ID {id:?} is not a revision: send the id of the last event received"
            ))
        })?;
        if revision == u64::MAX {
            return Err(past_the_last("Last-Event-ID", id, "revision"));
        }
        return Ok(SubscribeStreamFrom::After(revision));
    }
    match from {
        None | Some("start") => Ok(SubscribeStreamFrom::Start),
        Some("end") => Ok(SubscribeStreamFrom::End),
        Some(text) => match text.parse::<u64>() {
            Ok(0) => Ok(SubscribeStreamFrom::Start),
            Ok(n) => Ok(SubscribeStreamFrom::After(n - 1)),
            Err(_) => Err(ApiError::invalid_query(format!(
                "from={text:?}: use start, end, or a revision"
            ))),
        },
    }
}

/// 400 for a resume point that no event can follow (the greatest position or revision
/// there is): resuming after it could deliver nothing, ever.
fn past_the_last(what: &str, id: &str, unit: &str) -> ApiError {
    ApiError::invalid_query(format!(
        "{what} {id} is the greatest {unit} there can be, so no event can follow it: send the id of the last event received"
    ))
}

/// What the pulling task hands the body.
struct Delivery {
    event: Event,
    /// When the store committed the event, for the delivery-lag histogram.
    recorded_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The event's share of the subscription's byte budget, returned when the body
    /// takes it.
    _budget: Option<OwnedSemaphorePermit>,
}

/// Who a subscription serves: for its log lines.
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    /// `$all` or the stream's name.
    route: String,
    /// The connection's write-timeout flag (absent when the router is called without a
    /// connection, as in tests that call it directly).
    stalled: Option<Stalled>,
}

/// The SSE response: events, then an error event if the subscription fails or the
/// client is too slow; it ends when the server shuts down. Over HTTP/1 the response
/// says `Connection: close`, so that a subscription that ended (for a client too slow,
/// say) leaves no idle connection behind holding what the client did not read.
fn events(
    state: &AppState,
    subscription: EventSubscription,
    id: fn(&RecordedEvent) -> String,
    subscriber: Subscriber,
    version: Version,
) -> Response {
    let (tx, rx) = mpsc::channel::<Delivery>(state.config.sse_buffer.max(1));
    let (too_slow_tx, too_slow_rx) = oneshot::channel::<()>();
    // Counted from here, before the response head is sent, until the task ends.
    let guard = state.metrics.subscriber();
    tokio::spawn(pull(
        subscription,
        id,
        tx,
        too_slow_tx,
        Limits {
            stall: state.config.slow_client_timeout,
            write_timeout: state.config.write_timeout,
            bytes: state.config.sse_buffer_bytes,
        },
        subscriber,
        state.metrics.clone(),
        guard,
    ));
    let mut shutdown = state.shutdown.subscribe();
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let lag = state.metrics.lag_tracker();
    // The state is `None` once the too-slow event was sent: the body then ends, and
    // the events still in the channel are dropped (the client resumes after the last
    // one it received).
    let body = futures::stream::unfold(Some((rx, Some(too_slow_rx), lag)), |state| async move {
        let (mut rx, mut too_slow, lag) = state?;
        let delivery = match too_slow.take() {
            Some(mut signal) => tokio::select! {
                biased;
                fired = &mut signal => {
                    if fired.is_ok() {
                        return Some((Ok::<_, Infallible>(too_slow_event()), None));
                    }
                    rx.recv().await
                }
                d = rx.recv() => {
                    too_slow = Some(signal);
                    d
                }
            },
            None => rx.recv().await,
        };
        let delivery = delivery?;
        if let Some(at) = delivery.recorded_at {
            lag.delivered(at);
        }
        Some((Ok(delivery.event), Some((rx, too_slow, lag))))
    })
    .take_until(Box::pin(stopped));
    let mut response = Sse::new(body)
        .keep_alive(KeepAlive::new().interval(state.config.heartbeat))
        .into_response();
    if version <= Version::HTTP_11 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The `error` event of a client that stopped reading.
fn too_slow_event() -> Event {
    let problem = ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        TOO_SLOW,
        "this client did not read events fast enough and was disconnected: reconnect with Last-Event-ID to catch up from the store",
    );
    Event::default()
        .event("error")
        .data(problem.body().to_string())
}

/// How much a subscription holds for its client, and for how long.
struct Limits {
    /// How long the buffer may stay full.
    stall: Duration,
    /// The connection's write timeout, for the log line when it closed the connection.
    write_timeout: Duration,
    /// The byte budget of the buffered events.
    bytes: usize,
}

/// Pulls the subscription into the channel until the client goes away, the
/// subscription ends, or the client stops reading for `limits.stall` with the buffer
/// full (its event count, or its byte budget).
#[allow(clippy::too_many_arguments)]
async fn pull(
    mut subscription: EventSubscription,
    id: fn(&RecordedEvent) -> String,
    tx: mpsc::Sender<Delivery>,
    too_slow: oneshot::Sender<()>,
    limits: Limits,
    subscriber: Subscriber,
    metrics: Arc<Metrics>,
    _guard: SubscriberGuard,
) {
    let budget = Arc::new(Semaphore::new(limits.bytes.clamp(1, MAX_BUDGET)));
    let buffered = |tx: &mpsc::Sender<Delivery>| tx.max_capacity() - tx.capacity();
    // The connection was closed under the subscription: by its write timeout if its
    // writes stalled (a client too slow), else by the client.
    let gone = |waited: Duration, events: usize| {
        if subscriber.stalled.as_ref().is_some_and(Stalled::is_set) {
            metrics.slow_client_disconnected();
            tracing::warn!(
                route = %subscriber.route,
                buffered_events = events,
                stalled_ms = u64::try_from(limits.write_timeout.max(waited).as_millis()).unwrap_or(u64::MAX),
                "subscriber disconnected as too slow: its connection took no bytes for the write timeout"
            );
        }
    };
    loop {
        let item = tokio::select! {
            item = subscription.next() => item,
            () = tx.closed() => return gone(Duration::ZERO, buffered(&tx)),
        };
        let (delivery, cost, last) = match item {
            None => return,
            Some(Ok(e)) => {
                let data = event_json(&e).to_string();
                let cost = data.len();
                (
                    Delivery {
                        event: Event::default().id(id(&e)).event("event").data(data),
                        recorded_at: Some(e.recorded_at),
                        _budget: None,
                    },
                    cost,
                    false,
                )
            }
            Some(Err(err)) => (
                Delivery {
                    event: Event::default()
                        .event("error")
                        .data(ApiError::from(err).body().to_string()),
                    recorded_at: None,
                    _budget: None,
                },
                0,
                true,
            ),
        };
        let started = Instant::now();
        let send = async {
            let mut delivery = delivery;
            let cost =
                u32::try_from(cost.clamp(1, limits.bytes.clamp(1, MAX_BUDGET))).unwrap_or(u32::MAX);
            if let Ok(permit) = budget.clone().acquire_many_owned(cost).await {
                delivery._budget = Some(permit);
            }
            tx.send(delivery).await
        };
        match tokio::time::timeout(limits.stall, send).await {
            Ok(Ok(())) if !last => {}
            Ok(Ok(())) => return,
            Ok(Err(_)) => return gone(started.elapsed(), buffered(&tx)),
            Err(_) => {
                metrics.slow_client_disconnected();
                tracing::warn!(
                    route = %subscriber.route,
                    buffered_events = buffered(&tx),
                    stalled_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "subscriber disconnected as too slow: its buffer stayed full"
                );
                let _ = too_slow.send(());
                return;
            }
        }
    }
}

/// The largest byte budget a subscription can have (the semaphore counts in `u32`).
const MAX_BUDGET: usize = u32::MAX as usize;

/// `GET /all/subscribe`.
#[utoipa::path(
    get,
    path = "/all/subscribe",
    tag = "live",
    params(AllSubscribeQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this position (sent by a reconnecting EventSource). A position past the last event waits for the events after it; the greatest position (340282366920938463463374607431768211455), which no event can follow, is 400")),
    responses(
        (status = 200, description = "Server-sent events: `event` (data: an event, id: its position), `error` (data: a problem; `subscriber_too_slow` when the client did not read), heartbeat comments", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid query or Last-Event-ID", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn subscribe_all(
    State(state): State<AppState>,
    version: Version,
    stalled: Option<Extension<Stalled>>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<AllSubscribeQuery>,
) -> Result<Response, ApiError> {
    let start = all_start(&headers, q.from.as_deref())?;
    let filter = filter(q.category, q.event_type.as_deref(), q.prefix)?;
    let subscription = state.store.subscribe_to_all(start, filter).await?;
    let subscriber = Subscriber {
        route: "$all".to_owned(),
        stalled: stalled.map(|Extension(s)| s),
    };
    Ok(events(
        &state,
        subscription,
        |e| e.position.to_string(),
        subscriber,
        version,
    ))
}

/// Query of `GET /streams/{stream}/subscribe`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamSubscribeQuery {
    /// `start` (the default), `end` (new events only), or a revision (inclusive).
    /// A `Last-Event-ID` header takes precedence.
    from: Option<String>,
}

/// `GET /streams/{stream}/subscribe`.
#[utoipa::path(
    get,
    path = "/streams/{stream}/subscribe",
    tag = "live",
    params(("stream" = String, Path, description = "The stream name"), StreamSubscribeQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this revision (sent by a reconnecting EventSource). A revision past the stream's last waits for the revisions after it; 18446744073709551615, which no revision can follow, is 400")),
    responses(
        (status = 200, description = "Server-sent events: `event` (id: the revision), `error`, heartbeat comments", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid stream name, query or Last-Event-ID", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The stream was tombstoned", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn subscribe_stream(
    State(state): State<AppState>,
    version: Version,
    stalled: Option<Extension<Stalled>>,
    StreamPath(stream): StreamPath,
    headers: HeaderMap,
    QueryParams(q): QueryParams<StreamSubscribeQuery>,
) -> Result<Response, ApiError> {
    let start = stream_start(&headers, q.from.as_deref())?;
    let subscription = state.store.subscribe_to_stream(&stream, start).await?;
    let subscriber = Subscriber {
        route: stream.to_string(),
        stalled: stalled.map(|Extension(s)| s),
    };
    Ok(events(
        &state,
        subscription,
        |e| e.revision.to_string(),
        subscriber,
        version,
    ))
}
