//! PostgreSQL faults under load: writers append through `foldstore serve` on a private
//! PostgreSQL cluster of the scenario's own while, in turns, every backend of the
//! server is terminated (`pg_terminate_backend`) and the PostgreSQL server is crashed
//! (`pg_ctl stop -m immediate`) and restarted. Nothing acknowledged may be lost or
//! doubled; the server must recover by itself (the time from the fault's end to the
//! next acknowledged append is measured).

use std::sync::Arc;
use std::time::Duration;

use foldstore_postgres::testkit::PrivateCluster;

use crate::client::Api;
use crate::error::HarnessError;
use crate::load::{Load, Writers};
use crate::oracle::{self, Ledger};
use crate::report::Report;
use crate::scenarios::{Env, quantile_ms, random_ms};
use crate::server::{Backend, Server, ServerSpec};

/// Options of the PostgreSQL fault scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Faults, alternately a termination of every backend and a crash and restart.
    #[arg(long, default_value_t = 20)]
    pub faults: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
}

/// Runs the scenario.
pub async fn run(env: &Env, o: &Options) -> Result<Report, HarnessError> {
    let cluster = PrivateCluster::start().map_err(|why| {
        HarnessError::Unavailable(format!(
            "could not start a private PostgreSQL cluster: {why} (set FOLDSTORE_PG_BIN to a directory with initdb and pg_ctl)"
        ))
    })?;
    let backend = Backend::Postgres {
        url: cluster.url(),
        schema: "foldstore".into(),
    };
    let spec = ServerSpec::new(&env.foldstore, backend)?;
    let api = Api::new(Duration::from_secs(10));
    let ledger = Arc::new(Ledger::default());
    let server = Server::start(&spec).await?;
    let load = Load {
        writers: o.writers,
        streams: 16,
        prefix: "pg-".into(),
        max_batch: 10,
        pad: 64,
        pause: Duration::ZERO,
    };
    let writers = Writers::start(&api, &[spec.url()], ledger.clone(), &load);
    let (mut terminate_recovery, mut restart_recovery) = (Vec::new(), Vec::new());
    let mut terminated = 0u64;
    let mut unrecovered = 0u64;
    for fault in 0..o.faults {
        tokio::time::sleep(random_ms(300, 1500)).await;
        if fault % 2 == 0 {
            terminated += terminate_backends(&cluster.url()).await?;
        } else {
            cluster.crash().map_err(HarnessError::Unavailable)?;
            tokio::time::sleep(random_ms(100, 1000)).await;
            cluster.up().map_err(HarnessError::Unavailable)?;
        }
        match writers
            .progress
            .wait_for_acks(1, Duration::from_secs(60))
            .await
        {
            Some(t) if fault % 2 == 0 => terminate_recovery.push(t),
            Some(t) => restart_recovery.push(t),
            None => unrecovered += 1,
        }
    }
    writers
        .progress
        .wait_for_acks(10, Duration::from_secs(10))
        .await;
    writers.stop().await;
    let verdict = oracle::check(&api, &spec.url(), &ledger.requests()).await?;
    server.stop().await;
    drop(cluster);
    let mut r = Report::new("pg-restart", "postgres");
    r.figure("faults", o.faults as u64);
    r.figure("backends_terminated", terminated);
    r.figure(
        "recover_after_terminate_ms_p50",
        quantile_ms(&terminate_recovery, 0.5),
    );
    r.figure(
        "recover_after_terminate_ms_max",
        quantile_ms(&terminate_recovery, 1.0),
    );
    r.figure(
        "recover_after_restart_ms_p50",
        quantile_ms(&restart_recovery, 0.5),
    );
    r.figure(
        "recover_after_restart_ms_max",
        quantile_ms(&restart_recovery, 1.0),
    );
    r.zero("faults_not_recovered_within_60s", unrecovered, &[]);
    verdict.report(&mut r);
    Ok(r)
}

/// Terminates every other backend of the cluster; how many.
async fn terminate_backends(url: &str) -> Result<u64, HarnessError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| HarnessError::request("connect to the private cluster", e.to_string()))?;
    let driver = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
            &[],
        )
        .await
        .map_err(|e| HarnessError::request("pg_terminate_backend", e.to_string()))?;
    drop(client);
    let _ = driver.await;
    Ok(rows.len() as u64)
}
