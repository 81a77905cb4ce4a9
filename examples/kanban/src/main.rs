//! `kanban`: serves the board on a SQLite store in a directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use foldstore_sqlite::{SqliteOptions, SqliteStore};

/// A kanban board on foldstore, live in every browser that has it open.
#[derive(Parser)]
struct Args {
    /// Where the board's events are kept (the file `kanban.db` inside).
    #[arg(long, default_value = "./kanban-data")]
    data_dir: PathBuf,
    /// The address to serve on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kanban: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&args.data_dir)?;
    let path = args.data_dir.join("kanban.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e}; pick another with --listen",
                args.listen
            )
        })?;
    println!(
        "kanban board on http://{} (events in {})",
        listener.local_addr()?,
        path.display()
    );
    axum::serve(listener, kanban::app::router(Arc::new(store.clone())))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    store.close().await?;
    Ok(())
}
