//! Who may call what: the clients' credentials (`authorization: Basic …` or `Bearer …`)
//! checked by an [`Authenticator`] the server provides, and the [`Grant`] it answers
//! applied to each call.
//!
//! Without an authenticator ([`crate::routes`]) every call is allowed. With one
//! ([`crate::authenticated_routes`]), `Gossip` and `ServerFeatures` stay open (the
//! clients call them before anything else, as KurrentDB allows), and every other call
//! without valid credentials gets `Unauthenticated`. A valid caller without the
//! scope, or naming a stream outside its prefixes, gets `PermissionDenied` (which the
//! clients report as access denied). `$all` reads and subscriptions of a caller limited
//! to stream prefixes see the events of those streams only.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::AUTHORIZATION;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use foldstore_core::StreamName;
use tonic::Status;

/// Credentials as a client sends them.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// `authorization: Basic base64(username:password)`, the clients' default
    /// (`kurrentdb://username:password@host:port`).
    Basic {
        /// The user name.
        username: &'a str,
        /// The password.
        password: &'a str,
    },
    /// `authorization: Bearer <token>`.
    Bearer(&'a str),
}

/// What an authenticated caller may do.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Reads and subscriptions.
    pub read: bool,
    /// Appends.
    pub write: bool,
    /// Deletes, tombstones and metadata writes; implies read and write.
    pub admin: bool,
    /// The stream prefixes the caller is limited to; empty for every stream.
    pub prefixes: Vec<String>,
}

impl Grant {
    /// Whether the caller reaches `stream`.
    pub fn reaches(&self, stream: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| stream.starts_with(p))
    }
}

/// Checks credentials: the server's token store, for instance.
pub trait Authenticator: Send + Sync + 'static {
    /// What `credentials` may do, or `None` when they are not valid.
    fn authenticate(&self, credentials: Credentials<'_>) -> Option<Grant>;
}

/// What a call needs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Need {
    Read,
    Write,
    Admin,
}

/// The caller of one request, as the middleware found it.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// No authentication is configured.
    Anyone,
    /// Authenticated.
    Granted(Arc<Grant>),
}

impl Caller {
    /// The caller of `request` (set by [`crate::calls::CallLayer`]); refused when it is
    /// missing, which cannot happen behind the routes' layer.
    pub(crate) fn of<T>(request: &tonic::Request<T>) -> Result<Self, Status> {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("the call carries no credentials"))
    }

    /// Refuses a call that needs `need`, on `stream` when given, beyond the grant.
    pub(crate) fn check(&self, need: Need, stream: Option<&StreamName>) -> Result<(), Status> {
        let Caller::Granted(grant) = self else {
            return Ok(());
        };
        let scoped = match need {
            Need::Read => grant.read || grant.admin,
            Need::Write => grant.write || grant.admin,
            Need::Admin => grant.admin,
        };
        if !scoped {
            let scope = match need {
                Need::Read => "read",
                Need::Write => "write",
                Need::Admin => "admin",
            };
            return Err(Status::permission_denied(format!(
                "access denied: this call needs a token with the {scope} scope"
            )));
        }
        if let Some(stream) = stream
            && !grant.reaches(stream.as_str())
        {
            return Err(Status::permission_denied(format!(
                "access denied: stream {stream} is outside this token's prefixes ({})",
                grant.prefixes.join(", ")
            )));
        }
        Ok(())
    }

    /// The streams whose events this caller sees in `$all`.
    pub(crate) fn reach(&self) -> Reach {
        match self {
            Caller::Granted(grant) if !grant.prefixes.is_empty() => Reach(Some(grant.clone())),
            _ => Reach(None),
        }
    }
}

/// The streams a caller sees in `$all`: every stream, or those of its prefixes.
#[derive(Debug, Clone)]
pub(crate) struct Reach(Option<Arc<Grant>>);

impl Reach {
    /// Whether the caller sees events of `stream`.
    pub(crate) fn allows(&self, stream: &str) -> bool {
        self.0.as_ref().is_none_or(|g| g.reaches(stream))
    }

    /// Whether the caller sees every stream.
    pub(crate) fn is_everything(&self) -> bool {
        self.0.is_none()
    }
}

/// The caller of `request`, or the `Unauthenticated` answer: everyone when there is no
/// authenticator.
pub(crate) fn caller(
    authenticator: Option<&dyn Authenticator>,
    request: &Request,
) -> Result<Caller, Response> {
    let Some(authenticator) = authenticator else {
        return Ok(Caller::Anyone);
    };
    let grant = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|header| with_credentials(header, |c| authenticator.authenticate(c)));
    match grant {
        Some(grant) => Ok(Caller::Granted(Arc::new(grant))),
        None if is_open(request.uri().path()) => Ok(Caller::Granted(Arc::default())),
        None => Err(Status::unauthenticated(
            "give credentials: user name = the token's name in the tokens file, password = the token; or the token as a bearer token",
        )
        .into_http::<axum::body::Body>()
        .into_response()),
    }
}

/// The services a client calls before it authenticates.
fn is_open(path: &str) -> bool {
    path.starts_with("/event_store.client.gossip.Gossip/")
        || path.starts_with("/event_store.client.server_features.ServerFeatures/")
}

/// Parses an `authorization` header and hands its credentials to `check`.
fn with_credentials<T>(
    header: &str,
    check: impl FnOnce(Credentials<'_>) -> Option<T>,
) -> Option<T> {
    let (scheme, value) = header.split_once(' ')?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return check(Credentials::Bearer(value));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (username, password) = decoded.split_once(':')?;
    check(Credentials::Basic { username, password })
}
