//! `collab-editor`: serves the editor on a SQLite store in a directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use foldstore_sqlite::{SqliteOptions, SqliteStore};

/// A collaborative editor on foldstore, live in every browser that has it open.
#[derive(Parser)]
struct Args {
    /// Where the documents' edits are kept (the file `editor.db` inside).
    #[arg(long, default_value = "./editor-data")]
    data_dir: PathBuf,
    /// The address to serve on.
    #[arg(long, default_value = "127.0.0.1:3001")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("collab-editor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&args.data_dir)?;
    let path = args.data_dir.join("editor.db");
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
        "collaborative editor on http://{} (events in {})",
        listener.local_addr()?,
        path.display()
    );
    axum::serve(
        listener,
        collab_editor::app::router(Arc::new(store.clone())),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    store.close().await?;
    Ok(())
}
