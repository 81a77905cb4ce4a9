//! Extractors whose failures are problem+json answers (see [`crate::error`]), never
//! axum's plain-text rejections.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body: checks the content type, the size limit, the syntax and the
/// shape (unknown fields are refused by the body types), in that order.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = content_type(req.headers())?;
        if !is_json(content_type) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "the body's content type is {content_type:?}: send `Content-Type: application/json`"
                ),
            ));
        }
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Reads a whole body within the configured limit.
pub(crate) async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the body is larger than the server's limit: split the append into several, or raise the limit",
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("the body could not be read: {}", rejection.body_text()),
            )
        }
    })
}

/// Whether a `Content-Type` value is JSON (`application/json`, with parameters).
pub(crate) fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Parses a JSON body, telling syntax errors from shape errors.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
            ),
            Category::Data if e.to_string().starts_with("unknown field") => ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_field",
                format!("{e}: remove it (check its spelling)"),
            ),
            Category::Data => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("the body does not have the expected shape: {e}"),
            ),
        }
    })
}

/// Query parameters; a parameter that does not parse, or one given more than once
/// (ambiguous: should the first or the last count?), is `invalid_query`.
pub(crate) struct QueryParams<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        query_pairs(parts.uri.query())?;
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| QueryParams(q))
            .map_err(|e| ApiError::invalid_query(e.body_text()))
    }
}

/// The decoded pairs of a query string, refusing a parameter given more than once.
pub(crate) fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::invalid_query(format!("the query does not parse: {e}")))?;
    let mut seen = HashSet::with_capacity(pairs.len());
    for (key, _) in &pairs {
        if !seen.insert(key.as_str()) {
            let times = pairs.iter().filter(|(k, _)| k == key).count();
            return Err(ApiError::invalid_query(format!(
                "the query parameter `{key}` is given {times} times: give it once"
            )));
        }
    }
    Ok(pairs)
}

/// The request's `Content-Type`, `""` when absent; more than one is
/// `unsupported_media_type`, since the body's type is then ambiguous.
pub(crate) fn content_type(headers: &HeaderMap) -> Result<&str, ApiError> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the request has several Content-Type headers: send one",
        ));
    }
    Ok(first.and_then(|v| v.to_str().ok()).unwrap_or(""))
}
