//! The API over an SQLite store on a disk that fills up: a 12 MiB tmpfs in a private
//! mount namespace (`foldstore-sqlite/tests/support/private_tmpfs.rs`; skipped without
//! root unless `FOLDSTORE_REQUIRE_PRIVILEGED=1`).
//!
//! Guards against a server that answers a full disk with 503 (`outcome_unknown`, then
//! `storage_failed` until a restart): while the disk is full a client must get 507
//! problem+json with the stable code `storage_full`, reads and `/health` must keep
//! answering 200, and once space is freed the same server must take writes again (the
//! refused append retried with the same ids, then a new one), with every acknowledged
//! event readable once and no refused one stored.

#[path = "../../foldstore-sqlite/tests/support/private_tmpfs.rs"]
mod private_tmpfs;

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use common::TestServer;
use foldstore_server::ServerConfig;
use foldstore_sqlite::{SqliteOptions, SqliteStore};
use serde_json::{Value, json};
use uuid::Uuid;

/// Four events of about 16 KiB with fresh ids.
fn batch() -> Vec<Value> {
    (0..4)
        .map(|_| json!({"id": Uuid::new_v4(), "type": "Filled", "data": {"pad": "x".repeat(16_000)}}))
        .collect()
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// POSTs `events` to `stream`; returns the status, the content type and the body.
async fn post(server: &TestServer, stream: &str, events: &[Value]) -> (u16, String, Value) {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/streams/{stream}")))
        .header("content-type", "application/json")
        .body(json!({"expected_revision": "any", "events": events}).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    (status, content_type, body)
}

/// Every event id of `$all`, read page by page over HTTP.
async fn all_ids(server: &TestServer) -> Vec<String> {
    let mut ids = Vec::new();
    let mut from = None::<String>;
    loop {
        let path = match &from {
            Some(p) => format!("/all?limit=1000&from={p}"),
            None => "/all?limit=1000".to_owned(),
        };
        let (status, text) = server.get_text(&path).await;
        assert_eq!(status, 200, "{text}");
        let page: Value = serde_json::from_str(&text).unwrap();
        for e in page["events"].as_array().unwrap() {
            ids.push(e["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => from = Some(next.to_owned()),
            None => return ids,
        }
    }
}

#[test]
fn a_full_disk_answers_507_storage_full_keeps_reads_and_recovers_without_a_restart() {
    let Some(dir) = private_tmpfs::enter(
        "a_full_disk_answers_507_storage_full_keeps_reads_and_recovers_without_a_restart",
        "12m",
    ) else {
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(fill_over_http(&dir));
}

async fn fill_over_http(dir: &Path) {
    // Room to free later, more than the WAL can grow to in what is left, so that the
    // checkpoint on close has room too.
    let filler = dir.join("filler");
    std::fs::write(&filler, vec![0x5a_u8; 7 << 20]).unwrap();
    let store = SqliteStore::open(dir.join("foldstore.db"), SqliteOptions::default())
        .await
        .unwrap();
    let server = TestServer::start(Arc::new(store.clone()), ServerConfig::default()).await;

    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for n in 0..1_000 {
        let events = batch();
        let (status, content_type, body) = post(&server, &format!("fill-{}", n % 3), &events).await;
        match status {
            200 => acked.extend(ids(&events)),
            507 => {
                assert_eq!(content_type, "application/problem+json");
                assert_eq!(body["code"], "storage_full", "{body}");
                assert_eq!(body["status"], 507);
                assert_eq!(body["type"], "urn:foldstore:problem:storage_full");
                assert_eq!(body["title"], "The store's disk is full");
                let detail = body["detail"].as_str().unwrap();
                assert!(detail.contains("without a restart"), "{detail}");
                refused.push(events);
                if refused.len() == 3 {
                    break;
                }
            }
            other => panic!("a full disk must answer 507 storage_full, got {other}: {body}"),
        }
    }
    assert_eq!(refused.len(), 3, "the disk never filled");
    assert!(!acked.is_empty());

    // Full: reads and health answer 200, and show exactly what was acknowledged.
    let (status, _) = server.get_text("/health").await;
    assert_eq!(status, 200);
    let (status, _) = server.get_text("/streams/fill-0").await;
    assert_eq!(status, 200);
    let stored = all_ids(&server).await;
    assert_eq!(
        stored, acked,
        "the log is not exactly the acknowledged appends"
    );

    // Space returns: the same server takes the refused append (same ids) and new ones.
    std::fs::remove_file(&filler).unwrap();
    let retried = refused.pop().unwrap();
    let (status, _, body) = post(&server, "fill-retry", &retried).await;
    assert_eq!(status, 200, "{body}");
    acked.extend(ids(&retried));
    let events = batch();
    let (status, _, body) = post(&server, "after-1", &events).await;
    assert_eq!(status, 200, "{body}");
    acked.extend(ids(&events));

    let stored = all_ids(&server).await;
    assert_eq!(stored, acked);
    let never_retried: HashSet<String> = refused.iter().flat_map(|e| ids(e)).collect();
    assert!(stored.iter().all(|id| !never_retried.contains(id)));
    drop(server);
    store.close().await.unwrap();
}
