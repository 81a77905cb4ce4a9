//! Live subscriptions as server-sent events.
//!
//! Each SSE event is `event: event` with the event's JSON as data and, as `id`, its
//! position (`$all`) or revision (one stream), so that an `EventSource` that
//! reconnects sends `Last-Event-ID` and resumes after it, with no gap and no
//! duplicate. A failure ends the stream with an `event: error` whose data is a problem
//! body.
//!
//! Memory stays bounded per client: the core's subscription is pulled, and the
//! response body is pulled by the connection as the socket drains. A slow client only
//! falls behind and catches up from the store's pages; nothing is buffered for it.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use foldstore_core::{
    EventSubscription, Position, RecordedEvent, SubscribeFrom, SubscribeStreamFrom,
};
use futures::{Stream, StreamExt};
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::handlers::{StreamPath, filter};
use crate::wire::event_json;

/// The `Last-Event-ID` header, if any.
fn last_event_id(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::invalid_query("the Last-Event-ID header is not text"))
        })
        .transpose()
}

/// Query of `GET /all/subscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllSubscribeQuery {
    from: Option<String>,
    category: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    prefix: Option<String>,
}

/// Where a `$all` subscription starts: after `Last-Event-ID` when the client resumes;
/// else at `from` (`start`, `end`, or a position, inclusive); else at the start.
fn all_start(headers: &HeaderMap, from: Option<&str>) -> Result<SubscribeFrom, ApiError> {
    if let Some(id) = last_event_id(headers)? {
        let position: Position = id.parse().map_err(|_| {
            ApiError::invalid_query(format!(
                "Last-Event-ID {id:?} is not a position: send the id of the last event received"
            ))
        })?;
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

/// Where a stream subscription starts, as [`all_start`] with revisions.
fn stream_start(headers: &HeaderMap, from: Option<&str>) -> Result<SubscribeStreamFrom, ApiError> {
    if let Some(id) = last_event_id(headers)? {
        let revision: u64 = id.parse().map_err(|_| {
            ApiError::invalid_query(format!(
                "Last-Event-ID {id:?} is not a revision: send the id of the last event received"
            ))
        })?;
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

/// The SSE body: events, then an error event if the subscription fails; it ends when
/// the server shuts down.
fn events(
    state: &AppState,
    subscription: EventSubscription,
    id: fn(&RecordedEvent) -> String,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let mut shutdown = state.shutdown.subscribe();
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let stream = subscription
        .map(move |item| {
            Ok(match item {
                Ok(e) => Event::default()
                    .id(id(&e))
                    .event("event")
                    .data(event_json(&e).to_string()),
                Err(err) => Event::default()
                    .event("error")
                    .data(ApiError::from(err).body().to_string()),
            })
        })
        .take_until(Box::pin(stopped));
    Sse::new(stream).keep_alive(KeepAlive::new().interval(state.config.heartbeat))
}

/// `GET /all/subscribe`.
pub(crate) async fn subscribe_all(
    State(state): State<AppState>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<AllSubscribeQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let start = all_start(&headers, q.from.as_deref())?;
    let filter = filter(q.category, q.event_type.as_deref(), q.prefix)?;
    let subscription = state.store.subscribe_to_all(start, filter).await?;
    Ok(events(&state, subscription, |e| e.position.to_string()))
}

/// Query of `GET /streams/{stream}/subscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamSubscribeQuery {
    from: Option<String>,
}

/// `GET /streams/{stream}/subscribe`.
pub(crate) async fn subscribe_stream(
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    headers: HeaderMap,
    QueryParams(q): QueryParams<StreamSubscribeQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let start = stream_start(&headers, q.from.as_deref())?;
    let subscription = state.store.subscribe_to_stream(&stream, start).await?;
    Ok(events(&state, subscription, |e| e.revision.to_string()))
}
