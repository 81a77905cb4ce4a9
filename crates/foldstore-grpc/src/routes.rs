//! The services as an axum [`Router`], and the split of one port between gRPC and
//! HTTP by content type.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use foldstore_core::EventStore;
use tower::ServiceExt;

use crate::auth::Authenticator;
use crate::calls::CallLayer;
use crate::error;
use crate::features::FeaturesService;
use crate::gossip::GossipService;
use crate::proto::event_store::client::gossip::gossip_server::GossipServer;
use crate::proto::event_store::client::server_features::server_features_server::ServerFeaturesServer;
use crate::proto::event_store::client::streams::streams_server::StreamsServer;
use crate::streams::StreamsService;

/// The largest message a client may send: KurrentDB's default append limit for one
/// record is 16 MiB, and an append streams one record per message.
const MAX_MESSAGE_BYTES: usize = 17 * 1024 * 1024;

/// KurrentDB's gRPC services over `store`, as an axum router.
///
/// Requests for services or methods this crate does not implement get gRPC
/// `Unimplemented` with a message naming what it supports. The router has a fallback,
/// so mount it beside an HTTP router with [`grpc_or_http`] rather than
/// [`Router::merge`]. It must be served over HTTP/2 (KurrentDB's clients speak h2c,
/// HTTP/2 without TLS, when the connection string says `tls=false`).
pub fn routes(store: Arc<dyn EventStore>) -> Router {
    build(store, None)
}

/// [`routes`] where every call but `Gossip` and `ServerFeatures` needs credentials
/// that `authenticator` accepts (`Unauthenticated` otherwise), and the [`Grant`](crate::Grant)
///  it answers limits what the call may do (`PermissionDenied`).
pub fn authenticated_routes(
    store: Arc<dyn EventStore>,
    authenticator: Arc<dyn Authenticator>,
) -> Router {
    build(store, Some(authenticator))
}

fn build(store: Arc<dyn EventStore>, authenticator: Option<Arc<dyn Authenticator>>) -> Router {
    let streams = StreamsServer::new(StreamsService::new(store))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let gossip = GossipServer::new(GossipService {
        instance_id: uuid::Uuid::new_v4(),
    });
    let features = ServerFeaturesServer::new(FeaturesService);
    Router::new()
        .route_service("/event_store.client.streams.Streams/{*rest}", streams)
        .route_service("/event_store.client.gossip.Gossip/{*rest}", gossip)
        .route_service(
            "/event_store.client.server_features.ServerFeatures/{*rest}",
            features,
        )
        .fallback(unimplemented)
        .layer(CallLayer::new(authenticator))
}

/// One router for one port: requests whose `content-type` starts with
/// `application/grpc` go to `grpc` (from [`routes`]), all others to `http`.
///
/// ```
/// use std::sync::Arc;
/// use foldstore_core::{EventStore, InMemoryStore};
///
/// let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
/// let http = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
/// let app = foldstore_grpc::grpc_or_http(foldstore_grpc::routes(store), http);
/// # let _ = app;
/// ```
pub fn grpc_or_http(grpc: Router, http: Router) -> Router {
    Router::new().fallback(move |request: Request| {
        let target = if is_grpc(&request) {
            grpc.clone()
        } else {
            http.clone()
        };
        async move {
            match target.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    })
}

/// Whether a request is gRPC, by its content type.
pub fn is_grpc<B>(request: &axum::http::Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

async fn unimplemented(request: Request) -> Response {
    let path = request
        .uri()
        .path()
        .trim_start_matches('/')
        .replace('/', ".");
    error::unimplemented(&path)
        .into_http::<axum::body::Body>()
        .into_response()
}
