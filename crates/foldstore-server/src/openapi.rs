//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the wire types' `ToSchema` derives, completed with the answers and
//! the security requirement operations share (`openapi/shared.rs`), and served at
//! `/openapi.json`.

mod session;
mod shared;

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;

/// The document's fixed parts; the paths come from [`crate::routes::api`], but for
/// `/auth/session`, which `auth.rs` serves beside the API router.
#[derive(OpenApi)]
#[openapi(
    paths(session::login, session::logout),
    components(schemas(Problem)),
    info(
        title = "foldstore",
        description = "foldstore's HTTP API: appends (JSON or a CloudEvents 1.0 batch), reads of streams, `$all` and categories, live subscriptions as server-sent events, persistent subscriptions (competing consumers), Prometheus metrics, and the web UI. Every error is an RFC 9457 problem (`application/problem+json`) with a stable `code`.",
        license(name = "MIT OR Apache-2.0")
    ),
    tags(
        (name = "streams", description = "Appends and reads of one stream"),
        (name = "global", description = "Reads of `$all` and categories"),
        (name = "live", description = "Live subscriptions (server-sent events)"),
        (name = "subscriptions", description = "Persistent subscriptions: groups of competing consumers, polled with leases and acked by key"),
        (name = "operations", description = "Health, metrics, statistics, this document"),
        (name = "auth", description = "Browser sessions (only with a tokens file)"),
        (name = "ui", description = "The web UI")
    )
)]
pub(crate) struct ApiDoc;

/// The OpenAPI 3.1 document of every route the server answers.
///
/// ```
/// let doc = foldstore_server::openapi();
/// assert!(doc.paths.paths.contains_key("/streams/{stream}"));
/// let json = doc.to_json().unwrap();
/// assert!(json.contains("\"openapi\":\"3.1.0\""));
/// ```
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = crate::routes::api().into_openapi();
    shared::complete(&mut doc);
    doc
}

/// The document as JSON, built once.
fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        openapi()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json"))
)]
pub(crate) async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

/// An RFC 9457 problem, as every error is sent (documentation of
/// [`crate::error::ApiError::body`]).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct Problem {
    /// `urn:foldstore:problem:<code>`.
    #[serde(rename = "type")]
    problem_type: String,
    /// One title per code.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What went wrong and what to do about it.
    detail: String,
    /// The stable code, for programs (`wrong_expected_revision`, `invalid_json`, ...).
    code: String,
}

/// The answer of `GET /health`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct Health {
    /// `ok`.
    status: String,
    /// The position of the last committed event; null for an empty store.
    head_position: Option<String>,
}

/// A stream's metadata (documentation of `foldstore_core::StreamMetadata`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct StreamMetadataDoc {
    /// Reads return at most the last `max_count` events.
    max_count: Option<u64>,
    /// Reads skip events older than this many seconds.
    max_age_secs: Option<u64>,
    /// Reads skip revisions below this one.
    truncate_before: Option<u64>,
    /// Anything else, for applications.
    #[schema(value_type = Option<Object>)]
    custom: Option<serde_json::Value>,
}
