//! The streams listing (`GET /api/streams`) and the dashboard's statistics (`GET
//! /api/stats`).
//!
//! Listing streams goes through [`EventStore::list_streams`], so it works on every
//! backend: the trait's default scans `$all`, and a backend with a table of streams
//! can answer from it. Each listed stream is then read backwards for one event, which
//! gives its last revision, type and time and tells deleted and tombstoned streams
//! apart. The dashboard's stream count is cached for a few seconds, since on a
//! backend without a table of streams counting costs a scan.
//!
//! Both answer a prefix-limited token about its own streams only ([`Reach`]): the
//! listing merges its prefixes in name order, and the figures count its streams and
//! leave out what only the whole store knows (the head position, the server's
//! append counters, the live subscribers).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use foldstore_core::{EventStore, ReadError, ReadStreamOptions, StreamName, validate_category};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::openapi::Problem;
use crate::reach::Reach;

/// Streams per page when `limit` is not given.
const DEFAULT_STREAMS: usize = 50;
/// The largest `limit` of a streams page.
const MAX_STREAMS: usize = 500;
/// The dashboard counts streams up to this many, then says "at least".
const COUNT_CAP: usize = 100_000;
/// How long the dashboard's stream count is reused.
const COUNT_TTL: Duration = Duration::from_secs(5);

/// The cached stream counts, by the prefixes counted under (`[""]` for all).
#[derive(Default)]
pub(crate) struct Catalog {
    counts: Mutex<HashMap<Vec<String>, (Instant, usize)>>,
}

impl Catalog {
    /// Streams whose names start with one of `prefixes` (which do not overlap), up
    /// to [`COUNT_CAP`].
    async fn stream_count(
        &self,
        store: &dyn EventStore,
        prefixes: Vec<String>,
    ) -> Result<usize, ReadError> {
        if let Ok(cached) = self.counts.lock()
            && let Some((at, n)) = cached.get(&prefixes)
            && at.elapsed() < COUNT_TTL
        {
            return Ok(*n);
        }
        let mut n = 0;
        for prefix in &prefixes {
            if n >= COUNT_CAP {
                break;
            }
            n += store.list_streams(prefix, None, COUNT_CAP - n).await?.len();
        }
        if let Ok(mut cached) = self.counts.lock() {
            cached.retain(|_, (at, _)| at.elapsed() < COUNT_TTL);
            cached.insert(prefixes, (Instant::now(), n));
        }
        Ok(n)
    }
}

/// Query of `GET /api/streams`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamsQuery {
    /// Only streams whose name starts with this.
    prefix: Option<String>,
    /// Only streams of this category (named `category-...`); not with `prefix`.
    category: Option<String>,
    /// The page after this stream name (the `next` of the previous page).
    after: Option<String>,
    /// Streams per page, 1 to 500 (default 50).
    limit: Option<usize>,
}

/// The state of a listed stream.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StreamState {
    /// Readable.
    Active,
    /// Soft-deleted: reads answer 404 until it is written again.
    Deleted,
    /// Tombstoned: never writable again.
    Tombstoned,
}

/// One stream of the listing.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StreamSummary {
    name: String,
    state: StreamState,
    /// The revision of the last visible event.
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
    /// The type of the last visible event.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_type: Option<String>,
    /// When the last visible event was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_recorded_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A page of streams.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StreamsPage {
    streams: Vec<StreamSummary>,
    /// The `after` of the next page; absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// `GET /api/streams`.
#[utoipa::path(
    get,
    path = "/api/streams",
    tag = "streams",
    params(StreamsQuery),
    description = "Streams in name order. A prefix-limited token sees its own streams only; a `prefix` or `category` outside its prefixes is refused with 403.",
    responses(
        (status = 200, description = "Streams in name order, with their last event", body = StreamsPage),
        (status = 400, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The prefix or category is outside the token's prefixes", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn list_streams(
    State(state): State<AppState>,
    reach: Reach,
    QueryParams(q): QueryParams<StreamsQuery>,
) -> Result<Json<StreamsPage>, ApiError> {
    let asked = match (q.prefix, q.category) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_query(
                "give prefix or category, not both (a category is the prefix `category-`)",
            ));
        }
        (Some(p), None) => Some(p),
        (None, Some(c)) => {
            validate_category(&c)?;
            Some(format!("{c}-"))
        }
        (None, None) => None,
    };
    let prefixes = reach.prefixes_for(asked.as_deref())?;
    let limit = match q.limit.unwrap_or(DEFAULT_STREAMS) {
        0 => {
            return Err(ApiError::invalid_query(
                "limit=0: ask for at least one stream",
            ));
        }
        n if n > MAX_STREAMS => {
            return Err(ApiError::invalid_query(format!(
                "limit={n}: the largest page is {MAX_STREAMS} streams; follow `next` for more"
            )));
        }
        n => n,
    };
    let after = q.after.map(StreamName::new).transpose()?;
    let mut names = Vec::new();
    for prefix in &prefixes {
        names.extend(
            state
                .store
                .list_streams(prefix, after.as_ref(), limit + 1)
                .await?,
        );
    }
    names.sort();
    names.dedup();
    let next = if names.len() > limit {
        names.truncate(limit);
        names.last().map(|n| n.as_str().to_owned())
    } else {
        None
    };
    let mut streams = Vec::with_capacity(names.len());
    for name in names {
        streams.push(summary(state.store.as_ref(), name).await?);
    }
    Ok(Json(StreamsPage { streams, next }))
}

async fn summary(store: &dyn EventStore, name: StreamName) -> Result<StreamSummary, ApiError> {
    let last = store
        .read_stream(&name, ReadStreamOptions::backwards().max_count(1))
        .await;
    let (state, event) = match last {
        Ok(mut events) => (StreamState::Active, events.pop()),
        Err(ReadError::StreamNotFound { .. }) => (StreamState::Deleted, None),
        Err(ReadError::StreamTombstoned { .. }) => (StreamState::Tombstoned, None),
        Err(e) => return Err(e.into()),
    };
    Ok(StreamSummary {
        name: name.as_str().to_owned(),
        state,
        revision: event.as_ref().map(|e| e.revision),
        last_type: event.as_ref().map(|e| e.event_type.clone()),
        last_recorded_at: event.as_ref().map(|e| e.recorded_at),
    })
}

/// The dashboard's figures. For a prefix-limited token, `streams` counts its own
/// streams, `prefixes` names them, and the store-wide figures are absent.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Stats {
    /// The position of the last committed event; absent for an empty store and for a
    /// prefix-limited token.
    #[serde(skip_serializing_if = "Option::is_none")]
    head_position: Option<String>,
    /// Streams ever written (deleted ones included), counted up to 100,000.
    streams: usize,
    /// Whether `streams` stopped at the cap.
    streams_capped: bool,
    /// The prefixes `streams` is counted under, for a prefix-limited token.
    #[serde(skip_serializing_if = "Option::is_none")]
    prefixes: Option<Vec<String>>,
    /// Live subscriptions now open; absent for a prefix-limited token.
    #[serde(skip_serializing_if = "Option::is_none")]
    subscribers: Option<i64>,
    /// Successful appends through this server since it started; absent for a
    /// prefix-limited token.
    #[serde(skip_serializing_if = "Option::is_none")]
    appends: Option<u64>,
    /// Events written through this server since it started (its rate is the
    /// dashboard's events per second); absent for a prefix-limited token.
    #[serde(skip_serializing_if = "Option::is_none")]
    events_appended: Option<u64>,
    /// Seconds since the server started.
    uptime_seconds: f64,
}

/// `GET /api/stats`.
#[utoipa::path(
    get,
    path = "/api/stats",
    tag = "operations",
    description = "The dashboard's figures. A prefix-limited token gets the count of its own streams and no store-wide figures.",
    responses(
        (status = 200, description = "The dashboard's figures", body = Stats),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn stats(
    State(state): State<AppState>,
    reach: Reach,
) -> Result<Json<Stats>, ApiError> {
    let prefixes = reach.prefixes_for(None)?;
    let streams = state
        .catalog
        .stream_count(state.store.as_ref(), prefixes.clone())
        .await?;
    let uptime_seconds = state.metrics.uptime().as_secs_f64();
    if !reach.is_everything() {
        return Ok(Json(Stats {
            head_position: None,
            streams,
            streams_capped: streams >= COUNT_CAP,
            prefixes: Some(prefixes),
            subscribers: None,
            appends: None,
            events_appended: None,
            uptime_seconds,
        }));
    }
    let head = state.store.head_position().await?;
    Ok(Json(Stats {
        head_position: head.map(|p| p.to_string()),
        streams,
        streams_capped: streams >= COUNT_CAP,
        prefixes: None,
        subscribers: Some(state.metrics.subscriber_count()),
        appends: Some(state.metrics.appends()),
        events_appended: Some(state.metrics.events_appended()),
        uptime_seconds,
    }))
}
