//! `subscribe-latency --subscriber-process`: the live subscriber runs in a second
//! `foldstore` process, so the figure includes what crosses processes (on PostgreSQL:
//! the poller and the coalesced NOTIFY hint).
//!
//! The two processes share no clock object, so they share the wall clock: the parent
//! passes the Unix time at which its benchmark clock started (`--origin-unix-ns`);
//! each event carries its send time on that clock, and the child measures
//! `now - (origin + sent)`. Both run on one machine, so one wall clock serves both.
//!
//! The protocol on the child's standard output: one line `ready` once it is subscribed
//! (from the end of `$all`), then, after `--events` deliveries, one line holding a JSON
//! array of the latencies in nanoseconds.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use foldstore_core::{EventFilter, SubscribeFrom};

use super::payload::Stamp;
use crate::backend::{self, Durability};
use crate::cli::{BenchSubscriberArgs, StoreArgs};
use crate::database_url::DatabaseLocation;
use crate::error::CliError;

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A subscriber process started by the benchmark.
pub(crate) struct SubscriberProcess {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl SubscriberProcess {
    /// Starts `foldstore bench-subscriber` on `location` and waits until it is
    /// subscribed.
    pub(crate) async fn start(
        location: &DatabaseLocation,
        events: u64,
        origin_unix_ns: u64,
    ) -> Result<Self, CliError> {
        let DatabaseLocation::Postgres {
            url,
            schema,
            tuning,
        } = location
        else {
            return Err(CliError::Bench(
                "--subscriber-process needs a database that two processes can open at once: use --database postgres://... (a SQLite store belongs to one process)".to_owned(),
            ));
        };
        let exe = std::env::current_exe()
            .map_err(|e| CliError::io("could not find the foldstore executable", e))?;
        let mut command = tokio::process::Command::new(exe);
        command.args(["--database", url, "--pg-schema", schema]);
        if let Some(size) = tuning.pool_size {
            command.args(["--pg-pool-size", &size.to_string()]);
        }
        if let Some(ms) = tuning.statement_timeout_ms {
            command.args(["--pg-statement-timeout-ms", &ms.to_string()]);
        }
        let mut child = command
            .arg("bench-subscriber")
            .args(["--events", &events.to_string()])
            .args(["--origin-unix-ns", &origin_unix_ns.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| CliError::io("could not start the subscriber process", e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| CliError::Bench("the subscriber process has no output".to_owned()))?;
        let mut process = Self {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        match process.next_line().await?.as_str() {
            "ready" => Ok(process),
            other => Err(CliError::Bench(format!(
                "the subscriber process said {other:?} instead of `ready`"
            ))),
        }
    }

    async fn next_line(&mut self) -> Result<String, CliError> {
        self.lines
            .next_line()
            .await
            .map_err(|e| CliError::io("could not read the subscriber process", e))?
            .ok_or_else(|| {
                CliError::Bench(
                    "the subscriber process ended early (its error is above)".to_owned(),
                )
            })
    }

    /// Waits for the child's latencies, at most `timeout`.
    pub(crate) async fn latencies(mut self, timeout: Duration) -> Result<Vec<Duration>, CliError> {
        let line = tokio::time::timeout(timeout, self.next_line())
            .await
            .map_err(|_| {
                CliError::Bench(format!(
                    "the subscriber process had not received every event {} s after the last append",
                    timeout.as_secs()
                ))
            })??;
        let ns: Vec<u64> = serde_json::from_str(&line).map_err(|e| {
            CliError::Bench(format!("the subscriber process sent bad latencies: {e}"))
        })?;
        let _ = self.child.wait().await;
        Ok(ns.into_iter().map(Duration::from_nanos).collect())
    }
}

/// `foldstore bench-subscriber` (hidden): the child side of the protocol above.
pub(crate) async fn run_subscriber(
    store_args: &StoreArgs,
    args: BenchSubscriberArgs,
) -> Result<(), CliError> {
    let location = DatabaseLocation::resolve(
        store_args.database.as_deref(),
        &store_args.data_dir,
        store_args.pg_schema.as_deref(),
        store_args.pg_tuning(),
    )?;
    let store = backend::open(&location, Durability::Full).await?;
    let mut sub = store
        .subscribe_to_all(SubscribeFrom::End, EventFilter::all())
        .await?;
    println!("ready");
    let capacity = usize::try_from(args.events.min(1 << 20)).unwrap_or(0);
    let mut latencies: Vec<u64> = Vec::with_capacity(capacity);
    while (latencies.len() as u64) < args.events {
        let event = match sub.next().await {
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(CliError::from(e)),
            None => {
                return Err(CliError::Bench(
                    "the subscription ended before every event was delivered".to_owned(),
                ));
            }
        };
        let now = unix_now_ns();
        let stamp: Stamp = serde_json::from_slice(&event.data).map_err(|err| {
            CliError::Bench(format!(
                "event {} carries no send time ({err}): was the database used by something else?",
                event.id
            ))
        })?;
        latencies.push(now.saturating_sub(args.origin_unix_ns.saturating_add(stamp.sent_ns)));
    }
    let json = serde_json::to_string(&latencies)
        .map_err(|e| CliError::Bench(format!("could not encode the latencies: {e}")))?;
    println!("{json}");
    drop(sub);
    backend::close(store).await
}
