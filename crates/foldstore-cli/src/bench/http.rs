//! The HTTP workloads: `http-append` (one-event appends through the server, next to
//! the same run's in-process `append-1`) and `sse-fanout` (many server-sent-event
//! subscribers to one server).
//!
//! The clients are plain hyper HTTP/1.1 connections, kept alive, on a runtime of
//! their own whose threads are named `fs-load`, so that `/proc/self/task` tells their
//! CPU time from the server's: the load generator shares the machine with the server
//! and the report says how much of it it took.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldstore_core::{AppendResult, EventStore, StreamName};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;

use super::load::{self, LoadSpec};
use super::payload::{self, STREAMS};
use super::procstat;
use super::report::{Outcome, ratio, round};
use super::workloads::Params;
use super::workloads::{self, READ_PAGE};
use crate::backend::Store;
use crate::error::CliError;

/// The name prefix of the load generator's threads.
pub(super) const LOAD_THREADS: &str = "fs-load";
/// How long subscribers may lag after the last append before the run fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn progress(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

pub(super) fn bench_err(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Bench(format!("{what}: {e}"))
}

/// A runtime of its own, shut down without blocking when dropped (a runtime dropped
/// the ordinary way inside the bench's async code would panic).
pub(super) struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    pub(super) fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(rt) => rt.spawn(future),
            None => tokio::spawn(future),
        }
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A runtime with `threads` workers named `name`.
pub(super) fn runtime(name: &str, threads: usize) -> Result<OwnRuntime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .map(|rt| OwnRuntime(Some(rt)))
        .map_err(|e| bench_err("could not start a runtime", e))
}

/// An HTTP/1.1 connection to `addr`, kept alive.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, CliError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| bench_err("could not connect to the server", e))?;
    tcp.set_nodelay(true)
        .map_err(|e| bench_err("could not set TCP_NODELAY", e))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| bench_err("HTTP handshake failed", e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// One append request.
fn append_request(
    stream: &StreamName,
    expected: Option<u64>,
    data: &[u8],
) -> Result<Request<Full<Bytes>>, CliError> {
    let expected = expected.map_or_else(|| "\"no_stream\"".to_owned(), |r| r.to_string());
    let mut body = Vec::with_capacity(data.len() + 96);
    body.extend_from_slice(b"{\"expected_revision\":");
    body.extend_from_slice(expected.as_bytes());
    body.extend_from_slice(b",\"events\":[{\"type\":\"");
    body.extend_from_slice(payload::EVENT_TYPE.as_bytes());
    body.extend_from_slice(b"\",\"data\":");
    body.extend_from_slice(data);
    body.extend_from_slice(b"}]}");
    Request::post(format!("/streams/{}", stream.as_str()))
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| bench_err("could not build a request", e))
}

/// Sends `request`; the status and body.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), CliError> {
    sender
        .ready()
        .await
        .map_err(|e| bench_err("the connection closed", e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| bench_err("a request failed", e))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| bench_err("a response body failed", e))?
        .to_bytes();
    Ok((status, body))
}

/// What one HTTP client did.
#[derive(Default)]
pub(super) struct ClientResult {
    pub(super) events: u64,
    pub(super) latencies: Vec<Duration>,
    pub(super) conflicts: u64,
}

/// One keep-alive client appending one event at a time to the streams it owns, with
/// the exact expected revision, as `append-1` does in process.
async fn append_client(
    addr: SocketAddr,
    streams: Arc<[StreamName]>,
    owned: Vec<usize>,
    quota: u64,
    seq_base: u64,
) -> Result<ClientResult, CliError> {
    let mut out = ClientResult {
        latencies: Vec::with_capacity(usize::try_from(quota).unwrap_or(0)),
        ..ClientResult::default()
    };
    if owned.is_empty() {
        return Ok(out);
    }
    let mut sender = connect(addr).await?;
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut revisions: Vec<Option<u64>> = vec![None; owned.len()];
    let mut seq = seq_base;
    for _ in 0..quota {
        let k = rng.random_range(0..owned.len());
        let stream = &streams[owned[k]];
        loop {
            seq += 1;
            let request = append_request(stream, revisions[k], &payload::event_data(seq, 0))?;
            let t0 = Instant::now();
            let (status, body) = send(&mut sender, request).await?;
            match status {
                StatusCode::OK => {
                    out.latencies.push(t0.elapsed());
                    let r: AppendResult = serde_json::from_slice(&body)
                        .map_err(|e| bench_err("an append answer did not parse", e))?;
                    revisions[k] = Some(r.next_expected_revision);
                    out.events += 1;
                    break;
                }
                StatusCode::CONFLICT => {
                    out.conflicts += 1;
                    let problem: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    revisions[k] = problem["actual"].as_u64();
                }
                other => {
                    return Err(CliError::Bench(format!(
                        "an append answered {other}: {}",
                        String::from_utf8_lossy(&body)
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// `foldstore_server::serve` on a free loopback port, on a runtime of its own
/// (threads `fs-server`).
pub(super) struct InProcessServer {
    pub(super) addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Dropped last: a server dropped without [`InProcessServer::stop`] is abandoned.
    runtime: OwnRuntime,
}

impl InProcessServer {
    /// The HTTP API with the default configuration.
    fn start(store: Arc<dyn EventStore>) -> Result<Self, CliError> {
        Self::with_config(store, foldstore_server::ServerConfig::default())
    }

    /// The server `config` describes (with a gRPC router, for instance).
    pub(super) fn with_config(
        store: Arc<dyn EventStore>,
        config: foldstore_server::ServerConfig,
    ) -> Result<Self, CliError> {
        let runtime = runtime("fs-server", 2)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| bench_err("could not bind 127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| bench_err("no local address", e))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            foldstore_server::serve(listener, store, config, async move {
                let _ = stopped.await;
            })
            .await
        });
        Ok(Self {
            addr,
            stop,
            served,
            runtime,
        })
    }

    /// Stops the server and waits until it has let go of the store.
    pub(super) async fn stop(self) -> Result<(), CliError> {
        let _ = self.stop.send(());
        let served = tokio::time::timeout(Duration::from_secs(10), self.served).await;
        drop(self.runtime);
        match served {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(bench_err("the server failed", e)),
            Ok(Err(e)) => Err(bench_err("the server task failed", e)),
            Err(_) => Err(CliError::Bench(
                "the server did not stop within 10 s".to_owned(),
            )),
        }
    }
}

/// `http-append`: the same run's in-process `append-1` first, then the same load
/// through the HTTP API of an in-process server on a free loopback port.
pub(crate) async fn http_append(store: &Store, p: Params) -> Result<Outcome, CliError> {
    let events = p.events.unwrap_or(100_000);
    let clients = p.concurrency.max(1) as usize;

    progress(format!(
        "baseline: in-process append-1, {events} events, {clients} tasks"
    ));
    let spec = LoadSpec {
        concurrency: p.concurrency,
        events,
        batch: 1,
        deadline: None,
        rate: None,
        clock: Instant::now(),
        gate: None,
    };
    let base = load::run(store, &payload::stream_names("inproc", STREAMS), &spec).await?;
    let inprocess_rate = base.events as f64 / base.elapsed.as_secs_f64();
    progress(format!("baseline: {inprocess_rate:.0} events/s"));

    let HttpAppends {
        total,
        elapsed,
        load_cpu,
        server_cpu,
    } = http_appends(store, events, clients, "http").await?;
    let http_rate = total.events as f64 / elapsed.as_secs_f64();
    let round = |x: f64, d: i32| {
        let f = 10f64.powi(d);
        (x * f).round() / f
    };
    let mut extra = Map::new();
    extra.insert("clients".into(), json!(clients));
    extra.insert(
        "inprocess_append1_events_per_sec".into(),
        json!(round(inprocess_rate, 1)),
    );
    extra.insert(
        "ratio_vs_inprocess_append1".into(),
        json!(round(http_rate / inprocess_rate.max(1e-9), 3)),
    );
    extra.insert("load_cpu_s".into(), json!(round(load_cpu, 2)));
    extra.insert("server_cpu_s".into(), json!(round(server_cpu, 2)));
    extra.insert(
        "load_cpu_share".into(),
        json!(round(load_cpu / (load_cpu + server_cpu).max(1e-9), 3)),
    );
    extra.insert(
        "cores_used".into(),
        json!(round((load_cpu + server_cpu) / elapsed.as_secs_f64(), 2)),
    );
    extra.insert("target_events_per_sec".into(), json!(20_000));
    extra.insert("target_ratio_vs_inprocess".into(), json!(0.5));
    Ok(Outcome {
        events: total.events,
        elapsed,
        latencies: total.latencies,
        latency_of: "HTTP append of 1 event (request to response)",
        conflicts: total.conflicts,
        writes: true,
        peak_rss: None,
        extra,
    })
}

/// What the HTTP phase of `http-append` measured.
pub(super) struct HttpAppends {
    pub(super) total: ClientResult,
    pub(super) elapsed: Duration,
    pub(super) load_cpu: f64,
    pub(super) server_cpu: f64,
}

/// The store as the server takes it.
pub(super) fn dyn_store(store: &Store) -> Arc<dyn EventStore> {
    match store {
        Store::Sqlite(s) => Arc::new(s.clone()),
        Store::Postgres(s) => Arc::new(s.clone()),
    }
}

/// `events` one-event appends from `clients` keep-alive HTTP clients to an in-process
/// server on a free loopback port, to streams named `<prefix>-<n>`.
pub(super) async fn http_appends(
    store: &Store,
    events: u64,
    clients: usize,
    prefix: &str,
) -> Result<HttpAppends, CliError> {
    let server = InProcessServer::start(dyn_store(store))?;
    let addr = server.addr;
    progress(format!(
        "HTTP: {events} one-event appends from {clients} keep-alive clients to http://{addr}"
    ));
    let load_rt = runtime(LOAD_THREADS, 2)?;
    let streams = payload::stream_names(prefix, STREAMS);
    let appends = events;
    let cpu_before = procstat::threads();
    let start = Instant::now();
    let mut handles = Vec::with_capacity(clients);
    for c in 0..clients {
        let quota = appends / clients as u64 + u64::from((c as u64) < appends % clients as u64);
        let owned: Vec<usize> = (c..streams.len()).step_by(clients).collect();
        handles.push(load_rt.spawn(append_client(
            addr,
            Arc::clone(&streams),
            owned,
            quota,
            (c as u64) << 40,
        )));
    }
    let mut results = Vec::with_capacity(clients);
    for h in handles {
        results.push(h.await);
    }
    let elapsed = start.elapsed();
    let cpu_after = procstat::threads();
    drop(load_rt);
    server.stop().await?;
    let mut total = ClientResult::default();
    for r in results {
        let r = r.map_err(|e| bench_err("a client task failed", e))??;
        total.events += r.events;
        total.conflicts += r.conflicts;
        total.latencies.extend(r.latencies);
    }
    let (load_cpu, server_cpu) = procstat::split_since(&cpu_before, &cpu_after, LOAD_THREADS);
    Ok(HttpAppends {
        total,
        elapsed,
        load_cpu,
        server_cpu,
    })
}

/// One page of `GET /all` as the reader needs it: how many events, and where next.
#[derive(serde::Deserialize)]
struct PageHead {
    events: Vec<serde::de::IgnoredAny>,
    next: Option<String>,
}

/// `http-read-all`: fills the store, pages through `$all` in process (the same-run
/// baseline), then pages through `GET /all?limit=1000` of an in-process server on a
/// free loopback port with one keep-alive client, which checks each page is JSON
/// and counts its events.
pub(crate) async fn http_read_all(store: &Store, p: Params) -> Result<Outcome, CliError> {
    let events = p.events.unwrap_or(1_000_000);
    let streams = payload::stream_names("fill", STREAMS);
    workloads::fill(store, &streams, events, workloads::FILL_TASKS).await?;

    progress("baseline: in-process read-all, pages of 1000");
    let (base_read, base_elapsed, _) = workloads::page_through_all(store).await?;
    let inprocess_rate = base_read as f64 / base_elapsed.as_secs_f64();
    progress(format!("baseline: {inprocess_rate:.0} events/s"));

    let server = InProcessServer::start(dyn_store(store))?;
    let addr = server.addr;
    progress(format!(
        "HTTP: paging GET http://{addr}/all?limit={READ_PAGE}"
    ));
    let load_rt = runtime(LOAD_THREADS, 1)?;
    let cpu_before = procstat::threads();
    let start = Instant::now();
    let reader = load_rt.spawn(async move {
        let mut sender = connect(addr).await?;
        let mut latencies = Vec::new();
        let mut read = 0u64;
        let mut bytes = 0u64;
        let mut from: Option<String> = None;
        loop {
            let uri = match &from {
                Some(f) => format!("/all?limit={READ_PAGE}&from={f}"),
                None => format!("/all?limit={READ_PAGE}"),
            };
            let request = Request::get(uri)
                .header("host", "127.0.0.1")
                .body(Full::new(Bytes::new()))
                .map_err(|e| bench_err("could not build a request", e))?;
            let t0 = Instant::now();
            let (status, body) = send(&mut sender, request).await?;
            if status != StatusCode::OK {
                return Err(CliError::Bench(format!(
                    "GET /all answered {status}: {}",
                    String::from_utf8_lossy(&body)
                )));
            }
            let page: PageHead = serde_json::from_slice(&body)
                .map_err(|e| bench_err("a page of GET /all did not parse", e))?;
            latencies.push(t0.elapsed());
            read += page.events.len() as u64;
            bytes += body.len() as u64;
            match page.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
        Ok::<_, CliError>((read, bytes, latencies))
    });
    let result = reader.await;
    let elapsed = start.elapsed();
    let cpu_after = procstat::threads();
    drop(load_rt);
    server.stop().await?;
    let (read, bytes, latencies) = result.map_err(|e| bench_err("the reader task failed", e))??;
    if read != base_read {
        return Err(CliError::Bench(format!(
            "GET /all returned {read} events where the store holds {base_read}"
        )));
    }
    let (load_cpu, server_cpu) = procstat::split_since(&cpu_before, &cpu_after, LOAD_THREADS);
    let http_rate = read as f64 / elapsed.as_secs_f64();
    let mut extra = Map::new();
    extra.insert("page_size".into(), json!(READ_PAGE));
    extra.insert("response_mb".into(), json!(round(bytes as f64 / 1e6, 1)));
    extra.insert(
        "inprocess_read_all_events_per_sec".into(),
        json!(inprocess_rate.round()),
    );
    extra.insert(
        "ratio_vs_inprocess_read_all".into(),
        json!(ratio(http_rate, inprocess_rate)),
    );
    extra.insert("target_ratio_vs_inprocess".into(), json!(0.5));
    extra.insert("load_cpu_s".into(), json!(round(load_cpu, 2)));
    extra.insert("server_cpu_s".into(), json!(round(server_cpu, 2)));
    Ok(Outcome {
        events: read,
        elapsed,
        latencies,
        latency_of: "GET /all of 1000 events (request to parsed page)",
        conflicts: 0,
        writes: false,
        peak_rss: None,
        extra,
    })
}

/// A `foldstore serve` child process on a free port, stopped (SIGINT) when dropped.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(data_dir: &std::path::Path) -> Result<Self, CliError> {
        use std::io::{BufRead, BufReader};
        let exe = std::env::current_exe()
            .map_err(|e| bench_err("could not find the foldstore binary", e))?;
        let mut child = Command::new(exe)
            .args(["serve", "--port", "0", "--data-dir"])
            .arg(data_dir)
            .env_remove("FOLDSTORE_DATABASE_URL")
            .env_remove("FOLDSTORE_TOKENS_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| bench_err("could not start foldstore serve", e))?;
        let mut line = String::new();
        let read = child
            .stdout
            .take()
            .map(|out| BufReader::new(out).read_line(&mut line));
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .and_then(|a| a.trim_end_matches('/').parse().ok());
        match (read, addr) {
            (Some(Ok(_)), Some(addr)) => Ok(Self { child, addr }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(CliError::Bench(format!(
                    "foldstore serve did not print its address (got {line:?})"
                )))
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let interrupted = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .is_ok_and(|s| s.success());
        if !interrupted {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// What one SSE subscriber received.
#[derive(Default)]
struct Received {
    /// Append-to-delivery latency of each event, in microseconds.
    latencies_us: Vec<u32>,
}

/// The `sent_ns` stamp in an SSE block's data.
fn sent_ns(block: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent_ns\":";
    let at = block.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = block[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&block[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// One subscriber: `GET /all/subscribe?from=end`, then one latency per event until
/// `expected` events arrived. Says `subscribed` once the server answered.
async fn subscriber(
    addr: SocketAddr,
    clock: Instant,
    expected: u64,
    subscribed: Arc<tokio::sync::Barrier>,
) -> Result<Received, CliError> {
    let mut sender = connect(addr).await?;
    let request = Request::get("/all/subscribe?from=end")
        .header("host", "127.0.0.1")
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))
        .map_err(|e| bench_err("could not build a request", e))?;
    sender
        .ready()
        .await
        .map_err(|e| bench_err("the connection closed", e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| bench_err("subscribe failed", e))?;
    if response.status() != StatusCode::OK {
        return Err(CliError::Bench(format!(
            "subscribe answered {}",
            response.status()
        )));
    }
    subscribed.wait().await;
    let mut body = response.into_body();
    let mut buffer: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out = Received {
        latencies_us: Vec::with_capacity(usize::try_from(expected).unwrap_or(0)),
    };
    while (out.latencies_us.len() as u64) < expected {
        let Some(frame) = body.frame().await else {
            return Err(CliError::Bench(
                "the server closed a subscription".to_owned(),
            ));
        };
        let frame = frame.map_err(|e| bench_err("a subscription failed", e))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&chunk);
        let now = clock.elapsed();
        let mut consumed = 0;
        while let Some(end) = buffer[consumed..].windows(2).position(|w| w == b"\n\n") {
            let block = &buffer[consumed..consumed + end];
            if block.windows(12).any(|w| w == b"event: error") {
                return Err(CliError::Bench(format!(
                    "a subscriber got an error event: {}",
                    String::from_utf8_lossy(block)
                )));
            }
            if let Some(sent) = sent_ns(block) {
                let latency = now.saturating_sub(Duration::from_nanos(sent));
                out.latencies_us
                    .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
            }
            consumed += end + 2;
        }
        buffer.drain(..consumed);
    }
    Ok(out)
}

/// `sse-fanout`: `--concurrency` SSE subscribers (1,000 for the target) to one
/// `foldstore serve` child process, while one writer appends at `--rate` events per
/// second (100 by default) for `--events` events (1,000 by default). The server runs
/// as its own process, on a fresh SQLite store in the benchmark directory, so that its
/// memory is measured apart from the subscribers'.
pub(crate) async fn sse_fanout(dir: &std::path::Path, p: Params) -> Result<Outcome, CliError> {
    let subscribers = p.concurrency.max(1) as usize;
    let rate = p.rate.unwrap_or(100);
    let events = p.events.unwrap_or(1_000);
    let server = ServerProcess::start(&dir.join("sse-server"))?;
    let addr = server.addr;
    let pid = server.child.id();
    progress(format!(
        "{subscribers} SSE subscribers to http://{addr} (pid {pid}); then {events} events at {rate}/s"
    ));
    let load_rt = runtime(LOAD_THREADS, 2)?;
    let clock = Instant::now();
    let subscribed = Arc::new(tokio::sync::Barrier::new(subscribers + 1));
    let mut handles = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        handles.push(load_rt.spawn(subscriber(addr, clock, events, Arc::clone(&subscribed))));
    }
    // Every subscriber has its answer (and so its subscription) before the first append.
    let all_subscribed = tokio::time::timeout(Duration::from_secs(60), subscribed.wait()).await;
    if all_subscribed.is_err() {
        return Err(CliError::Bench(
            "not every subscriber was subscribed within 60 s".to_owned(),
        ));
    }
    let rss_idle = procstat::status_mb(pid, "VmRSS");
    progress(format!(
        "all subscribed; server RSS {:.1} MB",
        rss_idle.unwrap_or(0.0)
    ));

    // The writer, on the load runtime too, paced.
    let server_cpu_before = procstat::process_cpu(pid);
    let cpu_before = procstat::threads();
    let start = Instant::now();
    let writer = load_rt.spawn(async move {
        let mut sender = connect(addr).await?;
        let stream = StreamName::new("fanout-1").map_err(|e| bench_err("stream name", e))?;
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut append_latencies = Vec::with_capacity(usize::try_from(events).unwrap_or(0));
        let mut revision = None;
        for seq in 0..events {
            interval.tick().await;
            let sent = u64::try_from(clock.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let request = append_request(&stream, revision, &payload::event_data(seq, sent))?;
            let t0 = Instant::now();
            let (status, body) = send(&mut sender, request).await?;
            if status != StatusCode::OK {
                return Err(CliError::Bench(format!(
                    "an append answered {status}: {}",
                    String::from_utf8_lossy(&body)
                )));
            }
            let r: AppendResult = serde_json::from_slice(&body)
                .map_err(|e| bench_err("an append answer did not parse", e))?;
            revision = Some(r.next_expected_revision);
            append_latencies.push(t0.elapsed());
        }
        Ok::<_, CliError>(append_latencies)
    });

    // Sample the server's memory while it works.
    let mut rss_peak = rss_idle.unwrap_or(0.0);
    let sampler_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&sampler_stop);
        tokio::task::spawn_blocking(move || {
            let mut peak = 0.0f64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(mb) = procstat::status_mb(pid, "VmRSS") {
                    peak = peak.max(mb);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };
    let append_latencies = writer
        .await
        .map_err(|e| bench_err("the writer failed", e))??;
    let appended_at = start.elapsed();
    let mut latencies_us: Vec<u32> = Vec::with_capacity(subscribers * events as usize);
    let mut complete = 0usize;
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    for h in handles {
        match tokio::time::timeout_at(deadline, h).await {
            Ok(joined) => {
                let r = joined.map_err(|e| bench_err("a subscriber task failed", e))??;
                latencies_us.extend(r.latencies_us);
                complete += 1;
            }
            Err(_) => break,
        }
    }
    let elapsed = start.elapsed();
    let cpu_after = procstat::threads();
    let server_cpu = match (server_cpu_before, procstat::process_cpu(pid)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    sampler_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rss_peak = rss_peak.max(sampler.await.unwrap_or(0.0));
    let hwm = procstat::status_mb(pid, "VmHWM");
    drop(load_rt);
    drop(server);
    if complete < subscribers {
        return Err(CliError::Bench(format!(
            "only {complete} of {subscribers} subscribers received all {events} events within {} s of the last append",
            DELIVERY_TIMEOUT.as_secs()
        )));
    }

    let (load_cpu, _) = procstat::split_since(&cpu_before, &cpu_after, LOAD_THREADS);
    let round = |x: f64, d: i32| {
        let f = 10f64.powi(d);
        (x * f).round() / f
    };
    let deliveries = latencies_us.len() as u64;
    let mut append_ms: Vec<f64> = append_latencies
        .iter()
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    append_ms.sort_by(f64::total_cmp);
    let mut extra = Map::new();
    extra.insert("subscribers".into(), json!(subscribers));
    extra.insert("events_appended".into(), json!(events));
    extra.insert("append_rate_per_sec".into(), json!(rate));
    extra.insert(
        "achieved_append_rate_per_sec".into(),
        json!(round(events as f64 / appended_at.as_secs_f64(), 1)),
    );
    extra.insert("deliveries".into(), json!(deliveries));
    extra.insert(
        "deliveries_per_sec".into(),
        json!(round(deliveries as f64 / elapsed.as_secs_f64(), 1)),
    );
    extra.insert(
        "append_p99_ms".into(),
        json!(super::report::percentile(&append_ms, 99.0).map(|x| round(x, 3))),
    );
    extra.insert(
        "server_rss_idle_mb".into(),
        json!(rss_idle.map(|x| round(x, 1))),
    );
    extra.insert("server_rss_peak_mb".into(), json!(round(rss_peak, 1)));
    extra.insert("server_vmhwm_mb".into(), json!(hwm.map(|x| round(x, 1))));
    extra.insert(
        "server_cpu_s".into(),
        json!(server_cpu.map(|x| round(x, 2))),
    );
    extra.insert("load_cpu_s".into(), json!(round(load_cpu, 2)));
    extra.insert("target_p99_ms".into(), json!(50));
    extra.insert("target_server_rss_mb".into(), json!(200));
    Ok(Outcome {
        events: deliveries,
        elapsed,
        latencies: latencies_us
            .into_iter()
            .map(|us| Duration::from_micros(u64::from(us)))
            .collect(),
        latency_of: "append-to-delivery over SSE (per subscriber and event)",
        conflicts: 0,
        writes: false,
        peak_rss: Some((round(rss_peak, 1), "server process")),
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_stamps_are_found_in_sse_blocks() {
        let data = payload::event_data(3, 123_456_789);
        let mut block = b"id: 9\nevent: event\ndata: {\"data\":".to_vec();
        block.extend_from_slice(&data);
        block.extend_from_slice(b"}");
        assert_eq!(sent_ns(&block), Some(123_456_789));
        assert_eq!(sent_ns(b": heartbeat"), None);
    }
}
