//! The gRPC workloads, through the official KurrentDB Rust client against an
//! in-process `foldstore serve` server (`foldstore_server::serve` with the gRPC routes
//! mounted beside the HTTP API on one port, h2c and HTTP/1.1):
//!
//! - `grpc-read-all`: a catch-up subscription to `$all` from the start, until
//!   `CaughtUp`, next to the same run's in-process paging of `$all`;
//! - `grpc-append`: one-event appends with the exact expected revision from
//!   `--concurrency` tasks sharing one client (one HTTP/2 connection, as an
//!   application would), next to the same run's in-process `append-1` and
//!   `http-append` with as many keep-alive HTTP clients, each method run twice with
//!   half the events in the order in-process, HTTP, gRPC, gRPC, HTTP, in-process (see
//!   [`grpc_append`]).
//!
//! Each client connects before the clock starts (`connect_ms`, reported apart): the
//! official client's first connection waits its discovery interval, half a second,
//! which an application pays once per process.
//!
//! The client is built only with the `grpc-bench` feature, which brings in a gRPC
//! client stack the `foldstore` binary has no other use for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldstore_core::{EventStore, StreamName};
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, EventData, StreamPosition, StreamState,
    SubscribeToAllOptions, SubscriptionEvent,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, json};

use super::http::{
    ClientResult, HttpAppends, InProcessServer, LOAD_THREADS, OwnRuntime, bench_err, dyn_store,
    http_appends, progress, runtime,
};
use super::load::{self, LoadSpec};
use super::payload::{self, STREAMS};
use super::procstat;
use super::report::{Outcome, ratio, round};
use super::workloads::{self, Params};
use crate::backend::Store;
use crate::error::CliError;

/// How long the subscription may stay silent before the run fails.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// `foldstore serve`'s server (`foldstore_server::serve` with the gRPC routes on the
/// API's port, h2c and HTTP/1.1) on one free loopback port, on a runtime of its own
/// (threads `fs-server`).
struct GrpcServer {
    addr: SocketAddr,
    server: InProcessServer,
}

impl GrpcServer {
    fn start(store: Arc<dyn EventStore>) -> Result<Self, CliError> {
        let mut config = foldstore_server::ServerConfig::default();
        config.grpc = Some(foldstore_grpc::routes(Arc::clone(&store)));
        let server = InProcessServer::with_config(store, config)?;
        Ok(Self {
            addr: server.addr,
            server,
        })
    }

    /// A client of the official KurrentDB crate for this server, made on `rt`: the
    /// client drives its connection on the runtime it was made on, and the load's
    /// CPU time is counted by its threads' names.
    async fn client(&self, rt: &OwnRuntime) -> Result<Client, CliError> {
        let settings = format!("kurrentdb://{}?tls=false", self.addr)
            .parse::<ClientSettings>()
            .map_err(|e| bench_err("bad connection string", e))?;
        rt.spawn(async move { Client::new(settings) })
            .await
            .map_err(|e| bench_err("the client task failed", e))?
            .map_err(|e| bench_err("could not make a KurrentDB client", e))
    }

    /// Connects `client` (discovery and the `ServerFeatures` call) before a
    /// measurement starts, and returns how long that took. The client connects on its
    /// first call, and with a single-host connection string it first sleeps its
    /// discovery interval (500 ms by default) before it tries the host: an
    /// application pays that once per process, not per call or subscription.
    async fn connect(client: &Client, rt: &OwnRuntime) -> Result<Duration, CliError> {
        let client = client.clone();
        let t0 = Instant::now();
        rt.spawn(async move { client.server_info().await })
            .await
            .map_err(|e| bench_err("the client task failed", e))?
            .map_err(|e| bench_err("the client could not connect", e))?;
        Ok(t0.elapsed())
    }

    /// Stops the server (its subscriptions end) and waits until it has let go of the
    /// store.
    async fn stop(self) -> Result<(), CliError> {
        self.server.stop().await
    }
}

/// `grpc-read-all`: fills the store, pages through `$all` in process (the same-run
/// baseline), then reads it all through a catch-up subscription of the official
/// client from the start until `CaughtUp`.
pub(crate) async fn grpc_read_all(store: &Store, p: Params) -> Result<Outcome, CliError> {
    let events = p.events.unwrap_or(1_000_000);
    let streams = payload::stream_names("fill", STREAMS);
    workloads::fill(store, &streams, events, workloads::FILL_TASKS).await?;

    progress("baseline: in-process read-all, pages of 1000");
    let (base_read, base_elapsed, _) = workloads::page_through_all(store).await?;
    let inprocess_rate = base_read as f64 / base_elapsed.as_secs_f64();
    progress(format!("baseline: {inprocess_rate:.0} events/s"));

    let server = GrpcServer::start(dyn_store(store))?;
    progress(format!(
        "gRPC: catch-up subscription to $all from the start at {}",
        server.addr
    ));
    let load_rt = runtime(LOAD_THREADS, 1)?;
    let client = server.client(&load_rt).await?;
    let connect = GrpcServer::connect(&client, &load_rt).await?;
    let cpu_before = procstat::threads();
    let start = Instant::now();
    let reader = load_rt.spawn(async move {
        let options = SubscribeToAllOptions::default().position(StreamPosition::Start);
        let mut sub = client.subscribe_to_all(&options).await;
        let mut read = 0u64;
        let mut bytes = 0u64;
        let mut first = None;
        loop {
            let event = tokio::time::timeout(SILENCE_TIMEOUT, sub.next_subscription_event())
                .await
                .map_err(|_| CliError::Bench("the subscription went silent for 30 s".into()))?
                .map_err(|e| bench_err("the subscription failed", e))?;
            match event {
                SubscriptionEvent::EventAppeared(e) => {
                    first.get_or_insert_with(|| start.elapsed());
                    bytes += e.get_original_event().data.len() as u64;
                    read += 1;
                }
                SubscriptionEvent::CaughtUp(_) => break,
                _ => {}
            }
        }
        Ok::<_, CliError>((read, bytes, first))
    });
    let result = reader.await;
    let elapsed = start.elapsed();
    let cpu_after = procstat::threads();
    drop(load_rt);
    server.stop().await?;
    let (read, bytes, first) = result.map_err(|e| bench_err("the reader task failed", e))??;
    if read != base_read {
        return Err(CliError::Bench(format!(
            "the subscription delivered {read} events before CaughtUp where the store holds {base_read}"
        )));
    }
    let (load_cpu, server_cpu) = procstat::split_since(&cpu_before, &cpu_after, LOAD_THREADS);
    let rate = read as f64 / elapsed.as_secs_f64();
    let mut extra = Map::new();
    extra.insert("data_mb".into(), json!(round(bytes as f64 / 1e6, 1)));
    extra.insert(
        "connect_ms".into(),
        json!(round(connect.as_secs_f64() * 1e3, 2)),
    );
    extra.insert(
        "first_event_ms".into(),
        json!(first.map(|d| round(d.as_secs_f64() * 1e3, 2))),
    );
    extra.insert(
        "inprocess_read_all_events_per_sec".into(),
        json!(inprocess_rate.round()),
    );
    extra.insert(
        "ratio_vs_inprocess_read_all".into(),
        json!(ratio(rate, inprocess_rate)),
    );
    extra.insert("target_ratio_vs_inprocess".into(), json!(0.5));
    extra.insert("load_cpu_s".into(), json!(round(load_cpu, 2)));
    extra.insert("server_cpu_s".into(), json!(round(server_cpu, 2)));
    Ok(Outcome {
        events: read,
        elapsed,
        latencies: first.into_iter().collect(),
        latency_of: "subscribe to the first event",
        conflicts: 0,
        writes: false,
        peak_rss: None,
        extra,
    })
}

/// One task appending one event at a time to the streams it owns, with the exact
/// expected revision, through the shared client.
async fn append_task(
    client: Client,
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
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut revisions: Vec<Option<u64>> = vec![None; owned.len()];
    let mut seq = seq_base;
    for _ in 0..quota {
        let k = rng.random_range(0..owned.len());
        let stream = streams[owned[k]].as_str();
        seq += 1;
        let data = String::from_utf8(payload::event_data(seq, 0))
            .map_err(|e| bench_err("the payload is not UTF-8", e))?;
        let data = serde_json::value::RawValue::from_string(data)
            .map_err(|e| bench_err("the payload is not JSON", e))?;
        let event = EventData::json(payload::EVENT_TYPE, &data)
            .map_err(|e| bench_err("could not make an event", e))?;
        let state = match revisions[k] {
            None => StreamState::NoStream,
            Some(r) => StreamState::StreamRevision(r),
        };
        let options = AppendToStreamOptions::default().stream_state(state);
        let t0 = Instant::now();
        let written = client
            .append_to_stream(stream, &options, event)
            .await
            .map_err(|e| bench_err("a gRPC append failed", e))?;
        out.latencies.push(t0.elapsed());
        revisions[k] = Some(written.next_expected_version);
        out.events += 1;
    }
    Ok(out)
}

/// One method's appends: how many, in how long, and the CPU split.
#[derive(Default)]
struct Measured {
    total: ClientResult,
    elapsed: Duration,
    load_cpu: f64,
    server_cpu: f64,
}

impl Measured {
    fn add(&mut self, other: Measured) {
        self.total.events += other.total.events;
        self.total.latencies.extend(other.total.latencies);
        self.elapsed += other.elapsed;
        self.load_cpu += other.load_cpu;
        self.server_cpu += other.server_cpu;
    }

    fn rate(&self) -> f64 {
        self.total.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `grpc-append`: the same one-event appends in process (`append-1`), through the
/// HTTP API (`http-append`) and through the official client's `Streams.Append`, from
/// `--concurrency` tasks, `--events` events each, in one run.
///
/// The store grows by three times `--events` over the run, and a later append costs
/// more than an earlier one (the HTTP phase repeated after the gRPC one took 25-35%
/// more server CPU than the first). So each method runs twice with half the events,
/// in the order in-process, HTTP, gRPC, gRPC, HTTP, in-process: every method meets
/// the same average store size, and each reports the sum of its two halves.
pub(crate) async fn grpc_append(store: &Store, p: Params) -> Result<Outcome, CliError> {
    let events = p.events.unwrap_or(50_000);
    let tasks = p.concurrency.max(1) as usize;
    let halves = [events - events / 2, events / 2];

    let mut inprocess = Measured::default();
    let mut http = Measured::default();
    let mut grpc = Measured::default();
    let mut connect = Duration::ZERO;
    for (round, half) in [(0, halves[0]), (1, halves[1])] {
        if half == 0 {
            continue;
        }
        let mut steps = [Method::InProcess, Method::Http, Method::Grpc];
        if round == 1 {
            steps.reverse();
        }
        for method in steps {
            let prefix = format!("{}{round}", method.prefix());
            match method {
                Method::InProcess => {
                    inprocess.add(inprocess_appends(store, half, p.concurrency, &prefix).await?);
                }
                Method::Http => {
                    let HttpAppends {
                        total,
                        elapsed,
                        load_cpu,
                        server_cpu,
                    } = http_appends(store, half, tasks, &prefix).await?;
                    http.add(Measured {
                        total,
                        elapsed,
                        load_cpu,
                        server_cpu,
                    });
                }
                Method::Grpc => {
                    let (measured, connected) = grpc_appends(store, half, tasks, &prefix).await?;
                    connect = connect.max(connected);
                    grpc.add(measured);
                }
            }
        }
    }
    let (inprocess_rate, http_rate, rate) = (inprocess.rate(), http.rate(), grpc.rate());
    progress(format!(
        "in process {inprocess_rate:.0}, HTTP {http_rate:.0}, gRPC {rate:.0} events/s"
    ));
    let mut extra = Map::new();
    extra.insert("tasks".into(), json!(tasks));
    extra.insert("clients".into(), json!(1));
    extra.insert(
        "phase_order".into(),
        json!("in-process, http, grpc, grpc, http, in-process (half the events each)"),
    );
    extra.insert(
        "connect_ms".into(),
        json!(round(connect.as_secs_f64() * 1e3, 2)),
    );
    extra.insert(
        "inprocess_append1_events_per_sec".into(),
        json!(round(inprocess_rate, 1)),
    );
    extra.insert(
        "http_append_events_per_sec".into(),
        json!(round(http_rate, 1)),
    );
    extra.insert("ratio_vs_http_append".into(), json!(ratio(rate, http_rate)));
    extra.insert(
        "ratio_vs_inprocess_append1".into(),
        json!(ratio(rate, inprocess_rate)),
    );
    extra.insert("target_ratio_vs_http_append".into(), json!(0.8));
    extra.insert("target_ratio_vs_inprocess_append1".into(), json!(0.5));
    extra.insert("load_cpu_s".into(), json!(round(grpc.load_cpu, 2)));
    extra.insert("server_cpu_s".into(), json!(round(grpc.server_cpu, 2)));
    extra.insert("http_load_cpu_s".into(), json!(round(http.load_cpu, 2)));
    extra.insert("http_server_cpu_s".into(), json!(round(http.server_cpu, 2)));
    Ok(Outcome {
        events: grpc.total.events,
        elapsed: grpc.elapsed,
        latencies: grpc.total.latencies,
        latency_of: "gRPC Streams.Append of 1 event (call to answer)",
        conflicts: 0,
        writes: true,
        peak_rss: None,
        extra,
    })
}

/// The three ways `grpc-append` appends.
#[derive(Debug, Clone, Copy)]
enum Method {
    InProcess,
    Http,
    Grpc,
}

impl Method {
    /// The stream names' prefix: every phase appends to streams of its own.
    fn prefix(self) -> &'static str {
        match self {
            Method::InProcess => "inproc",
            Method::Http => "http",
            Method::Grpc => "grpc",
        }
    }
}

/// `events` one-event appends in process from `concurrency` tasks (`append-1`).
async fn inprocess_appends(
    store: &Store,
    events: u64,
    concurrency: u32,
    prefix: &str,
) -> Result<Measured, CliError> {
    progress(format!(
        "in process: {events} one-event appends from {concurrency} tasks"
    ));
    let spec = LoadSpec {
        concurrency,
        events,
        batch: 1,
        deadline: None,
        rate: None,
        clock: Instant::now(),
        gate: None,
    };
    let r = load::run(store, &payload::stream_names(prefix, STREAMS), &spec).await?;
    Ok(Measured {
        total: ClientResult {
            events: r.events,
            latencies: r.latencies,
            conflicts: r.conflicts,
        },
        elapsed: r.elapsed,
        ..Measured::default()
    })
}

/// `events` one-event appends through the official client's `Streams.Append` from
/// `tasks` tasks sharing one client, and how long its connection took.
async fn grpc_appends(
    store: &Store,
    events: u64,
    tasks: usize,
    prefix: &str,
) -> Result<(Measured, Duration), CliError> {
    let server = GrpcServer::start(dyn_store(store))?;
    progress(format!(
        "gRPC: {events} one-event appends from {tasks} tasks sharing one client to {}",
        server.addr
    ));
    let load_rt = runtime(LOAD_THREADS, 2)?;
    let client = server.client(&load_rt).await?;
    let connect = GrpcServer::connect(&client, &load_rt).await?;
    let streams = payload::stream_names(prefix, STREAMS);
    let cpu_before = procstat::threads();
    let start = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let quota = events / tasks as u64 + u64::from((t as u64) < events % tasks as u64);
        let owned: Vec<usize> = (t..streams.len()).step_by(tasks).collect();
        handles.push(load_rt.spawn(append_task(
            client.clone(),
            Arc::clone(&streams),
            owned,
            quota,
            (t as u64) << 40,
        )));
    }
    let mut results = Vec::with_capacity(tasks);
    for h in handles {
        results.push(h.await);
    }
    let elapsed = start.elapsed();
    let cpu_after = procstat::threads();
    drop(load_rt);
    server.stop().await?;
    let mut total = ClientResult::default();
    for r in results {
        let r = r.map_err(|e| bench_err("an append task failed", e))??;
        total.events += r.events;
        total.latencies.extend(r.latencies);
    }
    let (load_cpu, server_cpu) = procstat::split_since(&cpu_before, &cpu_after, LOAD_THREADS);
    Ok((
        Measured {
            total,
            elapsed,
            load_cpu,
            server_cpu,
        },
        connect,
    ))
}
