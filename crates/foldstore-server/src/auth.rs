//! Bearer tokens: who may call the API, with which scopes, on which streams.
//!
//! Without a tokens file the server needs no token (and the CLI refuses to bind it to
//! anything but loopback unless told `--insecure`). With one ([`Tokens`], given to
//! [`crate::ServerConfig::tokens`]), every request but the public ones (`/health`,
//! `/openapi.json`, the web UI's static files and the login endpoint) must carry a
//! token, as `Authorization: Bearer <token>` or as the `foldstore_session` cookie that
//! `POST /auth/session` sets for browsers (whose `EventSource` cannot send headers).
//! A token in the URL (`?token=`, `?access_token=`) is refused: URLs end up in logs.
//!
//! # The tokens file
//!
//! One token per line; `#` starts a comment. Fields are separated by spaces:
//!
//! ```text
//! # name       hash (SHA-256 of the token)                                   scopes      stream prefixes (optional)
//! billing-ro   sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae  read        account-,invoice-
//! ops          sha256:fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9  admin
//! ```
//!
//! - **name**: for people and logs (the token itself is never logged).
//! - **hash**: `sha256:` and the hex SHA-256 of the whole token. The file holds no
//!   secret: a token is 256 random bits, so a fast hash is enough (a slow password hash
//!   such as argon2 protects guessable secrets, which these are not).
//! - **scopes**: comma-separated `read`, `write`, `admin`. `read`: reads, metadata
//!   reads, subscriptions, and listing and consuming persistent subscription groups
//!   (poll, ack, nack); `write`: appends; `admin`: deletes, tombstones, metadata
//!   writes, `/metrics`, and managing persistent subscription groups (create, update,
//!   delete, replay parked events), and implies `read` and `write`.
//! - **stream prefixes**: comma-separated; when given, the token only reaches streams
//!   whose name starts with one of them (see below). Absent means every stream.
//!
//! `foldstore token create --scopes read,write --prefix account-` prints a fresh token
//! once, and the line to add here ([`token_line`] writes it).
//!
//! # Stream prefixes on global reads
//!
//! A prefix-limited token reading `/all` or `/all/subscribe` gets the **prefix filter
//! added**: with one prefix, a request without `prefix=` reads as if it had given it;
//! a `prefix=` inside one of the token's prefixes is kept; one that is broader than
//! exactly one of them is narrowed to it. Anything else (a token with several prefixes
//! and no `prefix=`, or a prefix outside them) is **refused** with 403 saying which
//! prefixes to use. `/categories/{c}` is served as is when every stream of the
//! category starts with a token prefix; when only part of it does, it is answered as
//! `/all?category=c&prefix=p` (the same page shape), and refused when it asks for a
//! consumer group or no prefix fits. The one stream named exactly like its category
//! (`account`, without a dash) is thus not visible to a token limited to `account-`.
//!
//! # Listings and counts
//!
//! Routes that name or count streams across the store (`/api/streams`,
//! `/api/stats`) answer a prefix-limited token about its own streams only: the
//! listing covers its prefixes (an explicit `prefix=` outside them is refused with
//! 403), and the figures count its streams and leave out the store-wide ones (see
//! `crate::reach`). The persistent subscription groups (`/subscriptions/{stream}/...`)
//! follow their stream: a prefix-limited token reaches the groups of its streams,
//! never those on `$all` (their events come from any stream), and `GET /subscriptions`
//! lists only the groups it reaches. A path that no rule here classifies is refused to a
//! prefix-limited token, so a new route is closed to it until it is classified.
//!
//! # Answers
//!
//! No token or an unknown one: 401 `unauthorized` with `WWW-Authenticate: Bearer`.
//! A valid token without the scope: 403 `insufficient_scope`; outside its prefixes:
//! 403 `stream_forbidden`. Tokens are hashed and compared with every entry in constant
//! time, so the answer time does not tell how much of a token was right.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::reach::Reach;

/// The cookie `POST /auth/session` sets for browsers.
pub const SESSION_COOKIE: &str = "foldstore_session";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// Reads, metadata reads and subscriptions.
    Read,
    /// Appends.
    Write,
    /// Deletes, tombstones, metadata writes, `/metrics`; implies read and write.
    Admin,
}

impl Scope {
    /// The name in the tokens file.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// Parses `read`, `write` or `admin`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// Why a tokens file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokensFileError {
    /// The file could not be read.
    #[error("could not read the tokens file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A line does not follow the format.
    #[error(
        "tokens file line {line}: {problem}; each line is `NAME sha256:HEX SCOPES [PREFIXES]` (create one with `foldstore token create`)"
    )]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// The file has no token, so nobody could use the server.
    #[error(
        "the tokens file has no token: add a line made by `foldstore token create`, or drop --tokens-file"
    )]
    Empty,
}

/// One entry of the tokens file: the token's hash, never the token.
#[derive(Clone)]
pub struct TokenEntry {
    name: String,
    hash: [u8; 32],
    scopes: Vec<Scope>,
    prefixes: Vec<String>,
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("prefixes", &self.prefixes)
            .finish_non_exhaustive()
    }
}

impl TokenEntry {
    /// The entry's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the token has `scope` (admin has every scope).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes
            .iter()
            .any(|s| *s == scope || *s == Scope::Admin)
    }

    /// The stream prefixes the token is limited to; empty for every stream.
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// Whether the token reaches `stream`.
    pub fn reaches(&self, stream: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| stream.starts_with(p))
    }
}

/// The tokens the server accepts.
#[derive(Debug, Clone)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

/// `sha256:` and the hex SHA-256 of `token`, as the tokens file holds it.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The tokens-file line for `token`.
///
/// ```
/// use foldstore_server::auth::{Scope, Tokens, token_line};
///
/// let line = token_line("billing", "fst_secret", &[Scope::Read], &["account-".into()]);
/// let tokens = Tokens::parse(&line).unwrap();
/// let entry = tokens.authenticate("fst_secret").unwrap();
/// assert!(entry.reaches("account-1") && !entry.reaches("order-1"));
/// ```
pub fn token_line(name: &str, token: &str, scopes: &[Scope], prefixes: &[String]) -> String {
    let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let mut line = format!("{name} {} {}", hash_token(token), scopes.join(","));
    if !prefixes.is_empty() {
        line.push(' ');
        line.push_str(&prefixes.join(","));
    }
    line
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// Reads a tokens file.
    pub fn load(path: &Path) -> Result<Self, TokensFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses the text of a tokens file (see the module docs for the format).
    pub fn parse(text: &str) -> Result<Self, TokensFileError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let err = |problem: String| TokensFileError::Line { line, problem };
            let fields: Vec<&str> = content.split_whitespace().collect();
            if !(3..=4).contains(&fields.len()) {
                return Err(err(format!(
                    "expected 3 or 4 fields, found {}",
                    fields.len()
                )));
            }
            let hash = fields[1]
                .strip_prefix("sha256:")
                .and_then(parse_hex32)
                .ok_or_else(|| {
                    err("the hash is not `sha256:` followed by 64 hex digits".to_owned())
                })?;
            let scopes = fields[2]
                .split(',')
                .map(|s| {
                    Scope::parse(s).ok_or_else(|| {
                        err(format!("unknown scope {s:?}: use read, write or admin"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let prefixes = fields
                .get(3)
                .map(|p| {
                    p.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            entries.push(TokenEntry {
                name: fields[0].to_owned(),
                hash,
                scopes,
                prefixes,
            });
        }
        if entries.is_empty() {
            return Err(TokensFileError::Empty);
        }
        Ok(Self { entries })
    }

    /// The entry of `token`, if it is one of ours. Every entry is compared, in
    /// constant time, whatever matches.
    pub fn authenticate(&self, token: &str) -> Option<&TokenEntry> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        found
    }
}

/// Decodes `%XX` escapes of a path segment, as axum's `Path` does.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What a request needs.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    /// Nothing: public.
    Public,
    /// A scope on one stream.
    Stream(Scope, String),
    /// Read on `$all` (prefix filter added).
    All,
    /// Read on a category.
    Category(String),
    /// A scope, on every stream (no prefix limit allowed).
    Unlimited(Scope),
    /// Read, answered only about the token's streams: the handler narrows what it
    /// names or counts to the request's [`Reach`].
    Narrowed,
    /// A path no route classifies (answered 404 or 405): any token without prefixes;
    /// a prefix-limited token is refused, so a route added without a class here
    /// cannot show it streams outside its prefixes.
    Unclassified,
}

/// Classifies a request by method and path.
fn need(method: &Method, path: &str) -> Need {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = *method == Method::GET || *method == Method::HEAD;
    let decoded = |s: &str| percent_decode(s).unwrap_or_else(|| s.to_owned());
    match segments.as_slice() {
        ["health"] | ["openapi.json"] | ["auth", "session"] => Need::Public,
        [""] | ["favicon.ico"] if get => Need::Public,
        ["ui" | "assets" | "static", ..] if get => Need::Public,
        ["streams", s] => {
            let scope = match *method {
                Method::POST => Scope::Write,
                Method::DELETE => Scope::Admin,
                _ => Scope::Read,
            };
            Need::Stream(scope, decoded(s))
        }
        ["streams", s, "metadata"] => {
            let scope = if get { Scope::Read } else { Scope::Admin };
            Need::Stream(scope, decoded(s))
        }
        ["streams", s, "subscribe"] => Need::Stream(Scope::Read, decoded(s)),
        ["all"] | ["all", "subscribe"] => Need::All,
        ["categories", c] => Need::Category(decoded(c)),
        ["metrics"] => Need::Unlimited(Scope::Admin),
        ["api", "streams" | "stats"] if get => Need::Narrowed,
        ["subscriptions"] if get => Need::Narrowed,
        ["subscriptions", s] => group_need(Scope::Read, &decoded(s)),
        ["subscriptions", s, _] => {
            let scope = if get { Scope::Read } else { Scope::Admin };
            group_need(scope, &decoded(s))
        }
        ["subscriptions", s, _, "replay-parked"] => group_need(Scope::Admin, &decoded(s)),
        [
            "subscriptions",
            s,
            _,
            "messages" | "ack" | "nack" | "subscribe",
        ] => group_need(Scope::Read, &decoded(s)),
        _ => Need::Unclassified,
    }
}

/// What a persistent-subscription route on `{stream}` needs: `scope` on the stream,
/// or on every stream for `$all` (whose groups deliver events of any stream).
fn group_need(scope: Scope, stream: &str) -> Need {
    if stream == "$all" {
        Need::Unlimited(scope)
    } else {
        Need::Stream(scope, stream.to_owned())
    }
}

fn unauthorized(detail: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"foldstore\""),
    );
    response
}

fn insufficient_scope(entry: &TokenEntry, scope: Scope) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        format!(
            "token {:?} lacks the {} scope this request needs: use a token with it (see `foldstore token create --scopes`)",
            entry.name,
            scope.as_str()
        ),
    )
}

fn stream_forbidden(entry: &TokenEntry, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "stream_forbidden",
        format!(
            "token {:?} only reaches streams starting with {}: {what}",
            entry.name,
            entry.prefixes.join(", ")
        ),
    )
}

/// The token of a request: the bearer token, else the session cookie.
fn presented_token(request: &Request) -> Result<Option<String>, &'static str> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let text = value.to_str().unwrap_or("");
        return match text.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Ok(Some(token.trim().to_owned()))
            }
            _ => Err("the Authorization header must be `Bearer <token>`"),
        };
    }
    for value in request.headers().get_all(header::COOKIE) {
        for pair in value.to_str().unwrap_or("").split(';') {
            if let Some((name, token)) = pair.trim().split_once('=')
                && name == SESSION_COOKIE
            {
                return Ok(Some(token.to_owned()));
            }
        }
    }
    Ok(None)
}

/// Query pairs of a URI; a query that does not decode, or names a parameter twice,
/// is refused (a rewritten query must mean what the client meant).
fn query_pairs(uri: &Uri) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|e| ApiError::invalid_query(format!("the query does not decode: {e}")))?;
    for (i, (key, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(k, _)| k == key) {
            return Err(ApiError::invalid_query(format!(
                "`{key}` is given more than once: give it once"
            )));
        }
    }
    Ok(pairs)
}

/// `uri` with path `path` and query `pairs`.
fn with_query(uri: &Uri, path: &str, pairs: &[(String, String)]) -> Result<Uri, ApiError> {
    let query = serde_urlencoded::to_string(pairs)
        .map_err(|e| ApiError::invalid_query(format!("could not rewrite the query: {e}")))?;
    let mut parts = uri.clone().into_parts();
    let path_and_query = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| ApiError::invalid_query("could not rewrite the query"))?,
    );
    Uri::from_parts(parts).map_err(|_| ApiError::invalid_query("could not rewrite the query"))
}

/// The prefix a limited token reads `$all` with, given the request's `prefix`.
fn effective_prefix(entry: &TokenEntry, asked: Option<&str>) -> Result<String, ApiError> {
    let prefixes = &entry.prefixes;
    match asked {
        Some(p) if prefixes.iter().any(|t| p.starts_with(t.as_str())) => Ok(p.to_owned()),
        Some(p) => {
            let narrower: Vec<&String> = prefixes.iter().filter(|t| t.starts_with(p)).collect();
            match narrower.as_slice() {
                [only] => Ok((*only).clone()),
                _ => Err(stream_forbidden(
                    entry,
                    &format!("prefix={p:?} is outside them: ask for prefix=<one of them>"),
                )),
            }
        }
        None => match prefixes.as_slice() {
            [only] => Ok(only.clone()),
            _ => Err(stream_forbidden(
                entry,
                "add prefix=<one of them> to read the global log",
            )),
        },
    }
}

/// Whether every stream of `category` starts with `prefix`.
fn covers_category(prefix: &str, category: &str) -> bool {
    category.starts_with(prefix)
}

/// Whether some streams of `category` start with `prefix`.
fn meets_category(prefix: &str, category: &str) -> bool {
    prefix
        .strip_prefix(category)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
}

/// Checks `request` against the token's scopes and prefixes, rewriting the query of
/// global reads of a prefix-limited token.
fn authorize(entry: &TokenEntry, need: Need, request: &mut Request) -> Result<(), ApiError> {
    let unlimited = entry.prefixes.is_empty();
    match need {
        Need::Public => Ok(()),
        Need::Unclassified if unlimited => Ok(()),
        Need::Unclassified => Err(stream_forbidden(
            entry,
            "this path is not open to prefix-limited tokens",
        )),
        Need::Narrowed => {
            if entry.has(Scope::Read) {
                Ok(())
            } else {
                Err(insufficient_scope(entry, Scope::Read))
            }
        }
        Need::Stream(scope, stream) => {
            if !entry.has(scope) {
                return Err(insufficient_scope(entry, scope));
            }
            if !entry.reaches(&stream) {
                return Err(stream_forbidden(
                    entry,
                    &format!("{stream:?} is not one of them"),
                ));
            }
            Ok(())
        }
        Need::Unlimited(scope) => {
            if !entry.has(scope) {
                return Err(insufficient_scope(entry, scope));
            }
            if !unlimited {
                return Err(stream_forbidden(
                    entry,
                    "this endpoint covers every stream: use a token without prefixes",
                ));
            }
            Ok(())
        }
        Need::All => {
            if !entry.has(Scope::Read) {
                return Err(insufficient_scope(entry, Scope::Read));
            }
            if unlimited {
                return Ok(());
            }
            let mut pairs = query_pairs(request.uri())?;
            let asked = pairs
                .iter()
                .find(|(k, _)| k == "prefix")
                .map(|(_, v)| v.clone());
            let prefix = effective_prefix(entry, asked.as_deref())?;
            pairs.retain(|(k, _)| k != "prefix");
            pairs.push(("prefix".to_owned(), prefix));
            let path = request.uri().path().to_owned();
            *request.uri_mut() = with_query(request.uri(), &path, &pairs)?;
            Ok(())
        }
        Need::Category(category) => {
            if !entry.has(Scope::Read) {
                return Err(insufficient_scope(entry, Scope::Read));
            }
            if unlimited || entry.prefixes.iter().any(|p| covers_category(p, &category)) {
                return Ok(());
            }
            let meeting: Vec<&String> = entry
                .prefixes
                .iter()
                .filter(|p| meets_category(p, &category))
                .collect();
            let pairs = query_pairs(request.uri())?;
            let grouped = pairs.iter().any(|(k, _)| k.starts_with("group_"));
            match meeting.as_slice() {
                [prefix] if !grouped => {
                    let mut pairs = pairs;
                    pairs.push(("category".to_owned(), category.clone()));
                    pairs.push(("prefix".to_owned(), (*prefix).clone()));
                    *request.uri_mut() = with_query(request.uri(), "/all", &pairs)?;
                    Ok(())
                }
                _ => Err(stream_forbidden(
                    entry,
                    &format!(
                        "category {category:?} holds other streams: read /all?category={category}&prefix=<one of them> (without a consumer group)"
                    ),
                )),
            }
        }
    }
}

/// The middleware: authenticates, then authorizes.
async fn check(State(tokens): State<Arc<Tokens>>, mut request: Request, next: Next) -> Response {
    let token_in_url = request.uri().query().unwrap_or("").split('&').any(|pair| {
        let key = pair.split('=').next().unwrap_or("").replace('+', " ");
        let key = percent_decode(&key).unwrap_or(key);
        key == "token" || key == "access_token"
    });
    if token_in_url {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "token_in_url",
            "tokens in URLs end up in logs and browser history: send `Authorization: Bearer <token>` (browsers: POST /auth/session once), and revoke this token",
        )
        .into_response();
    }
    let need = need(request.method(), request.uri().path());
    if need == Need::Public {
        request.extensions_mut().insert(Reach::Anonymous);
        return next.run(request).await;
    }
    let token = match presented_token(&request) {
        Ok(Some(token)) => token,
        Ok(None) => {
            tracing::debug!(path = request.uri().path(), "refused: no token");
            return unauthorized(
                "this server needs a token: send `Authorization: Bearer <token>` (the CLI: --token or FOLDSTORE_TOKEN)",
            );
        }
        Err(problem) => return unauthorized(problem),
    };
    let Some(entry) = tokens.authenticate(&token) else {
        tracing::debug!(path = request.uri().path(), "refused: unknown token");
        return unauthorized(
            "the token is not in the server's tokens file: check it, or ask for a new one",
        );
    };
    let response = match authorize(entry, need, &mut request) {
        Ok(()) => {
            let reach = Reach::limited(&entry.name, &entry.prefixes);
            request.extensions_mut().insert(reach);
            next.run(request).await
        }
        Err(e) => {
            tracing::debug!(path = request.uri().path(), token = %entry.name, code = e.code(), "refused");
            e.into_response()
        }
    };
    crate::request_log::with_token_name(response, &entry.name)
}

/// Body of `POST /auth/session`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionBody {
    /// A bearer token from the server's tokens file.
    token: String,
}

/// Whether cookies are sent over HTTPS only.
#[derive(Clone)]
struct SessionState {
    tokens: Arc<Tokens>,
    secure: bool,
}

/// `POST /auth/session`: checks a token and sets it as an HttpOnly, SameSite=Strict
/// cookie, for browsers. `DELETE` clears it.
async fn login(
    State(state): State<SessionState>,
    JsonBody(body): JsonBody<SessionBody>,
) -> Response {
    if state.tokens.authenticate(&body.token).is_none() {
        return unauthorized("the token is not in the server's tokens file");
    }
    let secure = if state.secure { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{secure}",
        body.token
    );
    session_response(&cookie)
}

async fn logout(State(state): State<SessionState>) -> Response {
    let secure = if state.secure { "; Secure" } else { "" };
    session_response(&format!(
        "{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"
    ))
}

fn session_response(cookie: &str) -> Response {
    match HeaderValue::from_str(cookie) {
        Ok(value) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            response.headers_mut().insert(header::SET_COOKIE, value);
            response
        }
        Err(_) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the token has characters a cookie cannot carry",
        )
        .into_response(),
    }
}

/// Puts `inner` behind the token check, with the session endpoints beside it.
/// `secure_cookies` marks the session cookie `Secure` (set when serving TLS).
pub(crate) fn protect(inner: Router, tokens: Arc<Tokens>, secure_cookies: bool) -> Router {
    let session = SessionState {
        tokens: tokens.clone(),
        secure: secure_cookies,
    };
    // The check wraps the outer router's fallback (the whole API), so it runs before
    // the API routes the request: a rewritten category read is routed as `/all`.
    Router::new()
        .route(
            "/auth/session",
            post(login)
                .delete(logout)
                .fallback(crate::handlers::method_not_allowed),
        )
        .with_state(session)
        .fallback_service(inner)
        .layer(middleware::from_fn_with_state(tokens, check))
}

/// A request body that is empty; used by tests.
#[cfg(test)]
fn empty(method: Method, uri: &str) -> Request {
    axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .body(axum::body::Body::empty())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(scopes: &[Scope], prefixes: &[&str]) -> TokenEntry {
        let line = token_line(
            "t",
            "secret",
            scopes,
            &prefixes.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>(),
        );
        Tokens::parse(&line).unwrap().entries.remove(0)
    }

    #[test]
    fn file_format_round_trips_and_rejects_bad_lines() {
        let text = format!(
            "# comment\n\n{}\n{}  # trailing comment\n",
            token_line("a", "tok-a", &[Scope::Read], &[]),
            token_line(
                "b",
                "tok-b",
                &[Scope::Write, Scope::Read],
                &["x-".into(), "y-".into()]
            ),
        );
        let tokens = Tokens::parse(&text).unwrap();
        assert_eq!(tokens.authenticate("tok-a").unwrap().name(), "a");
        let b = tokens.authenticate("tok-b").unwrap();
        assert!(b.has(Scope::Write) && b.has(Scope::Read) && !b.has(Scope::Admin));
        assert_eq!(b.prefixes(), ["x-", "y-"]);
        assert!(tokens.authenticate("tok-c").is_none());
        assert!(tokens.authenticate("").is_none());
        assert!(!text.contains("tok-a"), "the file holds hashes only");

        for bad in [
            "a sha256:00 read",
            "a md5:0000 read",
            "a read",
            &format!("a {} superuser", hash_token("x")),
        ] {
            assert!(
                matches!(
                    Tokens::parse(bad),
                    Err(TokensFileError::Line { line: 1, .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Tokens::parse("# nothing\n"),
            Err(TokensFileError::Empty)
        ));
    }

    #[test]
    fn admin_implies_every_scope() {
        let e = entry(&[Scope::Admin], &[]);
        assert!(e.has(Scope::Read) && e.has(Scope::Write) && e.has(Scope::Admin));
    }

    #[test]
    fn routes_are_classified() {
        use Need::*;
        assert_eq!(need(&Method::GET, "/health"), Public);
        assert_eq!(need(&Method::GET, "/"), Public);
        assert_eq!(need(&Method::GET, "/ui/app.js"), Public);
        assert_eq!(need(&Method::POST, "/"), Unclassified);
        assert_eq!(need(&Method::GET, "/api/streams"), Narrowed);
        assert_eq!(need(&Method::GET, "/api/stats"), Narrowed);
        assert_eq!(need(&Method::POST, "/api/stats"), Unclassified);
        assert_eq!(
            need(&Method::POST, "/streams/a-1"),
            Stream(Scope::Write, "a-1".into())
        );
        assert_eq!(
            need(&Method::GET, "/streams/a%2D1"),
            Stream(Scope::Read, "a-1".into())
        );
        assert_eq!(
            need(&Method::DELETE, "/streams/a-1"),
            Stream(Scope::Admin, "a-1".into())
        );
        assert_eq!(
            need(&Method::PUT, "/streams/a-1/metadata"),
            Stream(Scope::Admin, "a-1".into())
        );
        assert_eq!(
            need(&Method::GET, "/streams/a-1/subscribe"),
            Stream(Scope::Read, "a-1".into())
        );
        assert_eq!(need(&Method::GET, "/all/subscribe"), All);
        assert_eq!(need(&Method::GET, "/categories/a"), Category("a".into()));
        assert_eq!(need(&Method::GET, "/metrics"), Unlimited(Scope::Admin));
        assert_eq!(need(&Method::GET, "/subscriptions"), Narrowed);
        assert_eq!(need(&Method::POST, "/subscriptions"), Unclassified);
        assert_eq!(
            need(&Method::GET, "/subscriptions/a-1"),
            Stream(Scope::Read, "a-1".into())
        );
        assert_eq!(
            need(&Method::GET, "/subscriptions/%24all"),
            Unlimited(Scope::Read)
        );
        for (method, path, scope) in [
            (Method::GET, "/subscriptions/a-1/g", Scope::Read),
            (Method::PUT, "/subscriptions/a-1/g", Scope::Admin),
            (Method::POST, "/subscriptions/a-1/g", Scope::Admin),
            (Method::DELETE, "/subscriptions/a-1/g", Scope::Admin),
            (
                Method::POST,
                "/subscriptions/a-1/g/replay-parked",
                Scope::Admin,
            ),
            (Method::POST, "/subscriptions/a-1/g/messages", Scope::Read),
            (Method::POST, "/subscriptions/a-1/g/ack", Scope::Read),
            (Method::POST, "/subscriptions/a-1/g/nack", Scope::Read),
            (Method::GET, "/subscriptions/a-1/g/subscribe", Scope::Read),
        ] {
            assert_eq!(need(&method, path), Stream(scope, "a-1".into()), "{path}");
            let all = path.replace("a-1", "$all");
            assert_eq!(need(&method, &all), Unlimited(scope), "{all}");
        }
        assert_eq!(
            need(&Method::POST, "/subscriptions/a-1/g/other"),
            Unclassified
        );
        assert_eq!(need(&Method::GET, "/whatever"), Unclassified);
    }

    #[test]
    fn global_reads_get_the_prefix_filter() {
        let one = entry(&[Scope::Read], &["account-"]);
        let mut r = empty(Method::GET, "/all?limit=5");
        authorize(&one, Need::All, &mut r).unwrap();
        assert_eq!(r.uri().to_string(), "/all?limit=5&prefix=account-");

        let mut r = empty(Method::GET, "/all?prefix=account-7");
        authorize(&one, Need::All, &mut r).unwrap();
        assert_eq!(r.uri().query(), Some("prefix=account-7"));

        let mut r = empty(Method::GET, "/all?prefix=acc");
        authorize(&one, Need::All, &mut r).unwrap();
        assert_eq!(r.uri().query(), Some("prefix=account-"));

        let mut r = empty(Method::GET, "/all?prefix=order-");
        assert_eq!(
            authorize(&one, Need::All, &mut r).unwrap_err().code(),
            "stream_forbidden"
        );

        let two = entry(&[Scope::Read], &["account-", "order-"]);
        let mut r = empty(Method::GET, "/all");
        assert_eq!(
            authorize(&two, Need::All, &mut r).unwrap_err().code(),
            "stream_forbidden"
        );
        let mut r = empty(Method::GET, "/all?prefix=order-1");
        authorize(&two, Need::All, &mut r).unwrap();
    }

    #[test]
    fn category_reads_are_narrowed_or_refused() {
        let one = entry(&[Scope::Read], &["account-"]);
        let mut r = empty(Method::GET, "/categories/account?limit=3");
        authorize(&one, Need::Category("account".into()), &mut r).unwrap();
        assert_eq!(
            r.uri().to_string(),
            "/all?limit=3&category=account&prefix=account-"
        );

        let mut r = empty(
            Method::GET,
            "/categories/account?group_member=0&group_size=2",
        );
        assert!(authorize(&one, Need::Category("account".into()), &mut r).is_err());
        let mut r = empty(Method::GET, "/categories/order");
        assert!(authorize(&one, Need::Category("order".into()), &mut r).is_err());

        let broad = entry(&[Scope::Read], &["acc"]);
        let mut r = empty(Method::GET, "/categories/account");
        authorize(&broad, Need::Category("account".into()), &mut r).unwrap();
        assert_eq!(r.uri().path(), "/categories/account");
    }
}
