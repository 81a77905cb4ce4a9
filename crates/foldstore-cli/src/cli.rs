//! The command line: every subcommand, option and its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use foldstore_core::ExpectedRevision;

use crate::backend::Durability;
use crate::logging::LogFormat;
use uuid::Uuid;

/// foldstore: an event store you can append to, read from and benchmark.
#[derive(Debug, Parser)]
#[command(name = "foldstore", version, about, long_about = None)]
#[command(after_help = "Examples:
  foldstore append account-42 --type Opened --data '{\"owner\":\"ada\"}'
  foldstore read account-42
  foldstore read '$all' --category account --limit 10
  foldstore tail '$all' --category account
  foldstore --server http://127.0.0.1:2113 --token \"$TOKEN\" read account-42
  foldstore export --output backup.ndjson && foldstore --data-dir ./copy import backup.ndjson
  foldstore bench append-1 --concurrency 64 --json
  foldstore --database postgres://app@127.0.0.1:5432/app --pg-schema billing read '$all'

Data commands (append, read, tail, delete, export, import) open the store directly
(--data-dir, --database), or talk to a running server with --server. A SQLite store
is locked by the process that has it open: while `foldstore serve` runs on it, use
--server.")]
pub(crate) struct Cli {
    /// Where the store lives; see `--help` for the database options.
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// A running server to talk to instead of opening the store.
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
    /// How log lines on standard error look: `text`, or `json` (one object per line).
    /// `RUST_LOG` sets the levels (default: `info` for `serve`, `warn` otherwise).
    #[arg(
        long,
        global = true,
        env = "FOLDSTORE_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        value_name = "FORMAT"
    )]
    pub(crate) log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where the store is. `--database` wins over `--data-dir`.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// Directory of the store; the database is the file `foldstore.db` inside it.
    #[arg(
        long,
        global = true,
        env = "FOLDSTORE_DATA_DIR",
        default_value = "./foldstore-data",
        value_name = "DIR"
    )]
    pub(crate) data_dir: PathBuf,
    /// Database to use instead of `--data-dir`: `sqlite:///path/to/file.db`, a plain
    /// path, or `postgres://user:password@host:port/database`.
    #[arg(
        long,
        global = true,
        env = "FOLDSTORE_DATABASE_URL",
        value_name = "URL"
    )]
    pub(crate) database: Option<String>,
    /// PostgreSQL only: the schema holding foldstore's tables, created if missing
    /// (default `foldstore`). Lower-case letters, digits and `_`, at most 40 bytes.
    #[arg(long, global = true, value_name = "SCHEMA")]
    pub(crate) pg_schema: Option<String>,
    /// PostgreSQL only: the most connections the store opens (appends, reads and
    /// subscriptions share them; default 16, at least 3).
    #[arg(
        long,
        global = true,
        env = "FOLDSTORE_PG_POOL_SIZE",
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(3..)
    )]
    pub(crate) pg_pool_size: Option<u16>,
    /// PostgreSQL only: cancel any statement of the store's that runs longer than this
    /// many milliseconds (default 30000; 0 keeps the server's own setting).
    #[arg(
        long,
        global = true,
        env = "FOLDSTORE_PG_STATEMENT_TIMEOUT_MS",
        value_name = "MS"
    )]
    pub(crate) pg_statement_timeout_ms: Option<u64>,
}

impl StoreArgs {
    /// The PostgreSQL connection settings given on the command line.
    pub(crate) fn pg_tuning(&self) -> crate::database_url::PgTuning {
        crate::database_url::PgTuning {
            pool_size: self.pg_pool_size.map(usize::from),
            statement_timeout_ms: self.pg_statement_timeout_ms,
        }
    }
}

/// A running server (`--server`), instead of opening the store in this process.
#[derive(Debug, Args)]
pub(crate) struct RemoteArgs {
    /// URL of a running `foldstore serve` (such as http://127.0.0.1:2113): data
    /// commands go through its HTTP API instead of opening the store.
    #[arg(long, global = true, env = "FOLDSTORE_SERVER", value_name = "URL")]
    pub(crate) server: Option<String>,
    /// Bearer token for --server (from `foldstore token create`). Prefer the
    /// environment variable: command lines are visible to other users.
    #[arg(
        long,
        global = true,
        env = "FOLDSTORE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub(crate) token: Option<String>,
    /// A PEM certificate to trust for an https --server (a self-signed one).
    #[arg(long, global = true, env = "FOLDSTORE_CA_CERT", value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Append one event to a stream and print the result as JSON.
    #[command(after_help = "Examples:
  foldstore append account-42 --type Opened --data '{\"owner\":\"ada\"}' --expected-revision no_stream
  foldstore append account-42 --type Deposited --expected-revision 0 --data-file deposit.json
  echo '{\"amount\":5}' | foldstore append account-42 --type Withdrawn

Prints {\"next_expected_revision\":N,\"position\":\"P\"}: pass N as --expected-revision
to the next append. A wrong expected revision exits with status 1 and says where the
stream is.")]
    Append(AppendArgs),
    /// Read a stream, or `$all`, as one JSON object per line (NDJSON).
    #[command(after_help = "Examples:
  foldstore read account-42
  foldstore read account-42 --backwards --limit 1
  foldstore read '$all' --from 1000 --limit 500
  foldstore read '$all' --category account --type Deposited

JSON data is printed as JSON under \"data\"; other content types as \"data_base64\".
For a stream, --from is a revision; for $all it is a position. Quote `$all` in
shells that expand `$`.")]
    Read(ReadArgs),
    /// Follow a stream or `$all` live, printing each event as a JSON line.
    #[command(after_help = crate::commands::tail::EXAMPLES)]
    Tail(crate::commands::tail::TailArgs),
    /// Delete a stream: soft (it can be written again), or tombstone (never again).
    #[command(after_help = crate::commands::delete::EXAMPLES)]
    Delete(crate::commands::delete::DeleteArgs),
    /// Write `$all` or one stream as NDJSON, to a file or standard output.
    #[command(after_help = crate::commands::export::EXAMPLES)]
    Export(crate::commands::export::ExportArgs),
    /// Append the events of an NDJSON export, idempotently and resumably.
    #[command(after_help = crate::commands::import::EXAMPLES)]
    Import(crate::commands::import::ImportArgs),
    /// Manage the persistent subscription groups (competing consumers) of a server.
    #[command(subcommand, after_help = crate::commands::subscriptions::examples())]
    Subscriptions(crate::commands::subscriptions::SubscriptionsCommand),
    /// Make bearer tokens for `serve --tokens-file`.
    #[command(subcommand)]
    Token(crate::commands::token::TokenCommand),
    /// Serve the HTTP API (JSON, and live subscriptions as server-sent events).
    #[command(after_help = "Examples:
  foldstore serve
  foldstore serve --port 8080 --data-dir /var/lib/foldstore
  foldstore --database postgres://app@127.0.0.1:5432/app serve
  foldstore serve --bind 0.0.0.0 --tokens-file tokens.txt --tls-cert cert.pem --tls-key key.pem
  foldstore serve --bind 0.0.0.0 --insecure

Serves on http://127.0.0.1:2113 by default and prints the URL. Ctrl-C stops it
gracefully: requests in flight finish, live subscriptions end, the store closes.
Without --tokens-file no token is needed, so binding to an address other than
loopback needs --tokens-file (make tokens with `foldstore token create`) or
--insecure. With --tls-cert and --tls-key it serves HTTPS.")]
    Serve(ServeArgs),
    /// Measure the store with a workload, next to same-run baselines of the disk.
    #[command(after_help = "Examples:
  foldstore bench append-1 --concurrency 64 --json
  foldstore bench append-batch
  foldstore bench read-all --events 200000
  foldstore bench subscribe-latency --concurrency 16 --rate 5000
  foldstore bench http-append --concurrency 64 --json
  foldstore bench sse-fanout --concurrency 1000 --rate 100 --json
  foldstore bench persistent --concurrency 64 --json
  foldstore bench append-1 --concurrency 64 --json --database postgres://user@host:5432/db

Workloads and their defaults (--events):
  append-1           one event per append, exact expected revision, 10,000 streams
                     (100,000 events with --concurrency 1, else 200,000); on PostgreSQL
                     it and append-batch report appends_per_transaction
  append-if          append-1's load, each append conditional on no new event with its
                     tag since this task's last append to the stream (never fails), after
                     the same run's plain append-1; reports ratio_vs_append_1
  append-batch       100 events per append (200,000 events)
  read-all           fill 1,000,000 events, read them in pages of 1,000, then through
                     subscribe_to_all(Start) on a reopened store; reports peak_rss_mb
  read-stream        fill one 10,000-event stream, read it whole 200 times, then 200
                     times raw (raw_read_stream_p50_ms, ratio_vs_raw_read_stream)
  subscribe-latency  a live $all subscriber while appenders run at half the measured
                     maximum rate (or --rate) for about 8 s; append-to-delivery latency
  rehydrate          build a 100,000-event stream and a 100-event stream, load each
                     through the command handler with snapshots every 100 events
                     (median of 25 loads): large_stream_ms, small_stream_ms
  http-append        in-process append-1 (the baseline), then the same one-event appends
                     from --concurrency keep-alive HTTP clients to an in-process server on
                     a free loopback port (100,000 events); reports the ratio and the load
                     generator's CPU share
  sse-fanout         --concurrency SSE subscribers to a `foldstore serve` child process
                     on a fresh SQLite store while one writer appends --rate events/s
                     (100) for --events events (1,000); delivery latency, server RSS
  persistent         fill 100 streams (50,000 events), read them in pages of 1,000 (the
                     baseline), then --concurrency consumers of one persistent
                     subscription group on $all ack every event; fails if one is lost
                     or held by two consumers at once

Without --database each run uses a fresh database in a new directory ./bench-<random>/
(removed afterwards), and measures the baselines (fsync rate, raw SQLite inserts) in that
same directory. It refuses to run on tmpfs. With --database postgres://... each run uses
a fresh schema foldstore_bench_<random> (dropped afterwards, --pg-schema is ignored), the
local baselines still run in ./bench-<random>/, and a raw PostgreSQL baseline (single-row
INSERT transactions at the run's concurrency, up to 64 connections) runs in the same
schema. With --json the last line printed is one JSON object with the results.
FOLDSTORE_DATABASE_URL is ignored here: pass --database.")]
    Bench(BenchArgs),
    /// The subscriber side of `bench subscribe-latency --subscriber-process`.
    #[command(hide = true)]
    BenchSubscriber(BenchSubscriberArgs),
}

/// Options of `foldstore append`.
#[derive(Debug, Args)]
pub(crate) struct AppendArgs {
    /// The stream, such as `account-42`.
    #[arg(value_name = "STREAM")]
    pub(crate) stream: String,
    /// The event type, such as `Deposited`.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) event_type: String,
    /// The event data. Without --data or --data-file, it is read from standard input.
    #[arg(long, value_name = "JSON", conflicts_with = "data_file")]
    pub(crate) data: Option<String>,
    /// Read the event data from this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) data_file: Option<PathBuf>,
    /// The media type of the data.
    #[arg(long, default_value = foldstore_core::JSON, value_name = "MEDIA_TYPE")]
    pub(crate) content_type: String,
    /// Event metadata, a JSON object.
    #[arg(long, value_name = "JSON")]
    pub(crate) metadata: Option<String>,
    /// What the stream must be at: `any`, `no_stream`, `stream_exists` or a revision.
    #[arg(long, default_value = "any", value_parser = parse_expected_revision, value_name = "REVISION")]
    pub(crate) expected_revision: ExpectedRevision,
    /// The event id; repeat an append with the same id to retry it safely.
    #[arg(long, value_name = "UUID")]
    pub(crate) id: Option<Uuid>,
}

/// Options of `foldstore read`.
#[derive(Debug, Args)]
pub(crate) struct ReadArgs {
    /// The stream to read, or `$all` for the global log.
    #[arg(value_name = "STREAM|$all")]
    pub(crate) stream: String,
    /// First revision (stream) or position (`$all`) to return, inclusive.
    #[arg(long, value_name = "N")]
    pub(crate) from: Option<u128>,
    /// Newest first.
    #[arg(long)]
    pub(crate) backwards: bool,
    /// At most this many events.
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<usize>,
    /// Only events of streams in this category (`$all` only).
    #[arg(long, value_name = "CATEGORY")]
    pub(crate) category: Option<String>,
    /// Only events of this type; repeat for several types.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) event_types: Vec<String>,
}

/// The benchmark workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Workload {
    /// One-event appends with an exact expected revision to random streams among 10,000.
    #[value(name = "append-1")]
    Append1,
    /// `append-1` with a DCB condition on each append (on the event's own tag), after
    /// the same run's plain `append-1`.
    AppendIf,
    /// Appends of 100 events each.
    AppendBatch,
    /// Fill 1,000,000 events, then read them all forwards in pages and by a subscription.
    ReadAll,
    /// Fill one 10,000-event stream and read it whole many times.
    ReadStream,
    /// A live subscriber to `$all` while appenders run at half the maximum rate.
    SubscribeLatency,
    /// Load a state through the command handler: a long stream with snapshots
    /// against a short one.
    Rehydrate,
    /// One-event appends through the HTTP API of an in-process server.
    HttpAppend,
    /// Many server-sent-event subscribers to one `foldstore serve` process.
    SseFanout,
    /// Page through `GET /all` of an in-process server, against in-process read-all.
    HttpReadAll,
    /// `--concurrency` consumers of one persistent subscription group on `$all` ack
    /// every event, against in-process read-all.
    Persistent,
    /// A catch-up `$all` subscription through the official KurrentDB client, against
    /// in-process read-all (needs the `grpc-bench` feature).
    GrpcReadAll,
    /// One-event appends through the official KurrentDB client, against in-process
    /// append-1 and http-append, each run twice with half the events in the order
    /// in-process, HTTP, gRPC, gRPC, HTTP, in-process (needs the `grpc-bench` feature).
    GrpcAppend,
}

impl Workload {
    /// The name used on the command line and in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Append1 => "append-1",
            Workload::AppendIf => "append-if",
            Workload::AppendBatch => "append-batch",
            Workload::ReadAll => "read-all",
            Workload::ReadStream => "read-stream",
            Workload::SubscribeLatency => "subscribe-latency",
            Workload::Rehydrate => "rehydrate",
            Workload::HttpAppend => "http-append",
            Workload::SseFanout => "sse-fanout",
            Workload::HttpReadAll => "http-read-all",
            Workload::Persistent => "persistent",
            Workload::GrpcReadAll => "grpc-read-all",
            Workload::GrpcAppend => "grpc-append",
        }
    }
}

/// Options of `foldstore bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub(crate) workload: Workload,
    /// Concurrent tasks issuing operations.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) concurrency: u32,
    /// How many events to write (append workloads) or to fill (read workloads). Each
    /// workload has its own default.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) events: Option<u64>,
    /// subscribe-latency only: appends per second to run at, instead of half the
    /// measured maximum.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) rate: Option<u64>,
    /// subscribe-latency only: run the subscriber in a second foldstore process, to
    /// measure delivery across processes (PostgreSQL only).
    #[arg(long)]
    pub(crate) subscriber_process: bool,
    /// What an acknowledged append promises: `full` (fsync per commit) or `normal`.
    #[arg(long, value_enum, default_value_t = Durability::Full)]
    pub(crate) durability: Durability,
    /// Print the results as one JSON object on the last line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Options of the hidden `foldstore bench-subscriber`.
#[derive(Debug, Args)]
pub(crate) struct BenchSubscriberArgs {
    /// Deliveries to wait for.
    #[arg(long)]
    pub(crate) events: u64,
    /// The Unix time, in nanoseconds, at which the parent's benchmark clock started.
    #[arg(long)]
    pub(crate) origin_unix_ns: u64,
}

/// Parses `any`, `no_stream`, `stream_exists` or a revision number.
pub(crate) fn parse_expected_revision(s: &str) -> Result<ExpectedRevision, String> {
    match s {
        "any" => Ok(ExpectedRevision::Any),
        "no_stream" | "no-stream" => Ok(ExpectedRevision::NoStream),
        "stream_exists" | "stream-exists" => Ok(ExpectedRevision::StreamExists),
        n => n.parse::<u64>().map(ExpectedRevision::Exact).map_err(|_| {
            format!(
                "{n:?} is not an expected revision: use any, no_stream, stream_exists or a revision number such as 3"
            )
        }),
    }
}

/// Arguments of `foldstore serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, env = "FOLDSTORE_PORT", default_value_t = 2113)]
    pub(crate) port: u16,
    /// Address to listen on.
    #[arg(
        long,
        env = "FOLDSTORE_BIND",
        default_value = "127.0.0.1",
        value_name = "IP"
    )]
    pub(crate) bind: std::net::IpAddr,
    /// Allow binding to an address other than loopback without authentication: anyone
    /// who can reach the port can read and write every stream.
    #[arg(long)]
    pub(crate) insecure: bool,
    /// The largest request body, in MiB.
    #[arg(long, default_value_t = 32, value_name = "MIB")]
    pub(crate) body_limit_mib: usize,
    /// Require bearer tokens listed (hashed) in this file; see `foldstore token create`.
    #[arg(long, env = "FOLDSTORE_TOKENS_FILE", value_name = "FILE")]
    pub(crate) tokens_file: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(
        long,
        env = "FOLDSTORE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "FOLDSTORE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub(crate) tls_key: Option<PathBuf>,
    /// Log requests that take longer than this many milliseconds, at `warn` (0 turns
    /// the slow-request line off). Live subscriptions are not timed.
    #[arg(
        long,
        env = "FOLDSTORE_SLOW_REQUEST_MS",
        default_value_t = 1000,
        value_name = "MS"
    )]
    pub(crate) slow_request_ms: u64,
    /// Export traces (a span per request, and per append down to its commit) over
    /// OTLP/HTTP to this collector, such as http://127.0.0.1:4318 (`/v1/traces` is
    /// added to a URL without a path).
    #[arg(long, env = "FOLDSTORE_OTLP_ENDPOINT", value_name = "URL")]
    pub(crate) otlp_endpoint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn expected_revision_values() {
        assert_eq!(parse_expected_revision("any"), Ok(ExpectedRevision::Any));
        assert_eq!(
            parse_expected_revision("no_stream"),
            Ok(ExpectedRevision::NoStream)
        );
        assert_eq!(
            parse_expected_revision("stream_exists"),
            Ok(ExpectedRevision::StreamExists)
        );
        assert_eq!(parse_expected_revision("7"), Ok(ExpectedRevision::Exact(7)));
        assert!(parse_expected_revision("-1").is_err());
        assert!(parse_expected_revision("latest").is_err());
    }
}
