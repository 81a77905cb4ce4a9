//! The one place that turns failures into HTTP answers: every error is an RFC 9457
//! `application/problem+json` body with a stable `code`.
//!
//! Core errors map by variant; axum's own rejections (body, query) are caught by the
//! crate's extractors (`extract.rs`) and mapped here too, so no handler ever answers
//! with axum's plain-text messages. Backend internals are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use foldstore_core::persistent::PersistentError;
use foldstore_core::{
    AppendError, BackendError, BackendErrorKind, CurrentRevision, DeleteError, ExpectedRevision,
    InvalidStreamName, MetadataError, ReadError, SubscriptionError,
};
use serde_json::{Map, Value, json};

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer: status, stable code, a title per code, a detail that says what to
/// fix, and extra members (such as `expected` and `actual` on a 409).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    /// Set by [`ApiError::with_title`]; otherwise the title of `code`.
    title: Option<&'static str>,
    detail: String,
    extra: Map<String, Value>,
}

impl ApiError {
    /// A problem with `status` and `code`; `detail` says what to fix.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            title: None,
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    /// The same problem with its own `title`: for applications built on this crate,
    /// whose codes the server does not know.
    ///
    /// ```
    /// use axum::http::StatusCode;
    /// use foldstore_server::error::ApiError;
    ///
    /// let full = ApiError::new(StatusCode::CONFLICT, "wip_limit", "finish a card first")
    ///     .with_title("The work-in-progress limit is reached");
    /// assert_eq!(full.body()["title"], "The work-in-progress limit is reached");
    /// assert_eq!(full.body()["type"], "urn:foldstore:problem:wip_limit");
    /// ```
    pub fn with_title(mut self, title: &'static str) -> Self {
        self.title = Some(title);
        self
    }

    /// Adds an extension member to the body.
    fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// 400 `invalid_query`.
    pub(crate) fn invalid_query(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", detail)
    }

    /// 400 `invalid_event`.
    pub(crate) fn invalid_event(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_event", detail)
    }

    /// The problem body.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            Value::String(format!("urn:foldstore:problem:{}", self.code)),
        );
        let title = self.title.unwrap_or_else(|| title(self.code));
        body.insert("title".into(), Value::String(title.to_owned()));
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("detail".into(), Value::String(self.detail.clone()));
        body.insert("code".into(), Value::String(self.code.to_owned()));
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

/// One title per code: the title of a problem type does not change between
/// occurrences (RFC 9457, section 3.1.4).
fn title(code: &str) -> &'static str {
    match code {
        "wrong_expected_revision" => "The stream is not at the expected revision",
        "duplicate_event_id" => "An event id is already stored",
        "stream_not_found" => "The stream does not exist",
        "stream_tombstoned" => "The stream was tombstoned",
        "invalid_stream_name" => "Invalid stream or category name",
        "invalid_event" => "Invalid event",
        "invalid_json" => "The body is not valid JSON",
        "invalid_body" => "The body does not have the expected shape",
        "unknown_field" => "The body has an unknown field",
        "body_too_large" => "The body is too large",
        "append_too_large" => "The append is too large",
        "unsupported_media_type" => "Unsupported media type",
        "invalid_query" => "Invalid query parameters",
        "conflicting_parameters" => "The request gives a parameter two different values",
        "not_found" => "No such resource",
        "unauthorized" => "A valid token is needed",
        "insufficient_scope" => "The token lacks a scope",
        "stream_forbidden" => "The token does not reach this stream",
        "token_in_url" => "Tokens do not go in URLs",
        "method_not_allowed" => "Method not allowed",
        "backend_unavailable" => "The store is unavailable",
        "outcome_unknown" => "The outcome is unknown",
        "storage_failed" => "The store stopped accepting writes",
        "storage_full" => "The store's disk is full",
        "invalid_cloudevent" => "Invalid CloudEvent",
        "subscriber_too_slow" => "The subscriber did not keep up",
        "subscription_not_found" => "No such persistent subscription group",
        "subscription_exists" => "The persistent subscription group exists already",
        "invalid_group_name" => "Invalid group name",
        "invalid_settings" => "Invalid persistent subscription settings",
        "invalid_key" => "Invalid event key",
        "subscription_served_elsewhere" => "Another server serves this group now",
        "persistent_subscriptions_disabled" => "This server has no persistent subscriptions",
        _ => "Internal error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
            .extensions_mut()
            .insert(crate::request_log::ProblemCode(self.code));
        response
    }
}

/// The wire form of an expected revision, as appends take it.
pub(crate) fn expected_json(expected: ExpectedRevision) -> Value {
    match expected {
        ExpectedRevision::Any => json!("any"),
        ExpectedRevision::NoStream => json!("no_stream"),
        ExpectedRevision::StreamExists => json!("stream_exists"),
        ExpectedRevision::Exact(n) => json!(n),
    }
}

fn actual_json(actual: CurrentRevision) -> Value {
    match actual {
        CurrentRevision::NoStream => json!("no_stream"),
        CurrentRevision::Current(n) => json!(n),
    }
}

fn wrong_expected(
    stream: &str,
    expected: ExpectedRevision,
    actual: CurrentRevision,
    detail: String,
) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "wrong_expected_revision", detail)
        .with("stream", json!(stream))
        .with("expected", expected_json(expected))
        .with("actual", actual_json(actual))
}

fn tombstoned(detail: String) -> ApiError {
    ApiError::new(StatusCode::GONE, "stream_tombstoned", detail)
}

fn unexpected(detail: &dyn std::error::Error) -> ApiError {
    tracing::error!(error = %Causes(detail), "unexpected error");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server failed unexpectedly; the error is in its log",
    )
}

/// Writing a response body failed: a bug, since bodies are written into memory.
impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        unexpected(&e)
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e.kind {
            BackendErrorKind::Unavailable => {
                tracing::warn!(error = %Causes(&e), "backend unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backend_unavailable",
                    "the store is unavailable; nothing was written: retry later",
                )
            }
            BackendErrorKind::OutcomeUnknown => {
                tracing::warn!(error = %Causes(&e), "outcome unknown");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "outcome_unknown",
                    "the request may or may not have taken effect: retry an append with the same event ids (it is idempotent)",
                )
            }
            BackendErrorKind::StorageFull => {
                // Refused whole, and nothing is in doubt; the store takes writes again
                // by itself once space is freed, so no restart (and no Retry-After:
                // when space returns is up to an operator).
                tracing::warn!(error = %e, "write refused: the disk is full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    "the store's disk is full; nothing of this request was written. Reads still work. Writes succeed again, without a restart, once an operator frees space on the store's disk: retry then (an append with the same event ids is idempotent)",
                )
            }
            BackendErrorKind::Storage => {
                // The store refuses writes until an operator restarts it (on SQLite
                // after a disk error): not retryable, so no Retry-After.
                tracing::error!(error = %Causes(&e), "storage failure");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_failed",
                    "the store's disk or database failed and it stopped accepting writes; nothing more was written: an operator must check the disk's health and the server log, then restart the server",
                )
            }
            _ => unexpected(&e),
        }
    }
}

/// An error and its causes, for the log: `error: cause: cause of the cause` (a cause
/// that its error's message already ends with is not repeated).
struct Causes<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.ends_with(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        f.write_str(&text)
    }
}

impl From<InvalidStreamName> for ApiError {
    fn from(e: InvalidStreamName) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_stream_name",
            e.to_string(),
        )
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        let detail = e.to_string();
        match e {
            AppendError::InvalidStreamName(n) => n.into(),
            AppendError::NoEvents | AppendError::InvalidEvent { .. } => {
                ApiError::invalid_event(detail)
            }
            AppendError::TooLarge { size, limit } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "append_too_large", detail)
                    .with("size", json!(size))
                    .with("limit", json!(limit))
            }
            AppendError::WrongExpectedRevision {
                stream,
                expected,
                actual,
            } => wrong_expected(stream.as_str(), expected, actual, detail),
            AppendError::DuplicateEventId { event_id, .. } => {
                ApiError::new(StatusCode::CONFLICT, "duplicate_event_id", detail)
                    .with("event_id", json!(event_id))
            }
            AppendError::StreamTombstoned { .. } => tombstoned(detail),
            AppendError::Backend(b) => b.into(),
            other => unexpected(&other),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        let detail = e.to_string();
        match e {
            ReadError::StreamNotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "stream_not_found", detail)
            }
            ReadError::StreamTombstoned { .. } => tombstoned(detail),
            ReadError::InvalidName(n) => n.into(),
            ReadError::InvalidConsumerGroup { .. } => ApiError::invalid_query(detail),
            ReadError::Backend(b) => b.into(),
            other => unexpected(&other),
        }
    }
}

impl From<DeleteError> for ApiError {
    fn from(e: DeleteError) -> Self {
        let detail = e.to_string();
        match e {
            DeleteError::WrongExpectedRevision {
                stream,
                expected,
                actual,
            } => wrong_expected(stream.as_str(), expected, actual, detail),
            DeleteError::StreamTombstoned { .. } => tombstoned(detail),
            DeleteError::Backend(b) => b.into(),
            other => unexpected(&other),
        }
    }
}

impl From<MetadataError> for ApiError {
    fn from(e: MetadataError) -> Self {
        let detail = e.to_string();
        match e {
            MetadataError::StreamTombstoned { .. } => tombstoned(detail),
            MetadataError::Backend(b) => b.into(),
            other => unexpected(&other),
        }
    }
}

impl From<SubscriptionError> for ApiError {
    fn from(e: SubscriptionError) -> Self {
        let detail = e.to_string();
        match e {
            SubscriptionError::StreamTombstoned { .. } => tombstoned(detail),
            SubscriptionError::Read { source, .. } => source.into(),
            other => unexpected(&other),
        }
    }
}

impl From<PersistentError> for ApiError {
    fn from(e: PersistentError) -> Self {
        let detail = e.to_string();
        match e {
            PersistentError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "subscription_not_found", detail)
            }
            PersistentError::AlreadyExists { .. } => {
                ApiError::new(StatusCode::CONFLICT, "subscription_exists", detail)
            }
            PersistentError::InvalidName(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_group_name", detail)
            }
            PersistentError::NotServing { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "subscription_served_elsewhere",
                format!(
                    "{detail} (another `foldstore serve` over this database holds the group's lock)"
                ),
            ),
            PersistentError::Store(source) => store_failure(source),
            other => unexpected(&other),
        }
    }
}

/// A store error the persistent subscriptions passed on, mapped by its own kind.
fn store_failure(source: Box<dyn std::error::Error + Send + Sync>) -> ApiError {
    let source = match source.downcast::<ReadError>() {
        Ok(e) => return (*e).into(),
        Err(other) => other,
    };
    let source = match source.downcast::<AppendError>() {
        Ok(e) => return (*e).into(),
        Err(other) => other,
    };
    let source = match source.downcast::<SubscriptionError>() {
        Ok(e) => return (*e).into(),
        Err(other) => other,
    };
    let source = match source.downcast::<MetadataError>() {
        Ok(e) => return (*e).into(),
        Err(other) => other,
    };
    match source.downcast::<BackendError>() {
        Ok(e) => (*e).into(),
        Err(other) => unexpected(other.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_gets_every_cause() {
        let io = std::io::Error::other("No space left on device");
        let e = BackendError::new(BackendErrorKind::Storage, "the commit failed").with_source(io);
        let text = Causes(&e).to_string();
        assert!(
            text.ends_with("the commit failed: No space left on device"),
            "{text}"
        );
    }

    #[test]
    fn a_full_disk_answers_507_storage_full_without_internals() {
        for e in [
            AppendError::Backend(BackendError::new(
                BackendErrorKind::StorageFull,
                "the disk is full (database or disk is full): nothing of this write was written",
            ))
            .into(),
            ApiError::from(DeleteError::Backend(BackendError::new(
                BackendErrorKind::StorageFull,
                "database or disk is full",
            ))),
        ] {
            assert_eq!(e.status(), StatusCode::INSUFFICIENT_STORAGE);
            assert_eq!(e.code(), "storage_full");
            let body = e.body();
            assert_eq!(body["status"], 507);
            assert_eq!(body["title"], "The store's disk is full");
            let detail = body["detail"].as_str().unwrap();
            assert!(
                detail.contains("nothing of this request was written")
                    && detail.contains("without a restart"),
                "{detail}"
            );
            assert!(
                !detail.contains("database or disk is full"),
                "internals leaked: {detail}"
            );
        }
    }

    #[test]
    fn a_store_that_stopped_writing_answers_503_storage_failed_without_internals() {
        let e = BackendError::new(
            BackendErrorKind::Storage,
            "the store stopped accepting writes after a disk error at 2026-01-01T00:00:00.000Z (disk I/O error)",
        );
        let api = ApiError::from(AppendError::Backend(e));
        assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(api.code(), "storage_failed");
        let body = api.body();
        assert_eq!(body["title"], "The store stopped accepting writes");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("restart the server"), "{detail}");
        assert!(
            !detail.contains("disk I/O error"),
            "internals leaked: {detail}"
        );
    }
}
