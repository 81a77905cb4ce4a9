//! `ServerFeatures.GetSupportedMethods`: exactly the calls this crate implements.
//! Clients choose their calls by this list.

use tonic::{Request, Response, Status};

use crate::proto::event_store::client::Empty;
use crate::proto::event_store::client::server_features::server_features_server::ServerFeatures;
use crate::proto::event_store::client::server_features::{SupportedMethod, SupportedMethods};

/// The server version reported to clients: this crate's semantic version.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `(service, method, features)` for every implemented call, lowercase as the clients
/// compare them.
pub(crate) const METHODS: &[(&str, &str, &[&str])] = &[
    (
        "event_store.client.streams.streams",
        "read",
        &["position", "events"],
    ),
    ("event_store.client.streams.streams", "append", &[]),
    (
        "event_store.client.streams.streams",
        "batchappend",
        &["deadline_duration"],
    ),
    ("event_store.client.streams.streams", "delete", &[]),
    ("event_store.client.streams.streams", "tombstone", &[]),
    ("event_store.client.gossip.gossip", "read", &[]),
    (
        "event_store.client.server_features.serverfeatures",
        "getsupportedmethods",
        &[],
    ),
];

/// The persistent-subscription calls, listed when the server serves them. `stream` and
/// `all` say a call takes a stream or `$all`; the Node.js client uses `List`, `GetInfo`
/// and `ReplayParked` over gRPC only when they carry `stream`, and the Rust client does
/// only when all four of `List`, `GetInfo`, `ReplayParked` and `RestartSubsystem` are
/// listed (otherwise both call KurrentDB's HTTP API).
pub(crate) const PERSISTENT_METHODS: &[(&str, &str, &[&str])] = &[
    (PERSISTENT, "create", &["stream", "all"]),
    (PERSISTENT, "update", &["stream", "all"]),
    (PERSISTENT, "delete", &["stream", "all"]),
    (PERSISTENT, "read", &["stream", "all"]),
    (PERSISTENT, "getinfo", &["stream", "all"]),
    (PERSISTENT, "replayparked", &["stream", "all"]),
    (PERSISTENT, "list", &["stream", "all"]),
    (PERSISTENT, "restartsubsystem", &["stream", "all"]),
];

const PERSISTENT: &str = "event_store.client.persistent_subscriptions.persistentsubscriptions";

/// The server-features service.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FeaturesService {
    /// Whether the persistent-subscriptions service is served.
    pub(crate) persistent: bool,
}

#[tonic::async_trait]
impl ServerFeatures for FeaturesService {
    async fn get_supported_methods(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<SupportedMethods>, Status> {
        let persistent = if self.persistent {
            PERSISTENT_METHODS
        } else {
            &[]
        };
        let methods = METHODS
            .iter()
            .chain(persistent)
            .map(|(service, method, features)| SupportedMethod {
                method_name: (*method).to_owned(),
                service_name: (*service).to_owned(),
                features: features.iter().map(|f| (*f).to_owned()).collect(),
            })
            .collect();
        Ok(Response::new(SupportedMethods {
            methods,
            event_store_server_version: SERVER_VERSION.to_owned(),
        }))
    }
}
