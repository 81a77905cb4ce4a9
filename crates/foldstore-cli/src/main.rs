//! `foldstore`: serve, append to, read from and benchmark a foldstore event store.
//!
//! Exit status: 0 on success, 1 when an operation failed, 2 on a usage error.

mod backend;
mod bench;
mod cli;
mod commands;
mod database_url;
mod endpoint;
mod error;
mod logging;
#[cfg(feature = "otlp")]
mod otlp;
mod remote;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::error::{CliError, EXIT_FAILURE};

fn main() -> ExitCode {
    limit_malloc_arenas();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The bench uses --database only when it is given on the command line: a
    // benchmark must not fill the database an environment variable points at.
    let database_on_command_line =
        matches.value_source("database") == Some(ValueSource::CommandLine);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(run(cli, database_on_command_line)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !matches!(e, CliError::Logged(_)) {
                eprintln!("error: {e}");
            }
            e.exit_code()
        }
    }
}

async fn run(cli: Cli, database_on_command_line: bool) -> Result<(), CliError> {
    if cli.remote.server.is_some() && matches!(cli.command, Command::Serve(_) | Command::Bench(_)) {
        return Err(CliError::Usage(
            "--server (or FOLDSTORE_SERVER) is for the data commands: serve and bench run a store themselves".to_owned(),
        ));
    }
    if !matches!(cli.command, Command::Serve(_)) {
        logging::init(cli.log_format, "warn", None)?;
    }
    let (store, remote) = (&cli.store, &cli.remote);
    match cli.command {
        Command::Append(args) => commands::append::run(store, remote, args).await,
        Command::Read(args) => commands::read::run(store, remote, args).await,
        Command::Tail(args) => commands::tail::run(store, remote, args).await,
        Command::Delete(args) => commands::delete::run(store, remote, args).await,
        Command::Export(args) => commands::export::run(store, remote, args).await,
        Command::Import(args) => commands::import::run(store, remote, args).await,
        Command::Token(command) => commands::token::run(command),
        Command::Subscriptions(command) => commands::subscriptions::run(remote, command).await,
        Command::Serve(args) => commands::serve::run(&cli.store, cli.log_format, args).await,
        Command::BenchSubscriber(args) => {
            bench::cross_process::run_subscriber(&cli.store, args).await
        }
        Command::Bench(args) => {
            if cli.store.database.is_some() && !database_on_command_line {
                eprintln!(
                    "bench: ignoring FOLDSTORE_DATABASE_URL (a benchmark fills the database it runs on): pass --database to bench an existing database"
                );
            }
            if cli.store.pg_schema.is_some() {
                eprintln!(
                    "bench: ignoring --pg-schema (each PostgreSQL run uses a fresh schema, dropped afterwards)"
                );
            }
            let tuning = cli.store.pg_tuning();
            let database = cli.store.database.filter(|_| database_on_command_line);
            bench::run(args, database, tuning).await
        }
    }
}

/// Caps glibc's malloc arenas at two. By default glibc gives threads up to eight
/// arenas per core, and memory freed into one arena is rarely handed back: after a
/// burst of store reads on Tokio's blocking threads (200 live subscribers catching up,
/// say), the server kept tens of megabytes it no longer used. Two arenas cost no
/// measurable speed at two cores and keep the server under its memory bound
/// (`tests/stuck_clients.rs`). An operator's `MALLOC_ARENA_MAX` wins.
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called before any
        // other thread exists, and a refusal (a return of 0) leaves the default.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
