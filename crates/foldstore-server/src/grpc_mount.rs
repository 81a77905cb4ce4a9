//! A gRPC router beside the API on the same port ([`crate::ServerConfig::grpc`]).
//!
//! Requests whose `content-type` starts with `application/grpc` go to the gRPC router,
//! all others to the API. The gRPC router brings its own authentication (the API's
//! bearer-token layer answers problem+json, which gRPC clients cannot read), and is
//! not in the API's request log. Its responses end when the server shuts down: a
//! streaming call (a subscription) gets the trailers `grpc-status: 14` (`Unavailable`,
//! which the clients retry elsewhere or report), so graceful shutdown is not held up
//! by calls that would otherwise never end.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use futures::future::Either;
use hyper::body::Frame;
use tokio::sync::watch;
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

/// One router for one port: gRPC requests to `grpc`, the others to `http`; gRPC
/// responses end when `stop` is set.
pub(crate) fn split(grpc: Router, http: Router, stop: watch::Receiver<bool>) -> Router {
    Router::new().fallback_service(Split { grpc, http, stop })
}

/// The split itself: a plain service, so that a call costs the chosen router's own
/// work and no handler machinery around it.
#[derive(Clone)]
struct Split {
    grpc: Router,
    http: Router,
    stop: watch::Receiver<bool>,
}

impl Service<Request> for Split {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<GrpcCall, Oneshot<Router, Request>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if is_grpc(&request) {
            Either::Left(GrpcCall {
                call: self.grpc.clone().oneshot(request),
                stop: Some(self.stop.clone()),
            })
        } else {
            Either::Right(self.http.clone().oneshot(request))
        }
    }
}

/// A gRPC call whose response body ends when the server stops.
struct GrpcCall {
    call: Oneshot<Router, Request>,
    stop: Option<watch::Receiver<bool>>,
}

impl Future for GrpcCall {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(Pin::new(&mut self.call).poll(cx))?;
        let stop = self
            .stop
            .take()
            .expect("a call is not polled after it answered");
        Poll::Ready(Ok(
            response.map(|body| Body::new(UntilStop::new(body, stop)))
        ))
    }
}

/// Whether a request is gRPC, by its content type.
fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

type Stopped = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A response body that ends with `Unavailable` trailers once the server stops.
///
/// Checking the flag costs a read of the watch channel; only a body that has to wait
/// for its next frame (a live subscription) registers to be woken by the stop, so a
/// unary answer or a read that keeps producing allocates nothing for it.
struct UntilStop {
    inner: Body,
    stop: watch::Receiver<bool>,
    /// Created the first time the inner body has to wait.
    stopped: Option<Stopped>,
    done: bool,
}

impl UntilStop {
    fn new(inner: Body, stop: watch::Receiver<bool>) -> Self {
        Self {
            inner,
            stop,
            stopped: None,
            done: false,
        }
    }

    /// Ends the body with the `Unavailable` trailers.
    fn end(&mut self) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.done = true;
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("14"));
        trailers.insert(
            "grpc-message",
            HeaderValue::from_static("the server is shutting down"),
        );
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }
}

impl HttpBody for UntilStop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if *this.stop.borrow() {
            return this.end();
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(None) => this.done = true,
            Poll::Pending => {
                let stopped = this.stopped.get_or_insert_with(|| {
                    let mut stop = this.stop.clone();
                    Box::pin(async move {
                        // A dropped sender means the server is gone: stop as well.
                        let _ = stop.wait_for(|stop| *stop).await;
                    })
                });
                if stopped.as_mut().poll(cx).is_ready() {
                    return this.end();
                }
            }
            Poll::Ready(Some(_)) => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }
}
