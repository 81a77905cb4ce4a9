//! # foldstore-grpc
//!
//! KurrentDB's (EventStoreDB's) gRPC protocol over any [`foldstore_core::EventStore`],
//! so that KurrentDB's official clients talk to foldstore unchanged. The services are
//! an axum [`Router`](axum::Router) ([`routes`]) that a server mounts beside its HTTP
//! routes on one port ([`grpc_or_http`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use foldstore_core::{EventStore, InMemoryStore};
//!
//! # async fn serve() -> std::io::Result<()> {
//! let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
//! let http = axum::Router::new(); // the HTTP API
//! let app = foldstore_grpc::grpc_or_http(foldstore_grpc::routes(store), http);
//! // Serve `app` over HTTP/1.1 and HTTP/2 (h2c) on one port, e.g. with hyper-util's
//! // `server::conn::auto::Builder`.
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
#![doc = include_str!("../README.md")]
// tonic's service methods return `tonic::Status` (176 bytes); the helpers they call
// return the same type rather than box it only to unbox it again.
#![allow(clippy::result_large_err)]

mod auth;
mod batch;
mod calls;
mod codec;
mod error;
mod event_message;
mod features;
mod feed;
mod filter;
mod gossip;
mod metastream;
mod parked;
mod persistent;
mod proto;
mod read;
mod routes;
mod streams;
mod wire;

pub use auth::{Authenticator, Credentials, Grant};
pub use features::SERVER_VERSION;
pub use routes::{Services, authenticated_routes, grpc_or_http, is_grpc, routes};
