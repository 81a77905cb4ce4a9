//! A server for the tests: the gRPC routes beside a tiny HTTP route, on one port of
//! 127.0.0.1, speaking HTTP/1.1 and HTTP/2 without TLS, as `foldstore serve` does.

use std::sync::Arc;

use foldstore_core::EventStore;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running server; it stops when dropped, closing its connections.
pub(crate) struct Server {
    pub(crate) port: u16,
    accept: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Server {
    /// Serves `store` on a free port.
    #[allow(dead_code)] // Each test file uses part of this module.
    pub(crate) async fn start(store: Arc<dyn EventStore>) -> Self {
        Self::serve(foldstore_grpc::routes(store)).await
    }

    /// Serves the gRPC routes `grpc` on a free port.
    pub(crate) async fn serve(grpc: axum::Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let http = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
        let app = foldstore_grpc::grpc_or_http(grpc, http);
        let accept = tokio::spawn(async move {
            // Owned by this task: aborting it (on drop) aborts every connection too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                while connections.try_join_next().is_some() {}
                let service = TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self { port, accept }
    }

    /// A client of the official KurrentDB Rust crate, connected to this server.
    pub(crate) fn client(&self) -> kurrentdb::Client {
        self.client_as("")
    }

    /// A client sending `credentials` (`user:password@`, or empty for none).
    #[allow(dead_code)] // Each test file uses part of this module.
    pub(crate) fn client_as(&self, credentials: &str) -> kurrentdb::Client {
        let settings = format!("kurrentdb://{credentials}127.0.0.1:{}?tls=false", self.port)
            .parse::<kurrentdb::ClientSettings>()
            .unwrap();
        kurrentdb::Client::new(settings).unwrap()
    }
}
