//! The web UI: one HTML page, a stylesheet, a script and an icon, embedded in the
//! binary from `crates/foldstore-server/ui/` (no build step).
//!
//! The page links the assets with `?v=<hash of their content>`, so assets are cached
//! for a year (`immutable`) and the page itself is revalidated (`no-cache`, with an
//! `ETag`). Every answer carries a strict Content-Security-Policy: scripts, styles
//! and connections only from this origin, no inline script.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");
const ICON: &str = include_str!("../ui/icon.svg");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A hash of every asset, as the version in their URLs and the page's `ETag`.
fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut hasher = DefaultHasher::new();
        (INDEX, APP_JS, APP_CSS, ICON).hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    })
}

/// The page, with the asset version filled in.
fn page() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| INDEX.replace("{{VERSION}}", version()))
}

fn with_headers(content_type: &'static str, cache: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /`: the UI's page.
#[utoipa::path(
    get,
    path = "/",
    tag = "ui",
    responses(
        (status = 200, description = "The web UI", content_type = "text/html", body = String),
        (status = 304, description = "Not modified (If-None-Match)")
    )
)]
pub(crate) async fn index(headers: HeaderMap) -> Response {
    let etag = format!("\"{}\"", version());
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if matches {
        let mut r = with_headers("text/html; charset=utf-8", "no-cache", "");
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        with_headers("text/html; charset=utf-8", "no-cache", page())
    };
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// `GET /ui/{file}`: the UI's script, stylesheet and icon.
#[utoipa::path(
    get,
    path = "/ui/{file}",
    tag = "ui",
    params(("file" = String, Path, description = "app.js, app.css or icon.svg")),
    responses(
        (status = 200, description = "The asset, cached for a year (its URL changes with its content)"),
        (status = 404, description = "No such asset", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn asset(path: Result<Path<String>, PathRejection>) -> Response {
    const IMMUTABLE: &str = "public, max-age=31536000, immutable";
    // A segment that does not decode names no asset either.
    let file = path.map(|Path(file)| file).unwrap_or_default();
    match file.as_str() {
        "app.js" => with_headers("text/javascript; charset=utf-8", IMMUTABLE, APP_JS),
        "app.css" => with_headers("text/css; charset=utf-8", IMMUTABLE, APP_CSS),
        "icon.svg" => with_headers("image/svg+xml", IMMUTABLE, ICON),
        _ => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no UI asset {file:?}: the UI has app.js, app.css and icon.svg"),
        )
        .into_response(),
    }
}
