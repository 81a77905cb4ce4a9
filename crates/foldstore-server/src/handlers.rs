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
use utoipa::IntoParams;

use crate::AppState;
use crate::cloudevents::AppendInput;
use crate::error::ApiError;
use crate::extract::{JsonBody, QueryParams};
use crate::openapi::{Health, Problem, StreamMetadataDoc};
use crate::page_json::{PageJson, page_json};
use crate::reach::Reach;
use crate::wire::{AppendAnswer, AppendBody, WirePage, parse_expected};

/// Events per page when `limit` is not given.
pub(crate) const DEFAULT_LIMIT: usize = 100;
/// The largest `limit`.
pub(crate) const MAX_LIMIT: usize = 1000;

/// The `{stream}` path segment, validated as a stream name.
pub(crate) struct StreamPath(pub(crate) StreamName);

impl<S: Send + Sync> FromRequestParts<S> for StreamPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let name = name_segment(parts, state).await?;
        Ok(StreamPath(StreamName::new(name)?))
    }
}

/// The `{category}` path segment (validated by [`EventFilter::category`]).
pub(crate) struct CategoryPath(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for CategoryPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        name_segment(parts, state).await.map(CategoryPath)
    }
}

/// The one path parameter of a route, as text; a segment that does not decode (such
/// as `%FF`) is `invalid_stream_name`.
async fn name_segment<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<String, ApiError> {
    let Path(name) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_stream_name",
                e.body_text(),
            )
        })?;
    Ok(name)
}

/// The query of an operation that takes no parameters: any parameter is refused
/// (`invalid_query`), as on every other route, rather than ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoQuery {}

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
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "The store answers and accepts writes", body = Health),
        (status = 503, description = "The store is unavailable (`backend_unavailable`), or it stopped accepting writes after a disk failure (`storage_failed`: an operator must check the disk and restart it)", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn health(
    State(state): State<AppState>,
    reach: Reach,
) -> Result<Json<Value>, ApiError> {
    // A store that stopped writing (a disk error) is unhealthy even though it reads.
    state.store.writable()?;
    // The head position counts every event: shown only to callers that reach every
    // stream (no tokens, or a token without prefixes; /health is public).
    if !reach.is_everything() {
        return Ok(Json(json!({"status": "ok"})));
    }
    let head = state.store.head_position().await?;
    Ok(Json(
        json!({"status": "ok", "head_position": head.map(|p| p.to_string())}),
    ))
}

/// `POST /streams/{stream}`: a JSON append, or a CloudEvents 1.0 batch
/// (`application/cloudevents-batch+json`, see `cloudevents.rs`).
#[utoipa::path(
    post,
    path = "/streams/{stream}",
    tag = "streams",
    params(
        ("stream" = String, Path, description = "The stream name"),
        ("expected_revision" = Option<String>, Query, description = "For a CloudEvents batch: any (the default), no_stream, stream_exists or a revision. A JSON append gives it in its body; the query may repeat it only with the same value (a different one is 400 `conflicting_parameters`)")
    ),
    request_body(
        description = "An append (`application/json`), or a CloudEvents 1.0 batch (`application/cloudevents-batch+json`)",
        content(
            (AppendBody = "application/json"),
            (Vec<crate::cloudevents::CloudEventDoc> = "application/cloudevents-batch+json")
        )
    ),
    responses(
        (status = 200, description = "Appended (or already stored: appends are idempotent by event id)", body = AppendAnswer),
        (status = 400, description = "Invalid stream name, query (`invalid_query`; `conflicting_parameters` when it disagrees with the body), body, event or CloudEvent; nothing was written", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Wrong expected revision, or an event id stored elsewhere", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The stream was tombstoned", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body or the append is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither JSON nor a CloudEvents batch", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable (`backend_unavailable`), the outcome is unknown (`outcome_unknown`: retry with the same event ids), or the store stopped accepting writes after a disk failure (`storage_failed`: an operator must restart it)", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The store's disk is full (`storage_full`): nothing was written; reads still work, and writes succeed again without a restart once space is freed", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn append(
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    AppendInput { expected, events }: AppendInput,
) -> Result<Json<AppendAnswer>, ApiError> {
    let count = events.len();
    let started = std::time::Instant::now();
    let result = state.store.append(&stream, expected, events).await;
    state
        .metrics
        .record_append(started.elapsed(), count, result.is_ok());
    Ok(Json(result?.into()))
}

/// Query of `GET /streams/{stream}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamReadQuery {
    /// The first revision to read (inclusive); the start or the end by direction.
    from: Option<u64>,
    /// `forwards` (the default) or `backwards`.
    #[param(value_type = Option<String>)]
    direction: Option<Direction>,
    /// Events per page, 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// `GET /streams/{stream}`.
#[utoipa::path(
    get,
    path = "/streams/{stream}",
    tag = "streams",
    params(("stream" = String, Path, description = "The stream name"), StreamReadQuery),
    responses(
        (status = 200, description = "A page of the stream's events; `next` is the revision of the next page", body = WirePage),
        (status = 400, description = "Invalid stream name or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The stream does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The stream was tombstoned", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn read_stream(
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    QueryParams(q): QueryParams<StreamReadQuery>,
) -> Result<PageJson, ApiError> {
    let limit = check_limit(q.limit)?;
    let mut options = match q.direction.unwrap_or_default() {
        Direction::Forwards => ReadStreamOptions::forwards(),
        Direction::Backwards => ReadStreamOptions::backwards(),
    }
    .max_count(limit + 1);
    options.from = q.from;
    let mut events = state.store.read_stream(&stream, options).await?;
    let next = split_page(&mut events, limit).map(|e| json!(e.revision));
    page_json(&events, next.as_ref()).map_err(ApiError::from)
}

/// Query of `GET /all`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AllReadQuery {
    /// The first position to read (inclusive), as a read returned it.
    #[param(value_type = Option<String>)]
    from: Option<Position>,
    /// `forwards` (the default) or `backwards`.
    #[param(value_type = Option<String>)]
    direction: Option<Direction>,
    /// Events per page, 1 to 1000 (default 100).
    limit: Option<usize>,
    /// Only streams of this category (`category-...`).
    category: Option<String>,
    /// Only these event types, comma-separated.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    event_type: Option<String>,
    /// Only streams whose name starts with this.
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
) -> Result<PageJson, ApiError> {
    let limit = check_limit(limit)?;
    let mut options = match direction.unwrap_or_default() {
        Direction::Forwards => ReadAllOptions::forwards(),
        Direction::Backwards => ReadAllOptions::backwards(),
    }
    .max_count(limit + 1);
    options.from = from;
    let mut events = state.store.read_all(options.filter(filter)).await?;
    let next = split_page(&mut events, limit).map(|e| json!(e.position.to_string()));
    page_json(&events, next.as_ref()).map_err(ApiError::from)
}

/// `GET /all`.
#[utoipa::path(
    get,
    path = "/all",
    tag = "global",
    params(AllReadQuery),
    responses(
        (status = 200, description = "A page of `$all`; `next` is the position of the next page", body = WirePage),
        (status = 400, description = "Invalid query", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn read_all(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<AllReadQuery>,
) -> Result<PageJson, ApiError> {
    let filter = filter(q.category, q.event_type.as_deref(), q.prefix)?;
    read_global(&state, q.from, q.direction, q.limit, filter).await
}

/// Query of `GET /categories/{category}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CategoryReadQuery {
    /// The first position to read (inclusive), as a read returned it.
    #[param(value_type = Option<String>)]
    from: Option<Position>,
    /// `forwards` (the default) or `backwards`.
    #[param(value_type = Option<String>)]
    direction: Option<Direction>,
    /// Events per page, 1 to 1000 (default 100).
    limit: Option<usize>,
    /// This consumer's index in its group, below `group_size`.
    group_member: Option<u32>,
    /// How many consumers share the category.
    group_size: Option<u32>,
}

/// `GET /categories/{category}`.
#[utoipa::path(
    get,
    path = "/categories/{category}",
    tag = "global",
    params(("category" = String, Path, description = "The category: streams named `category-...`"), CategoryReadQuery),
    responses(
        (status = 200, description = "A page of the category's events in global order", body = WirePage),
        (status = 400, description = "Invalid category or query", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn read_category(
    State(state): State<AppState>,
    CategoryPath(category): CategoryPath,
    QueryParams(q): QueryParams<CategoryReadQuery>,
) -> Result<PageJson, ApiError> {
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
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteQuery {
    /// `true`: the stream can never be written again.
    #[serde(default)]
    tombstone: bool,
    /// any (the default), no_stream, stream_exists or a revision.
    expected_revision: Option<String>,
}

/// `DELETE /streams/{stream}`: soft delete, or tombstone with `?tombstone=true`.
#[utoipa::path(
    delete,
    path = "/streams/{stream}",
    tag = "streams",
    params(("stream" = String, Path, description = "The stream name"), DeleteQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "Wrong expected revision", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The stream was tombstoned", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The store's disk is full (`storage_full`): nothing was written; reads still work, and writes succeed again without a restart once space is freed", body = Problem, content_type = "application/problem+json")
    )
)]
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
#[utoipa::path(
    get,
    path = "/streams/{stream}/metadata",
    tag = "streams",
    params(("stream" = String, Path, description = "The stream name")),
    responses(
        (status = 200, description = "The stream's metadata", body = StreamMetadataDoc),
        (status = 410, description = "The stream was tombstoned", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn get_metadata(
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    QueryParams(NoQuery {}): QueryParams<NoQuery>,
) -> Result<Json<StreamMetadata>, ApiError> {
    let metadata = state.store.stream_metadata(&stream).await?;
    Ok(Json(metadata.unwrap_or_default()))
}

/// `PUT /streams/{stream}/metadata`: replaces the metadata.
#[utoipa::path(
    put,
    path = "/streams/{stream}/metadata",
    tag = "streams",
    params(("stream" = String, Path, description = "The stream name")),
    request_body(content = StreamMetadataDoc, content_type = "application/json"),
    responses(
        (status = 204, description = "Replaced"),
        (status = 400, description = "Invalid stream name, query or body; nothing was written", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The stream was tombstoned", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The store's disk is full (`storage_full`): nothing was written; reads still work, and writes succeed again without a restart once space is freed", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn put_metadata(
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    QueryParams(NoQuery {}): QueryParams<NoQuery>,
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
        "no such endpoint: see the API's routes in /openapi.json",
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
