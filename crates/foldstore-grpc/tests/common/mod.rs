//! A server for the tests: the gRPC routes beside a tiny HTTP route, on one port of
//! 127.0.0.1, speaking HTTP/1.1 and HTTP/2 without TLS, as `foldstore serve` does.

use std::sync::Arc;

use foldstore_core::EventStore;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running server; it stops when dropped.
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
    pub(crate) async fn start(store: Arc<dyn EventStore>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let http = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
        let app = foldstore_grpc::grpc_or_http(foldstore_grpc::routes(store), http);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let service = TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
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
        let settings = format!("kurrentdb://127.0.0.1:{}?tls=false", self.port)
            .parse::<kurrentdb::ClientSettings>()
            .unwrap();
        kurrentdb::Client::new(settings).unwrap()
    }
}
