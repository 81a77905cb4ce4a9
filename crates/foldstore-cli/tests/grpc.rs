//! KurrentDB's gRPC protocol in `foldstore serve`: the official Rust client
//! (`kurrentdb`) against the built binary on a free loopback port, beside the HTTP API
//! on the same port, in clear text (h2c) and over TLS, with and without tokens.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kurrentdb::{
    AppendToStreamOptions, Client, EventData, ReadAllOptions, ReadStreamOptions, StreamState,
    SubscribeToStreamOptions, SubscriptionEvent,
};

/// A scratch directory on the build's disk.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A `foldstore serve` child, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `foldstore serve` on a SQLite directory under `dir`, on a free port.
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_foldstore"));
        for var in [
            "FOLDSTORE_DATA_DIR",
            "FOLDSTORE_DATABASE_URL",
            "FOLDSTORE_TOKENS_FILE",
        ] {
            command.env_remove(var);
        }
        let mut child = command
            .args(["--data-dir", "data", "serve", "--port", "0"])
            .args(extra)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split_whitespace()
            .find(|w| w.starts_with("http"))
            .and_then(|url| url.trim_end_matches('/').rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no URL in {line:?}"));
        Self { child, port }
    }

    /// A KurrentDB client for `connection` (`{port}` is replaced by the port).
    fn client(&self, connection: &str) -> Client {
        let settings = connection
            .replace("{port}", &self.port.to_string())
            .parse::<kurrentdb::ClientSettings>()
            .unwrap();
        Client::new(settings).unwrap()
    }
}

fn event(kind: &str, n: u64) -> EventData {
    EventData::json(kind, &serde_json::json!({ "n": n })).unwrap()
}

async fn revisions(client: &Client, stream: &str) -> Vec<u64> {
    let mut read = client
        .read_stream(stream, &ReadStreamOptions::default())
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(e) = read.next().await.unwrap() {
        out.push(e.get_original_event().revision);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_share_the_port_in_clear_text() {
    let dir = scratch();
    let server = Server::start(dir.path(), &[]);
    let client = server.client("kurrentdb://127.0.0.1:{port}?tls=false");
    let events = (0..3).map(|n| event("Opened", n)).collect::<Vec<_>>();
    let written = client
        .append_to_stream(
            "account-1",
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            events,
        )
        .await
        .unwrap();
    assert_eq!(written.next_expected_version, 2);
    assert_eq!(revisions(&client, "account-1").await, [0, 1, 2]);

    // The HTTP API on the same port sees the events the gRPC client appended, and
    // what HTTP appends, gRPC reads.
    let base = format!("http://127.0.0.1:{}", server.port);
    let http = reqwest::Client::new();
    let page: serde_json::Value = http
        .get(format!("{base}/streams/account-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"].as_array().unwrap().len(), 3, "{page}");
    let appended = http
        .post(format!("{base}/streams/account-1"))
        .json(&serde_json::json!({ "expected_revision": 2, "events": [{ "type": "Deposited", "data": { "n": 3 } }] }))
        .send()
        .await
        .unwrap();
    assert!(
        appended.status().is_success(),
        "{:?}",
        appended.text().await
    );
    assert_eq!(revisions(&client, "account-1").await, [0, 1, 2, 3]);
    let mut all = client.read_all(&ReadAllOptions::default()).await.unwrap();
    let mut count = 0;
    while all.next().await.unwrap().is_some() {
        count += 1;
    }
    assert_eq!(count, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_with_the_clients_ca_file() {
    let dir = scratch();
    let d = dir.path();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key): (PathBuf, PathBuf) = (d.join("cert.pem"), d.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let server = Server::start(d, &args);
    let client = server.client(&format!(
        "kurrentdb://localhost:{{port}}?tls=true&tlsCaFile={}",
        cert.display()
    ));
    client
        .append_to_stream("secure-1", &Default::default(), vec![event("Opened", 0)])
        .await
        .unwrap();
    assert_eq!(revisions(&client, "secure-1").await, [0]);
    // HTTPS on the same port.
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let health = http
        .get(format!("https://localhost:{}/health", server.port))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_live_grpc_subscription() {
    let dir = scratch();
    let mut server = Server::start(dir.path(), &[]);
    let client = server.client("kurrentdb://127.0.0.1:{port}?tls=false");
    client
        .append_to_stream("live-1", &Default::default(), vec![event("Opened", 0)])
        .await
        .unwrap();
    let mut subscription = client
        .subscribe_to_stream("live-1", &SubscribeToStreamOptions::default())
        .await;
    // History, then caught up: the subscription is live and would never end by itself.
    loop {
        match subscription.next_subscription_event().await.unwrap() {
            SubscriptionEvent::CaughtUp(_) => break,
            _ => continue,
        }
    }
    let term = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    // The server exits within its graceful shutdown rather than waiting for the client.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "serve did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `foldstore serve` serves persistent subscriptions, and stopping it writes each
/// group's checkpoint: a restarted server resumes right after the last ack (with the
/// default settings, three acks are too few for a checkpoint before the stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_serves_persistent_subscriptions_and_a_stop_checkpoints_them() {
    let dir = scratch();
    let mut server = Server::start(dir.path(), &[]);
    let client = server.client("kurrentdb://127.0.0.1:{port}?tls=false");
    let events = (0..6).map(|n| event("Opened", n)).collect::<Vec<_>>();
    client
        .append_to_stream("ps-1", &Default::default(), events)
        .await
        .unwrap();
    let options = kurrentdb::PersistentSubscriptionOptions::default()
        .start_from(kurrentdb::StreamPosition::Start);
    client
        .create_persistent_subscription("ps-1", "g", &options)
        .await
        .unwrap();
    let mut sub = client
        .subscribe_to_persistent_subscription("ps-1", "g", &Default::default())
        .await
        .unwrap();
    for expected in 0..3 {
        let event = sub.next().await.unwrap();
        assert_eq!(event.get_original_event().revision, expected);
        sub.ack(&event).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client
        .get_persistent_subscription_info("ps-1", "g", &Default::default())
        .await
        .unwrap()
        .stats
        .total_items
        < 3
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the acks did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stopped with the consumer still connected.
    let term = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "serve did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((sub, client, server));

    let server = Server::start(dir.path(), &[]);
    let client = server.client("kurrentdb://127.0.0.1:{port}?tls=false");
    let mut sub = client
        .subscribe_to_persistent_subscription("ps-1", "g", &Default::default())
        .await
        .unwrap();
    let event = sub.next().await.unwrap();
    assert_eq!(
        event.get_original_event().revision,
        3,
        "resumes right after the last ack"
    );
}

/// A tokens file in `dir` with `admin` (every scope, every stream), `reader` (read,
/// every stream) and `acct` (read and write, streams `account-…`), whose tokens are
/// `<name>-secret`.
fn tokens_file(dir: &Path) -> PathBuf {
    use foldstore_server::auth::{Scope, token_line};
    let lines = [
        token_line("admin", "admin-secret", &[Scope::Admin], &[]),
        token_line("reader", "reader-secret", &[Scope::Read], &[]),
        token_line(
            "acct",
            "acct-secret",
            &[Scope::Read, Scope::Write],
            &["account-".to_owned()],
        ),
    ];
    let path = dir.join("tokens");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn is_access_denied<T: std::fmt::Debug>(result: &Result<T, kurrentdb::Error>) -> bool {
    matches!(result, Err(kurrentdb::Error::AccessDenied))
}

async fn all_streams(client: &Client, options: &ReadAllOptions) -> kurrentdb::Result<Vec<String>> {
    let mut read = client.read_all(options).await?;
    let mut out = Vec::new();
    while let Some(e) = read.next().await? {
        out.push(e.get_original_event().stream_id().to_owned());
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_authenticate_grpc_calls_and_their_scopes_and_prefixes_apply() {
    let dir = scratch();
    let d = dir.path();
    let tokens = tokens_file(d);
    let server = Server::start(d, &["--tokens-file", tokens.to_str().unwrap()]);
    let admin = server.client("kurrentdb://admin:admin-secret@127.0.0.1:{port}?tls=false");
    let reader = server.client("kurrentdb://reader:reader-secret@127.0.0.1:{port}?tls=false");
    let acct = server.client("kurrentdb://acct:acct-secret@127.0.0.1:{port}?tls=false");
    let nobody = server.client("kurrentdb://127.0.0.1:{port}?tls=false");
    let wrong = server.client("kurrentdb://admin:reader-secret@127.0.0.1:{port}?tls=false");

    // Basic credentials: user name = the token's name, password = the token.
    for stream in ["account-1", "order-1"] {
        admin
            .append_to_stream(stream, &Default::default(), vec![event("Opened", 0)])
            .await
            .unwrap();
    }
    // No credentials, or a token under another name: refused.
    let anonymous = nobody
        .append_to_stream("account-2", &Default::default(), vec![event("Opened", 0)])
        .await;
    assert!(is_access_denied(&anonymous), "{anonymous:?}");
    let anonymous = all_streams(&nobody, &ReadAllOptions::default()).await;
    assert!(is_access_denied(&anonymous), "{anonymous:?}");
    let mismatched = all_streams(&wrong, &ReadAllOptions::default()).await;
    assert!(is_access_denied(&mismatched), "{mismatched:?}");

    // Scopes: a reader reads but neither appends nor deletes.
    assert_eq!(revisions(&reader, "order-1").await, [0]);
    let appended = reader
        .append_to_stream("order-1", &Default::default(), vec![event("Paid", 1)])
        .await;
    assert!(is_access_denied(&appended), "{appended:?}");
    let deleted = acct.delete_stream("account-1", &Default::default()).await;
    assert!(is_access_denied(&deleted), "{deleted:?}");

    // Prefixes: `acct` appends and reads its streams only, and sees only them in $all.
    acct.append_to_stream(
        "account-1",
        &Default::default(),
        vec![event("Deposited", 1)],
    )
    .await
    .unwrap();
    let outside = acct
        .append_to_stream("order-1", &Default::default(), vec![event("Paid", 1)])
        .await;
    assert!(is_access_denied(&outside), "{outside:?}");
    let outside = acct
        .read_stream("order-1", &ReadStreamOptions::default())
        .await;
    let outside = match outside {
        Ok(mut read) => read.next().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(is_access_denied(&outside), "{outside:?}");
    assert_eq!(
        all_streams(&acct, &ReadAllOptions::default())
            .await
            .unwrap(),
        ["account-1", "account-1"]
    );
    assert_eq!(
        all_streams(&admin, &ReadAllOptions::default())
            .await
            .unwrap(),
        ["account-1", "order-1", "account-1"]
    );

    // A bearer token, through the per-call credentials.
    let bearer =
        ReadAllOptions::default().authenticated(kurrentdb::Authentication::bearer("reader-secret"));
    assert_eq!(all_streams(&nobody, &bearer).await.unwrap().len(), 3);
}
