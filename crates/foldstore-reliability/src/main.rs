//! `foldstore-reliability <scenario>`: runs one reliability scenario against a
//! `foldstore` binary and prints its checks, a JSON object and `N passed, N failed`.
//! Exits 0 when every check held, 1 when one did not, 2 when the scenario could not
//! run.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use foldstore_reliability::scenarios::{
    auth_walk, counters, disk_full, kill_loop, pg_restart, slow_consumers, sse_resume,
};
use foldstore_reliability::{Env, HarnessError, Report};

/// Reliability scenarios against the real `foldstore serve`.
#[derive(Debug, Parser)]
#[command(name = "foldstore-reliability")]
struct Cli {
    /// The `foldstore` binary to test.
    #[arg(
        long,
        global = true,
        env = "FOLDSTORE_BIN",
        default_value = "target/release/foldstore"
    )]
    foldstore: PathBuf,
    /// PostgreSQL for the PostgreSQL scenarios.
    #[arg(long, global = true, env = "FOLDSTORE_TEST_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Where SQLite stores and token files go (a real disk, not tmpfs).
    #[arg(long, global = true, default_value = "target/reliability")]
    scratch: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// SIGKILL the server again and again under concurrent writers.
    KillLoop(kill_loop::Options),
    /// SSE subscribers resume with Last-Event-ID across server SIGKILLs.
    SseResume(sse_resume::Options),
    /// PostgreSQL backends terminated and the PostgreSQL server crashed mid-load.
    PgRestart(pg_restart::Options),
    /// A full disk (tmpfs in a private mount namespace), then space again.
    DiskFull(disk_full::Options),
    /// Clients that stop reading SSE: the server's memory bound.
    SlowConsumers(slow_consumers::Options),
    /// Every documented operation with prefix- and scope-limited tokens.
    AuthWalk(auth_walk::Options),
    /// Read-then-append counters over two servers.
    Counters(counters::Options),
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let cli = Cli::parse();
    let env = Env {
        foldstore: cli.foldstore,
        postgres_url: cli.postgres_url.filter(|u| !u.is_empty()),
        scratch: cli.scratch,
    };
    let result: Result<Report, HarnessError> = match &cli.scenario {
        Scenario::KillLoop(o) => kill_loop::run(&env, o).await,
        Scenario::SseResume(o) => sse_resume::run(&env, o).await,
        Scenario::PgRestart(o) => pg_restart::run(&env, o).await,
        Scenario::DiskFull(o) => disk_full::run(&env, o).await,
        Scenario::SlowConsumers(o) => slow_consumers::run(&env, o).await,
        Scenario::AuthWalk(o) => auth_walk::run(&env, o).await,
        Scenario::Counters(o) => counters::run(&env, o).await,
    };
    match result {
        Ok(report) => {
            print!("{}", report.render());
            std::process::exit(if report.ok() { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("foldstore-reliability: {e}");
            println!("0 passed, 1 failed");
            std::process::exit(2);
        }
    }
}
