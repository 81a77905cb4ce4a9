//! A server on `127.0.0.1:0` for end-to-end tests, stopped when dropped.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;

use foldstore_core::EventStore;
use foldstore_server::{ServerConfig, serve};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server, stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(store: Arc<dyn EventStore>, config: ServerConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, store, config, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Appends `events` (JSON event bodies) to `stream`; returns the answer.
    pub async fn append(&self, stream: &str, events: Value) -> Value {
        let response = reqwest::Client::new()
            .post(self.url(&format!("/streams/{stream}")))
            .header("content-type", "application/json")
            .body(json!({"expected_revision": "any", "events": events}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "append to {stream} failed");
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    }

    /// Stops the server gracefully and waits until it has: requests in flight finish,
    /// and the store handles it held are dropped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }

    /// GETs `path` and returns the status and the body as text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(self.url(path)).await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}
