//! The answers many operations share, and the security requirement, added to every
//! operation when the document is built ([`complete`]), so that each
//! `#[utoipa::path]` lists only its own answers and a new route gets them too.
//!
//! - Every operation: 400, since the token check refuses a token in the URL
//!   (`token_in_url`) on any route, and the query extractor a parameter that is
//!   unknown, repeated or does not parse (`invalid_query`).
//! - Every operation but the public ones ([`PUBLIC`]): a bearer token or the session
//!   cookie (see [`crate::auth`]), hence 401 and 403.
//! - Every operation with a request body: 413 and 415.
//! - Every operation that uses the store (all but [`STORELESS`]): 503; those that
//!   write (`POST`, `PUT`, `DELETE`): 507 too.
//!
//! An operation that documents one of these statuses itself keeps its own answer.

use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Components, Content, OpenApi, Ref, RefOr, Response, ResponseBuilder, Type};

use crate::auth::SESSION_COOKIE;

/// Paths anyone may call without a token, as `auth.rs` classifies requests (the
/// documented-statuses test checks that the two agree).
const PUBLIC: &[&str] = &[
    "/health",
    "/openapi.json",
    "/auth/session",
    "/",
    "/ui/{file}",
];

/// Operations (by operation id) that never touch the store.
const STORELESS: &[&str] = &[
    "metrics",
    "openapi_json",
    "index",
    "asset",
    "login",
    "logout",
];

/// The names of the security schemes.
const BEARER: &str = "bearer";
const SESSION: &str = "session";

/// Adds the security schemes, the shared responses and each operation's share of
/// them to `doc`.
pub(super) fn complete(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Components::new);
    components.security_schemes.insert(
        BEARER.to_owned(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A token from the server's tokens file, as `Authorization: Bearer <token>`. Needed only when the server runs with a tokens file. Its scopes (read, write, admin) and stream prefixes decide what it reaches: see 403.",
                ))
                .build(),
        ),
    );
    components.security_schemes.insert(
        SESSION.to_owned(),
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            SESSION_COOKIE,
            "The same token in the HttpOnly cookie `POST /auth/session` sets, for browsers (whose EventSource cannot send headers).",
        ))),
    );
    for (name, response) in shared_responses() {
        components
            .responses
            .insert(name.to_owned(), RefOr::T(response));
    }
    doc.security = Some(vec![
        SecurityRequirement::new(BEARER, Vec::<String>::new()),
        SecurityRequirement::new(SESSION, Vec::<String>::new()),
    ]);
    for (path, item) in doc.paths.paths.iter_mut() {
        let public = PUBLIC.contains(&path.as_str());
        for (writes, operation) in operations(item) {
            add_shared(operation, public, writes);
        }
    }
}

/// The operations of a path item, each with whether it writes.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (bool, &mut Operation)> {
    [
        (false, &mut item.get),
        (true, &mut item.put),
        (true, &mut item.post),
        (true, &mut item.delete),
        (false, &mut item.options),
        (false, &mut item.head),
        (true, &mut item.patch),
        (false, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(writes, operation)| operation.as_mut().map(|o| (writes, o)))
}

fn add_shared(operation: &mut Operation, public: bool, writes: bool) {
    let stores = !operation
        .operation_id
        .as_deref()
        .is_some_and(|id| STORELESS.contains(&id));
    let body = operation.request_body.is_some();
    if public {
        // An empty list overrides the document's requirement: no token needed.
        operation.security = Some(Vec::new());
    }
    let wanted = [
        ("400", BAD_REQUEST, true),
        ("401", UNAUTHORIZED, !public),
        ("403", FORBIDDEN, !public),
        ("413", TOO_LARGE, body),
        ("415", MEDIA_TYPE, body),
        ("503", UNAVAILABLE, stores),
        ("507", STORAGE_FULL, stores && writes),
    ];
    for (status, name, applies) in wanted {
        if applies {
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
        }
    }
}

const BAD_REQUEST: &str = "BadRequest";
const UNAUTHORIZED: &str = "Unauthorized";
const FORBIDDEN: &str = "Forbidden";
const TOO_LARGE: &str = "BodyTooLarge";
const MEDIA_TYPE: &str = "UnsupportedMediaType";
const UNAVAILABLE: &str = "Unavailable";
const STORAGE_FULL: &str = "StorageFull";

/// A problem answer described by `description`.
fn problem(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        crate::error::PROBLEM_JSON,
        Content::new(Some(Ref::from_schema_name("Problem"))),
    )
}

fn shared_responses() -> [(&'static str, Response); 7] {
    [
        (
            BAD_REQUEST,
            problem(
                "The request is malformed: a query parameter is unknown, given more than once or does not parse (`invalid_query`), a value is given twice with different values (`conflicting_parameters`), a path segment is not a valid name (`invalid_stream_name`), or a token was put in the URL (`token_in_url`: tokens in URLs end up in logs)",
            )
            .build(),
        ),
        (
            UNAUTHORIZED,
            problem(
                "No token, an unknown token, or a malformed Authorization header (`unauthorized`); only when the server runs with a tokens file",
            )
            .header(
                "WWW-Authenticate",
                Header::new(utoipa::openapi::ObjectBuilder::new().schema_type(Type::String)),
            )
            .build(),
        ),
        (
            FORBIDDEN,
            problem(
                "The token lacks the scope the operation needs (`insufficient_scope`: read for reads and subscriptions, write for appends, admin for deletes, metadata writes and metrics), or the request reaches streams outside the token's prefixes (`stream_forbidden`)",
            )
            .build(),
        ),
        (
            TOO_LARGE,
            problem("The body is larger than the server's limit (`body_too_large`)").build(),
        ),
        (
            MEDIA_TYPE,
            problem(
                "The body's Content-Type is missing, not one the operation takes, or given more than once (`unsupported_media_type`)",
            )
            .build(),
        ),
        (
            UNAVAILABLE,
            problem(
                "The store is unavailable (`backend_unavailable`: retry later), the outcome of a write is unknown (`outcome_unknown`: retry with the same event ids), or the store stopped accepting writes after a disk failure (`storage_failed`: an operator must check the disk and the log)",
            )
            .build(),
        ),
        (
            STORAGE_FULL,
            problem(
                "The store's disk is full: nothing was written; reads still work, and writes resume by themselves once space is freed",
            )
            .build(),
        ),
    ]
}
