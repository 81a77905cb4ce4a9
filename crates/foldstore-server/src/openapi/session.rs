//! The documentation of `POST` and `DELETE /auth/session`, which `auth.rs` serves
//! beside the API router (they exist only when the server runs with a tokens file).
//! These functions are never called: they carry the `#[utoipa::path]` attributes.

#![allow(dead_code)]

use crate::openapi::Problem;

/// `POST /auth/session`: checks a token and sets it as the session cookie.
#[utoipa::path(
    post,
    path = "/auth/session",
    tag = "auth",
    request_body(content = crate::auth::SessionBody, content_type = "application/json"),
    responses(
        (status = 204, description = "The token is valid: the `foldstore_session` cookie (HttpOnly, SameSite=Strict, Secure over TLS) now carries it, so a browser's requests and EventSources are authenticated",
            headers(("Set-Cookie" = String, description = "The session cookie"))),
        (status = 400, description = "The body is not JSON (`invalid_json`), has an unknown field (`unknown_field`) or lacks `token`, or the token has characters a cookie cannot carry (`invalid_body`); or a token was put in the URL (`token_in_url`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The token is not in the server's tokens file (`unauthorized`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The server runs without a tokens file, so there is no session to open (`not_found`)", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) fn login() {}

/// `DELETE /auth/session`: clears the session cookie.
#[utoipa::path(
    delete,
    path = "/auth/session",
    tag = "auth",
    responses(
        (status = 204, description = "The session cookie is cleared",
            headers(("Set-Cookie" = String, description = "The session cookie, expired"))),
        (status = 404, description = "The server runs without a tokens file (`not_found`)", body = Problem, content_type = "application/problem+json")
    )
)]
pub(crate) fn logout() {}
