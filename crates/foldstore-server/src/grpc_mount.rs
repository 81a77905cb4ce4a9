//! A gRPC router beside the API on the same port ([`crate::ServerConfig::grpc`]).
//!
//! Requests whose `content-type` starts with `application/grpc` go to the gRPC router,
//! all others to the API. The gRPC router brings its own authentication (the API's
//! bearer-token layer answers problem+json, which gRPC clients cannot read), and is
//! not in the API's request log. Its responses end when the server shuts down: a
//! streaming call (a subscription) gets the trailers `grpc-status: 14` (`Unavailable`,
//! which the clients retry elsewhere or report), so graceful shutdown is not held up
//! by calls that would otherwise never end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue};
use hyper::body::Frame;
use tokio::sync::watch;
use tower::ServiceExt;

/// One router for one port: gRPC requests to `grpc`, the others to `http`; gRPC
/// responses end when `stop` is set.
pub(crate) fn split(grpc: Router, http: Router, stop: watch::Receiver<bool>) -> Router {
    Router::new().fallback(move |request: Request| {
        let grpc_call = is_grpc(&request);
        let target = if grpc_call {
            grpc.clone()
        } else {
            http.clone()
        };
        let stop = stop.clone();
        async move {
            let response = target
                .oneshot(request)
                .await
                .unwrap_or_else(|never| match never {});
            if grpc_call {
                response.map(|body| Body::new(UntilStop::new(body, stop)))
            } else {
                response
            }
        }
    })
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
struct UntilStop {
    inner: Body,
    stopped: Option<Stopped>,
}

impl UntilStop {
    fn new(inner: Body, mut stop: watch::Receiver<bool>) -> Self {
        let stopped: Stopped = Box::pin(async move {
            // A dropped sender means the server is gone: stop as well.
            let _ = stop.wait_for(|stop| *stop).await;
        });
        Self {
            inner,
            stopped: Some(stopped),
        }
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
        let Some(stopped) = &mut this.stopped else {
            return Poll::Ready(None);
        };
        if stopped.as_mut().poll(cx).is_ready() {
            this.stopped = None;
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("14"));
            trailers.insert(
                "grpc-message",
                HeaderValue::from_static("the server is shutting down"),
            );
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.stopped = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.stopped.is_none() || self.inner.is_end_stream()
    }
}
