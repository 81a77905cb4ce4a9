//! The services as an axum [`Router`], and the split of one port between gRPC and
//! HTTP by content type.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use foldstore_core::EventStore;
use foldstore_core::persistent::PersistentSubscriptions;
use tonic::Status;
use tower::ServiceExt;

use crate::auth::Authenticator;
use crate::calls::CallLayer;
use crate::error;
use crate::features::FeaturesService;
use crate::gossip::GossipService;
use crate::persistent::PersistentService;
use crate::proto::event_store::client::gossip::gossip_server::GossipServer;
use crate::proto::event_store::client::persistent_subscriptions::persistent_subscriptions_server::PersistentSubscriptionsServer;
use crate::proto::event_store::client::server_features::server_features_server::ServerFeaturesServer;
use crate::proto::event_store::client::streams::streams_server::StreamsServer;
use crate::streams::StreamsService;

/// The largest message a client may send: KurrentDB's default append limit for one
/// record is 16 MiB, and an append streams one record per message.
const MAX_MESSAGE_BYTES: usize = 17 * 1024 * 1024;

/// KurrentDB's gRPC services over `store`, as an axum router: [`Services`] without
/// persistent subscriptions or authentication.
///
/// Requests for services or methods this crate does not implement get gRPC
/// `Unimplemented` with a message naming what it supports. The router has a fallback,
/// so mount it beside an HTTP router with [`grpc_or_http`] rather than
/// [`Router::merge`]. It must be served over HTTP/2 (KurrentDB's clients speak h2c,
/// HTTP/2 without TLS, when the connection string says `tls=false`).
pub fn routes(store: Arc<dyn EventStore>) -> Router {
    Services::new(store).router()
}

/// [`routes`] where every call but `Gossip` and `ServerFeatures` needs credentials
/// that `authenticator` accepts (`Unauthenticated` otherwise), and the [`Grant`](crate::Grant)
///  it answers limits what the call may do (`PermissionDenied`).
pub fn authenticated_routes(
    store: Arc<dyn EventStore>,
    authenticator: Arc<dyn Authenticator>,
) -> Router {
    Services::new(store).authenticator(authenticator).router()
}

/// The services to serve, built into a router by [`Services::router`].
///
/// Persistent subscriptions are served when given [`Services::persistent`]: one
/// [`PersistentSubscriptions`] that the server shares with whatever else serves them
/// (its HTTP API), since one process serves each group. Without it, their calls answer
/// `Unimplemented` and `GetSupportedMethods` leaves them out.
///
/// ```
/// use std::sync::Arc;
/// use foldstore_core::persistent::PersistentSubscriptions;
/// use foldstore_core::{EventStore, InMemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
/// let subs = Arc::new(PersistentSubscriptions::open(store.clone()).await?);
/// let grpc = foldstore_grpc::Services::new(store).persistent(subs.clone()).router();
/// # let _ = grpc;
/// // ... serve, then checkpoint every group:
/// subs.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Services {
    store: Arc<dyn EventStore>,
    persistent: Option<Arc<PersistentSubscriptions>>,
    authenticator: Option<Arc<dyn Authenticator>>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("persistent", &self.persistent.is_some())
            .field("authenticated", &self.authenticator.is_some())
            .finish_non_exhaustive()
    }
}

impl Services {
    /// The streams, gossip and server-features services over `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            persistent: None,
            authenticator: None,
        }
    }

    /// Also serves persistent subscriptions, through `subs` (opened over the same
    /// store).
    pub fn persistent(mut self, subs: Arc<PersistentSubscriptions>) -> Self {
        self.persistent = Some(subs);
        self
    }

    /// Every call but `Gossip` and `ServerFeatures` needs credentials that
    /// `authenticator` accepts, as in [`authenticated_routes`].
    pub fn authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// The services as an axum router (see [`routes`]).
    pub fn router(self) -> Router {
        let streams = StreamsServer::new(StreamsService::new(self.store.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let gossip = GossipServer::new(GossipService {
            instance_id: uuid::Uuid::new_v4(),
        });
        let features = ServerFeaturesServer::new(FeaturesService {
            persistent: self.persistent.is_some(),
        });
        let mut router = Router::new()
            .route_service("/event_store.client.streams.Streams/{*rest}", streams)
            .route_service("/event_store.client.gossip.Gossip/{*rest}", gossip)
            .route_service(
                "/event_store.client.server_features.ServerFeatures/{*rest}",
                features,
            );
        if let Some(subs) = self.persistent {
            let persistent = PersistentSubscriptionsServer::new(PersistentService::new(
                self.store.clone(),
                subs,
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
            router = router
                .route(
                    "/event_store.client.persistent_subscriptions.PersistentSubscriptions/TruncateParked",
                    axum::routing::any(truncate_parked),
                )
                .route_service(
                    "/event_store.client.persistent_subscriptions.PersistentSubscriptions/{*rest}",
                    persistent,
                );
        }
        router
            .fallback(unimplemented)
            .layer(CallLayer::new(self.authenticator))
    }
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

/// `TruncateParked`: not in the protocol the clients speak; truncating a parked stream
/// is its metadata's `$tb`.
async fn truncate_parked() -> Response {
    Status::unimplemented(
        "TruncateParked is not served: set $tb in the metadata of the parked stream \
         ($$$persistentsubscription-<stream>::<group>-parked) to truncate it, or replay \
         the parked events with ReplayParked",
    )
    .into_http::<axum::body::Body>()
    .into_response()
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
