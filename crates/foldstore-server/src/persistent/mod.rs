//! Persistent subscriptions (competing consumers) over HTTP: managing groups, and
//! consuming them by polling with leases, or as one consumer's server-sent events.
//!
//! The groups are `foldstore_core::persistent`'s, served by the
//! [`PersistentSubscriptions`] given to [`crate::ServerConfig::persistent`]; without
//! one every route here answers 404 `persistent_subscriptions_disabled`.
//!
//! ```text
//! GET    /subscriptions                              every group (narrowed to the token)
//! GET    /subscriptions/{stream}                     the groups of a stream, or of $all
//! PUT    /subscriptions/{stream}/{group}             create (409 if it exists)
//! POST   /subscriptions/{stream}/{group}             update the fields given
//! GET    /subscriptions/{stream}/{group}             settings, consumers, counts
//! DELETE /subscriptions/{stream}/{group}             delete
//! POST   /subscriptions/{stream}/{group}/replay-parked
//! POST   /subscriptions/{stream}/{group}/messages?count=N&wait_ms=M   poll
//! POST   /subscriptions/{stream}/{group}/ack         {"keys": [...]}
//! POST   /subscriptions/{stream}/{group}/nack        {"keys": [...], "action": "park|retry|skip|stop"}
//! GET    /subscriptions/{stream}/{group}/subscribe   one consumer, as server-sent events
//! ```
//!
//! `{stream}` is a stream name or `$all`. A poll hands out up to `count` events,
//! waiting up to `wait_ms` for the first, as a *lease* (see `leases.rs`): they are the
//! poller's until it acks or nacks them or the group's message timeout passes, after
//! which the group delivers them again (counting a retry; parked after the max retry
//! count). Two pollers never hold one event at once; a poller that acks after its
//! lease ran out still finishes the event (at-least-once).
//!
//! Scopes: listing and reading a group needs `read`, consuming it (poll, ack, nack,
//! subscribe) `read`, and managing it (create, update, delete, replay) `admin`. A
//! prefix-limited token reaches the groups of streams within its prefixes only, and
//! no group on `$all` (whose events come from every stream); listings leave the
//! others out (see `auth.rs`).

mod leases;
mod wire;

pub(crate) use leases::Leases;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use foldstore_core::StreamName;
use foldstore_core::persistent::{
    GroupInfo, NackAction, PersistentEvent, PersistentSettings, PersistentSubscriptions, Target,
};
use futures::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{JsonBody, QueryParams};
use crate::handlers::NoQuery;
use crate::openapi::Problem;
use crate::reach::Reach;
use crate::request_log::Waited;
use wire::{
    AckBody, GroupAnswer, GroupList, Message, Messages, NackBody, Replayed, SettingsBody, WireNack,
    parse_keys,
};

/// Events per poll when `count` is not given.
const DEFAULT_COUNT: usize = 10;
/// The largest `count`.
const MAX_COUNT: usize = 1000;
/// The longest `wait_ms`.
const MAX_WAIT_MS: u64 = 60_000;

/// The persistent subscriptions, or 404 when the server was started without them.
fn subscriptions(state: &AppState) -> Result<&Arc<PersistentSubscriptions>, ApiError> {
    state.config.persistent.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "persistent_subscriptions_disabled",
            "this server was started without persistent subscriptions (ServerConfig::persistent); `foldstore serve` has them",
        )
    })
}

/// A `{stream}` segment: `$all` or a stream name.
fn target(name: String) -> Result<Target, ApiError> {
    if name == "$all" {
        return Ok(Target::All);
    }
    Ok(Target::Stream(StreamName::new(name)?))
}

fn undecodable(e: axum::extract::rejection::PathRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_stream_name",
        e.body_text(),
    )
}

/// The `{stream}` of `/subscriptions/{stream}`.
pub(crate) struct TargetPath(Target);

impl<S: Send + Sync> FromRequestParts<S> for TargetPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(undecodable)?;
        target(name).map(TargetPath)
    }
}

/// The `{stream}` and `{group}` of a group's routes.
pub(crate) struct GroupPath {
    target: Target,
    group: String,
}

impl<S: Send + Sync> FromRequestParts<S> for GroupPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((name, group)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(undecodable)?;
        Ok(GroupPath {
            target: target(name)?,
            group,
        })
    }
}

/// Whether the caller reaches the groups of `target`: those of the streams it reaches;
/// those of `$all` only when it reaches every stream.
fn reaches(reach: &Reach, target: &Target) -> bool {
    match (reach, target) {
        (Reach::Everything, _) => true,
        (Reach::Prefixes { prefixes, .. }, Target::Stream(s)) => {
            prefixes.iter().any(|p| s.as_str().starts_with(p.as_str()))
        }
        _ => false,
    }
}

fn answer(state: &AppState, info: &GroupInfo) -> GroupAnswer {
    GroupAnswer::new(info, state.leases.count(&info.target, &info.group))
}

/// `GET /subscriptions`.
#[utoipa::path(
    get,
    path = "/subscriptions",
    tag = "subscriptions",
    description = "Every persistent subscription group, with its settings and what this server knows of it. A prefix-limited token sees the groups of its streams only (none on `$all`).",
    responses(
        (status = 200, description = "The groups, by stream and name (an empty list when there are none)", body = GroupList),
        (status = 404, description = "The server was started without persistent subscriptions (`persistent_subscriptions_disabled`)", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn list_subscriptions(
    State(state): State<AppState>,
    reach: Reach,
    QueryParams(NoQuery {}): QueryParams<NoQuery>,
) -> Result<Json<GroupList>, ApiError> {
    let subs = subscriptions(&state)?;
    let groups = subs
        .list(None)
        .await?
        .iter()
        .filter(|info| reaches(&reach, &info.target))
        .map(|info| answer(&state, info))
        .collect();
    Ok(Json(GroupList::new(groups)))
}

/// `GET /subscriptions/{stream}`.
#[utoipa::path(
    get,
    path = "/subscriptions/{stream}",
    tag = "subscriptions",
    params(("stream" = String, Path, description = "The stream, or `$all`")),
    responses(
        (status = 200, description = "The stream's groups (an empty list when there are none)", body = GroupList),
        (status = 400, description = "Invalid stream name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The server was started without persistent subscriptions (`persistent_subscriptions_disabled`)", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn list_stream_subscriptions(
    State(state): State<AppState>,
    TargetPath(target): TargetPath,
    QueryParams(NoQuery {}): QueryParams<NoQuery>,
) -> Result<Json<GroupList>, ApiError> {
    let subs = subscriptions(&state)?;
    let groups = subs
        .list(Some(&target))
        .await?
        .iter()
        .map(|info| answer(&state, info))
        .collect();
    Ok(Json(GroupList::new(groups)))
}

/// `PUT /subscriptions/{stream}/{group}`.
#[utoipa::path(
    put,
    path = "/subscriptions/{stream}/{group}",
    tag = "subscriptions",
    params(
        ("stream" = String, Path, description = "The stream, or `$all`"),
        ("group" = String, Path, description = "The group's name (1 to 100 bytes)")
    ),
    request_body(content = SettingsBody, content_type = "application/json", description = "The settings; `{}` takes every default"),
    responses(
        (status = 201, description = "Created; the group is served at once", body = GroupAnswer),
        (status = 400, description = "Invalid stream or group name (`invalid_group_name`), body or settings (`invalid_settings`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The server was started without persistent subscriptions", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The group exists (`subscription_exists`): update it with POST, or delete it first", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn create_subscription(
    State(state): State<AppState>,
    GroupPath { target, group }: GroupPath,
    QueryParams(NoQuery {}): QueryParams<NoQuery>,
    JsonBody(body): JsonBody<SettingsBody>,
) -> Result<(StatusCode, Json<GroupAnswer>), ApiError> {
    let subs = subscriptions(&state)?;
    let settings = body.apply(&target, PersistentSettings::default())?;
    subs.create(&target, &group, settings).await?;
    state.leases.forget(&target, &group);
    let info = subs.info(&target, &group).await?;
    Ok((StatusCode::CREATED, Json(answer(&state, &info))))
}

/// `POST /subscriptions/{stream}/{group}`.
#[utoipa::path(
    post,
    path = "/subscriptions/{stream}/{group}",
    tag = "subscriptions",
    params(
        ("stream" = String, Path, description = "The stream, or `$all`"),
        ("group" = String, Path, description = "The group's name")
    ),
    request_body(content = SettingsBody, content_type = "application/json", description = "The settings to change; the others keep their value"),
    responses(
        (status = 200, description = "Updated; the group restarts from its checkpoint with the new settings (its consumers and leases here end, and unfinished events are delivered again)", body = GroupAnswer),
        (status = 400, description = "Invalid stream or group name, body or settings", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group (`subscription_not_found`), or no persistent subscriptions on this server", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn update_subscription(
    State(state): State<AppState>,
    GroupPath { target, group }: GroupPath,
    QueryParams(NoQuery {}): QueryParams<NoQuery>,
    JsonBody(body): JsonBody<SettingsBody>,
) -> Result<Json<GroupAnswer>, ApiError> {
    let subs = subscriptions(&state)?;
    let current = subs.settings(&target, &group).await?;
    let settings = body.apply(&target, current)?;
    subs.update(&target, &group, settings).await?;
    state.leases.forget(&target, &group);
    let info = subs.info(&target, &group).await?;
    Ok(Json(answer(&state, &info)))
}

/// `GET /subscriptions/{stream}/{group}`.
#[utoipa::path(
    get,
    path = "/subscriptions/{stream}/{group}",
    tag = "subscriptions",
    params(
        ("stream" = String, Path, description = "The stream, or `$all`"),
        ("group" = String, Path, description = "The group's name")
    ),
    responses(
        (status = 200, description = "The group: settings, consumers, events in flight and waiting, parked count, checkpoint", body = GroupAnswer),
        (status = 400, description = "Invalid stream or group name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group (`subscription_not_found`), or no persistent subscriptions on this server", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn get_subscription(
    State(state): State<AppState>,
    GroupPath { target, group }: GroupPath,
    QueryParams(NoQuery {}): QueryParams<NoQuery>,
) -> Result<Json<GroupAnswer>, ApiError> {
    let subs = subscriptions(&state)?;
    let info = subs.info(&target, &group).await?;
    Ok(Json(answer(&state, &info)))
}

/// `DELETE /subscriptions/{stream}/{group}`.
#[utoipa::path(
    delete,
    path = "/subscriptions/{stream}/{group}",
    tag = "subscriptions",
    params(
        ("stream" = String, Path, description = "The stream, or `$all`"),
        ("group" = String, Path, description = "The group's name")
    ),
    responses(
        (status = 204, description = "Deleted: its consumers are disconnected; its checkpoint and parked events stay (a group created again under the name resumes after the checkpoint)"),
        (status = 400, description = "Invalid stream or group name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group (`subscription_not_found`), or no persistent subscriptions on this server", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn delete_subscription(
    State(state): State<AppState>,
    GroupPath { target, group }: GroupPath,
    QueryParams(NoQuery {}): QueryParams<NoQuery>,
) -> Result<StatusCode, ApiError> {
    let subs = subscriptions(&state)?;
    subs.delete(&target, &group).await?;
    state.leases.forget(&target, &group);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /subscriptions/{stream}/{group}/replay-parked`.
#[utoipa::path(
    post,
    path = "/subscriptions/{stream}/{group}/replay-parked",
    tag = "subscriptions",
    params(
        ("stream" = String, Path, description = "The stream, or `$all`"),
        ("group" = String, Path, description = "The group's name")
    ),
    responses(
        (status = 200, description = "The parked events are queued for delivery again (with a fresh retry count)", body = Replayed),
        (status = 400, description = "Invalid stream or group name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group (`subscription_not_found`), or no persistent subscriptions on this server", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Another server over this database serves the group now (`subscription_served_elsewhere`): ask that one, or retry", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn replay_parked(
    State(state): State<AppState>,
    GroupPath { target, group }: GroupPath,
    QueryParams(NoQuery {}): QueryParams<NoQuery>,
) -> Result<Json<Replayed>, ApiError> {
    let subs = subscriptions(&state)?;
    let replayed = subs.replay_parked(&target, &group).await?;
    Ok(Json(Replayed::new(replayed)))
}

/// Query of a poll.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PollQuery {
    /// The most events to take, 1 to 1000 (default 10).
    count: Option<usize>,
    /// How long to wait for a first event, 0 to 60000 milliseconds (default 0: answer
    /// at once with what waits).
    wait_ms: Option<u64>,
}

/// `POST /subscriptions/{stream}/{group}/messages`.
#[utoipa::path(
    post,
    path = "/subscriptions/{stream}/{group}/messages",
    tag = "subscriptions",
    params(
        ("stream" = String, Path, description = "The stream, or `$all`"),
        ("group" = String, Path, description = "The group's name"),
        PollQuery
    ),
    description = "Takes up to `count` events of the group as a lease, waiting up to `wait_ms` for the first. They are this caller's until it acks or nacks them, or until `lease_ms` (the group's message timeout) passes: then the group delivers them again, counting a retry. No other poller holds them meanwhile. Events reach the pollers of the server that serves the group (with several servers over one PostgreSQL database, one serves each group): ack at the server you polled.",
    responses(
        (status = 200, description = "The leased events (none when nothing came within `wait_ms`)", body = Messages),
        (status = 400, description = "Invalid stream or group name, or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group (`subscription_not_found`), or no persistent subscriptions on this server", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn poll_messages(
    State(state): State<AppState>,
    GroupPath { target, group }: GroupPath,
    QueryParams(q): QueryParams<PollQuery>,
) -> Result<Response, ApiError> {
    let subs = subscriptions(&state)?;
    let count = match q.count.unwrap_or(DEFAULT_COUNT) {
        0 => {
            return Err(ApiError::invalid_query(
                "count=0: ask for at least one event",
            ));
        }
        n if n > MAX_COUNT => {
            return Err(ApiError::invalid_query(format!(
                "count={n}: a poll takes at most {MAX_COUNT} events"
            )));
        }
        n => n,
    };
    let wait = match q.wait_ms.unwrap_or(0) {
        ms if ms > MAX_WAIT_MS => {
            return Err(ApiError::invalid_query(format!(
                "wait_ms={ms}: wait at most {MAX_WAIT_MS} ms, then poll again"
            )));
        }
        ms => Duration::from_millis(ms),
    };
    let timeout = match state.leases.timeout(&target, &group) {
        Some(t) => t,
        None => {
            let settings = subs.settings(&target, &group).await?;
            let t = Duration::from_millis(settings.message_timeout_ms);
            state.leases.set_timeout(&target, &group, t);
            t
        }
    };
    state.leases.sweep(&target, &group);
    let mut consumer = subs.connect(&target, &group, count).await?;
    let started = std::time::Instant::now();
    let mut events: Vec<PersistentEvent> = Vec::new();
    if !wait.is_zero() {
        let mut shutdown = state.shutdown.subscribe();
        tokio::select! {
            first = tokio::time::timeout(wait, consumer.next()) => {
                events.extend(first.ok().flatten());
            }
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }
    let waited = started.elapsed();
    consumer.pause().await;
    while let Some(e) = consumer.try_next() {
        events.push(e);
    }
    let messages = events.iter().map(Message::of).collect();
    let lease = state
        .leases
        .hold(&target, &group, consumer, &events, timeout);
    let lease_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let mut response = Json(Messages::new(lease, lease_ms, messages)).into_response();
    response.extensions_mut().insert(Waited(waited));
    Ok(response)
}

/// `POST /subscriptions/{stream}/{group}/ack`.
#[utoipa::path(
    post,
    path = "/subscriptions/{stream}/{group}/ack",
    tag = "subscriptions",
    params(
        ("stream" = String, Path, description = "The stream, or `$all`"),
        ("group" = String, Path, description = "The group's name")
    ),
    request_body(content = AckBody, content_type = "application/json"),
    responses(
        (status = 204, description = "Acked: the events are finished (a key whose lease ran out still finishes its event; an unknown key changes nothing)"),
        (status = 400, description = "Invalid stream or group name, body, or key (`invalid_key`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group (`subscription_not_found`), or no persistent subscriptions on this server", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn ack_messages(
    State(state): State<AppState>,
    GroupPath { target, group }: GroupPath,
    QueryParams(NoQuery {}): QueryParams<NoQuery>,
    JsonBody(body): JsonBody<AckBody>,
) -> Result<StatusCode, ApiError> {
    let subs = subscriptions(&state)?;
    let keys = parse_keys(&body.keys)?;
    // The group first, then the lease: a lease that ends gives back what it holds.
    subs.ack(&target, &group, &keys).await?;
    state.leases.release(&target, &group, &keys);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /subscriptions/{stream}/{group}/nack`.
#[utoipa::path(
    post,
    path = "/subscriptions/{stream}/{group}/nack",
    tag = "subscriptions",
    params(
        ("stream" = String, Path, description = "The stream, or `$all`"),
        ("group" = String, Path, description = "The group's name")
    ),
    request_body(content = NackBody, content_type = "application/json"),
    responses(
        (status = 204, description = "Done: `park` parks the events, `retry` delivers them again (a retry), `skip` finishes them, `stop` ends the leases holding them (everything they hold goes to other consumers at once, without a retry)"),
        (status = 400, description = "Invalid stream or group name, body, or key (`invalid_key`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group (`subscription_not_found`), or no persistent subscriptions on this server", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn nack_messages(
    State(state): State<AppState>,
    GroupPath { target, group }: GroupPath,
    QueryParams(NoQuery {}): QueryParams<NoQuery>,
    JsonBody(body): JsonBody<NackBody>,
) -> Result<StatusCode, ApiError> {
    let subs = subscriptions(&state)?;
    let keys = parse_keys(&body.keys)?;
    if body.action == WireNack::Stop {
        // Checks the group exists; stops nothing on its own.
        subs.nack(&target, &group, &keys, NackAction::Stop).await?;
        state.leases.end_holding(&target, &group, &keys);
    } else {
        subs.nack(&target, &group, &keys, body.action.into())
            .await?;
        state.leases.release(&target, &group, &keys);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /subscriptions/{stream}/{group}/subscribe`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SubscribeQuery {
    /// How many unacked events this consumer holds at most, 1 to 1000 (default: the
    /// group's `consumer_buffer_size`).
    buffer_size: Option<usize>,
}

/// `GET /subscriptions/{stream}/{group}/subscribe`.
#[utoipa::path(
    get,
    path = "/subscriptions/{stream}/{group}/subscribe",
    tag = "subscriptions",
    params(
        ("stream" = String, Path, description = "The stream, or `$all`"),
        ("group" = String, Path, description = "The group's name"),
        SubscribeQuery
    ),
    description = "Connects one consumer to the group for as long as the response lasts. It holds at most `buffer_size` events that it has not acked or nacked (POST .../ack and .../nack with their keys); closing the connection gives what it holds to the other consumers.",
    responses(
        (status = 200, description = "Server-sent events: `message` (data: `{key, retry_count, event}`), heartbeat comments; the stream ends when the group is deleted or updated, or the server stops", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid stream or group name, or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group (`subscription_not_found`), or no persistent subscriptions on this server", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn subscribe_group(
    State(state): State<AppState>,
    GroupPath { target, group }: GroupPath,
    QueryParams(q): QueryParams<SubscribeQuery>,
) -> Result<Response, ApiError> {
    let subs = subscriptions(&state)?;
    let buffer = match q.buffer_size {
        Some(0) => {
            return Err(ApiError::invalid_query(
                "buffer_size=0: a consumer takes at least one event",
            ));
        }
        Some(n) if n > MAX_COUNT => {
            return Err(ApiError::invalid_query(format!(
                "buffer_size={n}: at most {MAX_COUNT}"
            )));
        }
        Some(n) => n,
        None => 0,
    };
    let consumer = subs.connect(&target, &group, buffer).await?;
    let guard = state.metrics.subscriber();
    let mut shutdown = state.shutdown.subscribe();
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    // The consumer lives in the stream: a client that goes away drops it.
    let body = futures::stream::unfold((consumer, guard), |(mut consumer, guard)| async move {
        let delivered = consumer.next().await?;
        let data = serde_json::to_string(&Message::of(&delivered)).unwrap_or_default();
        let event = Event::default().event("message").data(data);
        Some((Ok::<_, Infallible>(event), (consumer, guard)))
    })
    .take_until(Box::pin(stopped));
    Ok(Sse::new(body)
        .keep_alive(KeepAlive::new().interval(state.config.heartbeat))
        .into_response())
}
