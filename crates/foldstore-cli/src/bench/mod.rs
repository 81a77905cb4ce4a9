//! `foldstore bench`: run a workload against a fresh store and report it next to
//! same-run baselines of the disk, of plain SQLite and (on PostgreSQL) of plain
//! PostgreSQL.

mod baseline;
pub(crate) mod cross_process;
#[cfg(feature = "grpc-bench")]
mod grpc;
mod http;
mod interleave;
mod load;
mod machine;
mod payload;
mod persistent;
mod procstat;
mod raw_sqlite;
mod rehydrate;
mod report;
mod workloads;

use std::path::{Path, PathBuf};

use crate::backend;
use crate::cli::{BenchArgs, Workload};
use crate::database_url::{DATABASE_FILE, DatabaseLocation, PgTuning};
use crate::error::CliError;
use machine::Machine;
use report::{Report, RunInfo};
use workloads::Params;

/// A directory for one benchmark run, removed when dropped (also on error) unless it
/// was given by the user.
#[derive(Debug)]
struct BenchDir {
    path: PathBuf,
    remove: bool,
}

impl BenchDir {
    /// A new `bench-<random>` directory under `parent`.
    fn fresh(parent: &Path) -> Result<Self, CliError> {
        let path = parent.join(format!("bench-{:08x}", rand::random::<u32>()));
        std::fs::create_dir(&path).map_err(|e| {
            CliError::io(
                format!(
                    "could not create the benchmark directory {}",
                    path.display()
                ),
                e,
            )
        })?;
        Ok(Self { path, remove: true })
    }

    /// The directory holding a database the user named; kept afterwards.
    fn existing(database: &Path) -> Self {
        let path = match database.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self {
            path,
            remove: false,
        }
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        if !self.remove {
            return;
        }
        // After Ctrl-C a baseline thread may still be closing its files for a moment:
        // retry briefly rather than leave the directory behind.
        let mut result = std::fs::remove_dir_all(&self.path);
        for _ in 0..20 {
            if result.is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            result = std::fs::remove_dir_all(&self.path);
        }
        if let Err(e) = result {
            eprintln!(
                "warning: could not remove the benchmark directory {}: {e}",
                self.path.display()
            );
        }
    }
}

/// A PostgreSQL schema made for one benchmark run, dropped with everything in it when
/// the guard is dropped: after the run, on error and after Ctrl-C.
#[derive(Debug)]
struct PgSchemaGuard {
    url: String,
    schema: String,
}

impl Drop for PgSchemaGuard {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Drop runs inside the CLI's runtime, which cannot block on a future: use a
        // thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(baseline::drop_pg_schema(&url, &schema))
                .map_err(|e| match e.as_db_error() {
                    Some(db) => db.to_string(),
                    None => e.to_string(),
                })
        })
        .join()
        .unwrap_or_else(|_| Err("the cleanup thread panicked".to_owned()));
        if let Err(e) = dropped {
            eprintln!(
                "warning: could not drop the benchmark schema {} (run DROP SCHEMA \"{}\" CASCADE): {e}",
                self.schema, self.schema
            );
        }
    }
}

/// Runs `foldstore bench`. `database` is `--database` when given on the command line;
/// `tuning` the PostgreSQL connection settings.
pub(crate) async fn run(
    args: BenchArgs,
    database: Option<String>,
    tuning: PgTuning,
) -> Result<(), CliError> {
    #[cfg(not(feature = "grpc-bench"))]
    if matches!(args.workload, Workload::GrpcReadAll | Workload::GrpcAppend) {
        return Err(grpc_bench_missing(args.workload));
    }
    // Declared first, so dropped last: after the store and the directory.
    let (_pg_schema, dir, location) = match database {
        Some(url) => match DatabaseLocation::parse(&url)? {
            DatabaseLocation::Sqlite(path) => (
                None,
                BenchDir::existing(&path),
                DatabaseLocation::Sqlite(path),
            ),
            DatabaseLocation::Postgres { url, .. } => {
                let schema = format!("foldstore_bench_{:016x}", rand::random::<u64>());
                let guard = PgSchemaGuard {
                    url: url.clone(),
                    schema: schema.clone(),
                };
                let dir = BenchDir::fresh(Path::new("."))?;
                let location = DatabaseLocation::Postgres {
                    url,
                    schema,
                    tuning,
                };
                (Some(guard), dir, location)
            }
        },
        None => {
            let dir = BenchDir::fresh(Path::new("."))?;
            let db = dir.path.join(DATABASE_FILE);
            (None, dir, DatabaseLocation::Sqlite(db))
        }
    };
    backend::check_durability(&location, args.durability)?;
    if args.subscriber_process {
        if args.workload != Workload::SubscribeLatency {
            return Err(CliError::Bench(
                "--subscriber-process applies to subscribe-latency only".to_owned(),
            ));
        }
        if matches!(location, DatabaseLocation::Sqlite(_)) {
            return Err(CliError::Bench(
                "--subscriber-process needs a database that two processes can open at once: use --database postgres://... (a SQLite store belongs to one process)".to_owned(),
            ));
        }
    }
    let machine = Machine::describe(&dir.path);
    if machine.is_memory_filesystem() {
        return Err(CliError::Bench(format!(
            "{} is on {} (mounted at {}): fsync costs nothing in memory, so the figures would mean nothing. Run the benchmark from a directory on a disk",
            dir.path.display(),
            machine.filesystem,
            machine.mount_point
        )));
    }
    tokio::select! {
        result = measure(&args, &dir, &location, machine) => result,
        _ = tokio::signal::ctrl_c() => {
            baseline::STOP.store(true, std::sync::atomic::Ordering::Relaxed);
            Err(CliError::Interrupted)
        }
    }
    // `dir` and `_pg_schema` are dropped here (the store already is), removing a fresh
    // directory and a fresh schema whatever happened.
}

/// The gRPC workloads in a binary built without the official client.
#[cfg(not(feature = "grpc-bench"))]
fn grpc_bench_missing(workload: Workload) -> CliError {
    CliError::Bench(format!(
        "{} drives the official KurrentDB client, which this foldstore was built without: build it with `cargo build --release -p foldstore-cli --features grpc-bench`",
        workload.name()
    ))
}

async fn measure(
    args: &BenchArgs,
    dir: &BenchDir,
    location: &DatabaseLocation,
    machine: Machine,
) -> Result<(), CliError> {
    eprintln!(
        "bench: measuring baselines (fsync, raw SQLite inserts) in {}",
        dir.path.display()
    );
    let baseline_dir = dir.path.clone();
    let mut baselines = tokio::task::spawn_blocking(move || baseline::measure(&baseline_dir))
        .await
        .map_err(|e| CliError::Bench(format!("the baseline measurement failed: {e}")))??;
    let mut synchronous_commit = None;
    if let DatabaseLocation::Postgres { url, schema, .. } = location {
        eprintln!("bench: measuring raw PostgreSQL inserts in schema {schema}");
        let pg = baseline::measure_pg(url, schema, args.concurrency).await?;
        baselines.raw_pg_insert_per_sec = Some(pg.inserts_per_sec);
        baselines.raw_pg_connections = Some(pg.connections);
        synchronous_commit = Some(pg.synchronous_commit);
    }

    let durability = args.durability;
    let mut store = backend::open(location, durability).await?;
    let backend_name = store.backend_name();
    let params = Params {
        concurrency: args.concurrency,
        events: args.events,
        rate: args.rate,
        subscriber_process: args.subscriber_process,
    };
    let outcome = match args.workload {
        Workload::Append1 => workloads::append_1(&store, location, params).await,
        Workload::AppendIf => workloads::append_if(&store, params).await,
        Workload::AppendBatch => workloads::append_batch(&store, location, params).await,
        Workload::ReadAll => {
            // It reopens the store (as a new subscriber process would) and hands back
            // the new handle.
            let (outcome, reopened) =
                workloads::read_all(store, location, durability, params).await?;
            store = reopened;
            Ok(outcome)
        }
        Workload::ReadStream => workloads::read_stream(&store, location, params).await,
        Workload::SubscribeLatency => workloads::subscribe_latency(&store, location, params).await,
        Workload::Rehydrate => rehydrate::rehydrate(&store, params).await,
        Workload::HttpAppend => http::http_append(&store, params).await,
        Workload::SseFanout => http::sse_fanout(&dir.path, params).await,
        Workload::HttpReadAll => http::http_read_all(&store, params).await,
        Workload::Persistent => persistent::persistent(&store, params).await,
        #[cfg(feature = "grpc-bench")]
        Workload::GrpcReadAll => grpc::grpc_read_all(&store, params).await,
        #[cfg(feature = "grpc-bench")]
        Workload::GrpcAppend => grpc::grpc_append(&store, params).await,
        #[cfg(not(feature = "grpc-bench"))]
        Workload::GrpcReadAll | Workload::GrpcAppend => Err(grpc_bench_missing(args.workload)),
    };
    backend::close(store).await?;
    let mut outcome = outcome?;
    if let Some(setting) = synchronous_commit {
        outcome
            .extra
            .insert("pg_synchronous_commit".into(), setting.into());
    }
    let report = Report::new(
        RunInfo {
            workload: args.workload.name(),
            backend: backend_name,
            durability: durability.name(),
            concurrency: args.concurrency,
            baselines,
            machine,
        },
        outcome,
    );
    for line in report.human_lines() {
        println!("{line}");
    }
    if args.json {
        let json = serde_json::to_string(&report)
            .map_err(|e| CliError::Bench(format!("could not serialize the report: {e}")))?;
        println!("{json}");
    }
    Ok(())
}
