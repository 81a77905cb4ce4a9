//! SIGKILL loop over HTTP: concurrent writers append through `foldstore serve` while
//! the server is killed with SIGKILL at a random moment and restarted, again and
//! again; then the oracle reads everything back. Guards against acknowledging before
//! the commit is durable, torn group commits, and recovery that loses or reorders
//! committed appends. (A kill keeps the page cache: it does not simulate power loss.)

use std::sync::Arc;
use std::time::Duration;

use crate::client::Api;
use crate::error::HarnessError;
use crate::load::{Load, Writers};
use crate::oracle::{self, Ledger};
use crate::report::Report;
use crate::scenarios::{BackendKind, Env, quantile_ms, random_ms};
use crate::server::{Server, ServerSpec};

/// Options of the kill loop.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The backend.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: BackendKind,
    /// Kill-and-restart cycles.
    #[arg(long, default_value_t = 500)]
    pub cycles: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// The longest time a server runs before it is killed, in milliseconds (each run
    /// lasts a random time below it).
    #[arg(long, default_value_t = 300)]
    pub max_run_ms: u64,
}

/// Runs the kill loop.
pub async fn run(env: &Env, o: &Options) -> Result<Report, HarnessError> {
    let fresh = env.fresh(o.backend)?;
    let spec = ServerSpec::new(&env.foldstore, fresh.backend())?;
    let api = Api::new(Duration::from_secs(10));
    let ledger = Arc::new(Ledger::default());
    let mut server = Server::start(&spec).await?;
    let load = Load {
        writers: o.writers,
        streams: 16,
        prefix: "kill-".into(),
        max_batch: 10,
        pad: 64,
        pause: Duration::ZERO,
    };
    let writers = Writers::start(&api, &[spec.url()], ledger.clone(), &load);
    let mut recoveries = Vec::new();
    for _ in 0..o.cycles {
        tokio::time::sleep(random_ms(0, o.max_run_ms)).await;
        server.kill().await;
        server = Server::start(&spec).await?;
        recoveries.push(server.startup);
    }
    // Let the last server take some appends before the writers stop.
    writers
        .progress
        .wait_for_acks(10, Duration::from_secs(10))
        .await;
    writers.stop().await;
    let verdict = oracle::check(&api, &spec.url(), &ledger.requests()).await?;
    server.stop().await;
    let mut r = Report::new("kill-loop", spec.backend.name());
    r.figure("cycles", o.cycles as u64);
    r.figure("writers", o.writers as u64);
    r.figure("recovery_ms_p50", quantile_ms(&recoveries, 0.5));
    r.figure("recovery_ms_p99", quantile_ms(&recoveries, 0.99));
    r.figure("recovery_ms_max", quantile_ms(&recoveries, 1.0));
    verdict.report(&mut r);
    drop(fresh);
    Ok(r)
}
