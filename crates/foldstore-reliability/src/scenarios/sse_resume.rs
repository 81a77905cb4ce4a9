//! SSE resume across server SIGKILLs: subscribers follow `/all/subscribe` while
//! writers append and the server is killed and restarted; each subscriber reconnects
//! with `Last-Event-ID`. Per subscriber, what it received must be exactly `$all`:
//! strictly increasing, no gap, no duplicate across reconnects.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::client::Api;
use crate::error::HarnessError;
use crate::load::{Load, Writers};
use crate::oracle::{self, Ledger};
use crate::report::Report;
use crate::scenarios::{BackendKind, Env, random_ms};
use crate::server::{Server, ServerSpec};
use crate::sse::follow;

/// Options of the SSE resume scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The backend.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: BackendKind,
    /// Server kills.
    #[arg(long, default_value_t = 50)]
    pub kills: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Subscribers to `$all`.
    #[arg(long, default_value_t = 8)]
    pub subscribers: usize,
}

/// Runs the scenario.
pub async fn run(env: &Env, o: &Options) -> Result<Report, HarnessError> {
    let fresh = env.fresh(o.backend)?;
    let spec = ServerSpec::new(&env.foldstore, fresh.backend())?;
    let api = Api::new(Duration::from_secs(10));
    let ledger = Arc::new(Ledger::default());
    let mut server = Server::start(&spec).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let until = Arc::new(AtomicU64::new(0));
    let subscribers: Vec<_> = (0..o.subscribers)
        .map(|_| {
            tokio::spawn(follow(
                format!("{}/all/subscribe?from=start", spec.url()),
                None,
                stop.clone(),
                until.clone(),
            ))
        })
        .collect();
    let load = Load {
        writers: o.writers,
        streams: 16,
        prefix: "sse-".into(),
        max_batch: 10,
        pad: 64,
        pause: Duration::from_millis(2),
    };
    let writers = Writers::start(&api, &[spec.url()], ledger.clone(), &load);
    for _ in 0..o.kills {
        tokio::time::sleep(random_ms(200, 800)).await;
        server.kill().await;
        server = Server::start(&spec).await?;
    }
    writers
        .progress
        .wait_for_acks(10, Duration::from_secs(10))
        .await;
    writers.stop().await;
    let all = api.read_all(&spec.url()).await?;
    let head = all.last().map_or(0, |e| e.position);
    until.store(u64::try_from(head).unwrap_or(u64::MAX), Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let mut received = Vec::new();
    for s in subscribers {
        match tokio::time::timeout(Duration::from_secs(120), s).await {
            Ok(Ok(got)) => received.push(got),
            _ => {
                return Err(HarnessError::request(
                    "subscribers",
                    "a subscriber did not reach the head within 120 s",
                ));
            }
        }
    }
    let verdict = oracle::check(&api, &spec.url(), &ledger.requests()).await?;
    server.stop().await;

    let stored: Vec<u128> = all.iter().map(|e| e.position).collect();
    let stored_set: HashSet<u128> = stored.iter().copied().collect();
    let mut gaps = 0u64;
    let mut duplicates = 0u64;
    let mut examples = Vec::new();
    let mut reconnects = 0u64;
    let mut delivered = 0u64;
    for (n, got) in received.iter().enumerate() {
        reconnects += got.connections.saturating_sub(1);
        delivered += got.ids.len() as u64;
        let mut seen = HashSet::new();
        for w in got.ids.windows(2) {
            if w[1] <= w[0] {
                duplicates += 1;
                if examples.len() < 5 {
                    examples.push(format!("subscriber {n}: {} after {}", w[1], w[0]));
                }
            }
        }
        seen.extend(got.ids.iter().copied());
        let missing = stored.iter().filter(|p| !seen.contains(p)).count() as u64;
        let extra = seen.iter().filter(|p| !stored_set.contains(p)).count() as u64;
        if missing + extra > 0 && examples.len() < 5 {
            examples.push(format!(
                "subscriber {n}: {missing} stored events never delivered, {extra} delivered events not stored"
            ));
        }
        gaps += missing + extra;
    }
    let mut r = Report::new("sse-resume", spec.backend.name());
    r.figure("kills", o.kills as u64);
    r.figure("writers", o.writers as u64);
    r.figure("subscribers", o.subscribers as u64);
    r.figure("events_stored", stored.len() as u64);
    r.figure("events_delivered", delivered);
    r.figure("reconnects", reconnects);
    r.zero("subscriber_gaps", gaps, &examples);
    r.zero("subscriber_duplicates", duplicates, &examples);
    r.check(
        "every subscriber received every stored event",
        delivered == stored.len() as u64 * o.subscribers as u64,
        format!("{delivered} of {}", stored.len() * o.subscribers),
    );
    verdict.report(&mut r);
    drop(fresh);
    Ok(r)
}
