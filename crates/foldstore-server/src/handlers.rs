//! The JSON endpoints. Each handler parses everything it needs before it touches the
//! store, so a malformed request writes nothing.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use foldstore_core::{
    ConsumerGroup, Direction, EventFilter, ExpectedRevision, Position, ReadAllOptions,
    ReadStreamOptions, RecordedEvent, StreamMetadata, StreamName,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{JsonBody, QueryParams};
use crate::wire::{AppendAnswer, AppendBody, page_json, parse_expected};

/// Events per page when `limit` is not given.
pub(crate) const DEFAULT_LIMIT: usize = 100;
/// The largest `limit`.
pub(crate) const MAX_LIMIT: usize = 1000;

/// The `{stream}` path segment, validated as a stream name.
pub(crate) struct StreamPath(pub(crate) StreamName);

impl<S: Send + Sync> FromRequestParts<S> for StreamPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_stream_name",
                    e.body_text(),
                )
            })?;
        Ok(StreamPath(StreamName::new(name)?))
    }
}

fn check_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        0 => Err(ApiError::invalid_query(
            "limit=0: ask for at least one event",
        )),
        n if n > MAX_LIMIT => Err(ApiError::invalid_query(format!(
            "limit={n}: the largest page is {MAX_LIMIT} events; follow `next` for more"
        ))),
        n => Ok(n),
    }
}

/// Cuts a page read with `limit + 1` to `limit`, returning the event that starts the
/// next page.
fn split_page(events: &mut Vec<RecordedEvent>, limit: usize) -> Option<RecordedEvent> {
    if events.len() > limit {
        let next = events.swap_remove(limit);
        events.truncate(limit);
        Some(next)
    } else {
        None
    }
}

/// `GET /health`.
pub(crate) async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let head = state.store.head_position().await?;
    Ok(Json(
        json!({"status": "ok", "head_position": head.map(|p| p.to_string())}),
    ))
}

/// `POST /streams/{stream}`.
pub(crate) async fn append(
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    JsonBody(body): JsonBody<AppendBody>,
) -> Result<Json<AppendAnswer>, ApiError> {
    let (expected, events) = body.into_parts()?;
    let result = state.store.append(&stream, expected, events).await?;
    Ok(Json(result.into()))
}

/// Query of `GET /streams/{stream}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamReadQuery {
    from: Option<u64>,
    direction: Option<Direction>,
    limit: Option<usize>,
}

/// `GET /streams/{stream}`.
pub(crate) async fn read_stream(
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    QueryParams(q): QueryParams<StreamReadQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = check_limit(q.limit)?;
    let mut options = match q.direction.unwrap_or_default() {
        Direction::Forwards => ReadStreamOptions::forwards(),
        Direction::Backwards => ReadStreamOptions::backwards(),
    }
    .max_count(limit + 1);
    options.from = q.from;
    let mut events = state.store.read_stream(&stream, options).await?;
    let next = split_page(&mut events, limit).map(|e| json!(e.revision));
    Ok(Json(page_json(&events, next)))
}

/// Query of `GET /all`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllReadQuery {
    from: Option<Position>,
    direction: Option<Direction>,
    limit: Option<usize>,
    category: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    prefix: Option<String>,
}

/// Event types from a comma-separated `type` parameter.
pub(crate) fn types(param: Option<&str>) -> Vec<String> {
    param
        .map(|t| {
            t.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The filter of `$all` reads and subscriptions.
pub(crate) fn filter(
    category: Option<String>,
    event_type: Option<&str>,
    prefix: Option<String>,
) -> Result<EventFilter, ApiError> {
    let mut filter = match category {
        Some(c) => EventFilter::category(c)?,
        None => EventFilter::all(),
    };
    filter.stream_prefix = prefix;
    Ok(filter.with_types(types(event_type)))
}

async fn read_global(
    state: &AppState,
    from: Option<Position>,
    direction: Option<Direction>,
    limit: Option<usize>,
    filter: EventFilter,
) -> Result<Json<Value>, ApiError> {
    let limit = check_limit(limit)?;
    let mut options = match direction.unwrap_or_default() {
        Direction::Forwards => ReadAllOptions::forwards(),
        Direction::Backwards => ReadAllOptions::backwards(),
    }
    .max_count(limit + 1);
    options.from = from;
    let mut events = state.store.read_all(options.filter(filter)).await?;
    let next = split_page(&mut events, limit).map(|e| json!(e.position.to_string()));
    Ok(Json(page_json(&events, next)))
}

/// `GET /all`.
pub(crate) async fn read_all(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<AllReadQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = filter(q.category, q.event_type.as_deref(), q.prefix)?;
    read_global(&state, q.from, q.direction, q.limit, filter).await
}

/// Query of `GET /categories/{category}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CategoryReadQuery {
    from: Option<Position>,
    direction: Option<Direction>,
    limit: Option<usize>,
    group_member: Option<u32>,
    group_size: Option<u32>,
}

/// `GET /categories/{category}`.
pub(crate) async fn read_category(
    State(state): State<AppState>,
    Path(category): Path<String>,
    QueryParams(q): QueryParams<CategoryReadQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut filter = EventFilter::category(category)?;
    match (q.group_member, q.group_size) {
        (None, None) => {}
        (Some(member), Some(size)) => {
            filter = filter.with_consumer_group(ConsumerGroup::new(member, size)?);
        }
        _ => {
            return Err(ApiError::invalid_query(
                "give both group_member and group_size, or neither",
            ));
        }
    }
    read_global(&state, q.from, q.direction, q.limit, filter).await
}

/// Query of `DELETE /streams/{stream}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteQuery {
    #[serde(default)]
    tombstone: bool,
    expected_revision: Option<String>,
}

/// `DELETE /streams/{stream}`: soft delete, or tombstone with `?tombstone=true`.
pub(crate) async fn delete_stream(
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    QueryParams(q): QueryParams<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let expected = match q.expected_revision.as_deref() {
        Some(text) => parse_expected(text)?,
        None => ExpectedRevision::Any,
    };
    if q.tombstone {
        state.store.tombstone_stream(&stream, expected).await?;
    } else {
        state.store.delete_stream(&stream, expected).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /streams/{stream}/metadata`: `{}` when none was set.
pub(crate) async fn get_metadata(
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
) -> Result<Json<StreamMetadata>, ApiError> {
    let metadata = state.store.stream_metadata(&stream).await?;
    Ok(Json(metadata.unwrap_or_default()))
}

/// `PUT /streams/{stream}/metadata`: replaces the metadata.
pub(crate) async fn put_metadata(
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    JsonBody(metadata): JsonBody<StreamMetadata>,
) -> Result<StatusCode, ApiError> {
    state.store.set_stream_metadata(&stream, metadata).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Any other path.
pub(crate) async fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint: see the API's routes (/streams/{stream}, /all, /categories/{category}, /health)",
    )
    .into_response()
}

/// A known path with another method.
pub(crate) async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
    .into_response()
}
