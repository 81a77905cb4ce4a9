//! What every call carries into its service: its [`Caller`], and for `Gossip` the
//! address the client dialled. One tower layer finds both before the services' router
//! sees the request, and answers `Unauthenticated` itself.
//!
//! It is a plain [`Layer`] rather than axum's `from_fn` and `map_request` middleware:
//! those box a future and clone the inner service for every request, which was a tenth
//! of the server's time per one-event append (`docs/benchmarks.md`, Issue 18).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::header::HOST;
use axum::response::Response;
use futures::future::{Either, Ready, ready};
use tower::{Layer, Service};

use crate::auth::{self, Authenticator, Caller};

/// The `host:port` the client dialled (HTTP/2 `:authority`, or the `Host` header), for
/// `Gossip`, which answers it as the cluster's one member.
#[derive(Debug, Clone)]
pub(crate) struct Dialled(pub(crate) String);

/// The path prefix of `Gossip`'s methods.
const GOSSIP: &str = "/event_store.client.gossip.Gossip/";

/// Adds [`CallContext`] around the services.
#[derive(Clone)]
pub(crate) struct CallLayer {
    authenticator: Option<Arc<dyn Authenticator>>,
}

impl CallLayer {
    /// Every call checked by `authenticator`; none: every call is allowed.
    pub(crate) fn new(authenticator: Option<Arc<dyn Authenticator>>) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for CallLayer {
    type Service = CallContext<S>;

    fn layer(&self, inner: S) -> CallContext<S> {
        CallContext {
            authenticator: self.authenticator.clone(),
            inner,
        }
    }
}

/// Sets each request's [`Caller`] (and [`Dialled`], for `Gossip`), then calls the
/// services; answers `Unauthenticated` when the authenticator refuses the call.
#[derive(Clone)]
pub(crate) struct CallContext<S> {
    authenticator: Option<Arc<dyn Authenticator>>,
    inner: S,
}

impl<S> Service<Request> for CallContext<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let caller = match auth::caller(self.authenticator.as_deref(), &request) {
            Ok(caller) => caller,
            Err(refused) => return Either::Left(ready(Ok(refused))),
        };
        if request.uri().path().starts_with(GOSSIP)
            && let Some(dialled) = dialled(&request)
        {
            request.extensions_mut().insert(Dialled(dialled));
        }
        request.extensions_mut().insert::<Caller>(caller);
        Either::Right(self.inner.call(request))
    }
}

fn dialled(request: &Request) -> Option<String> {
    request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            let host = request.headers().get(HOST)?;
            host.to_str().ok().map(str::to_owned)
        })
}
