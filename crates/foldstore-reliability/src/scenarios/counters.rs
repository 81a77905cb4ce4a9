//! Read-then-append counters: writers spread over two servers on one PostgreSQL
//! database read a counter stream's last event, append the next value with that
//! revision as the expected revision, and retry on conflict. A lost update would
//! show as two events with the same value; every stored event `k` must hold `k + 1`,
//! and every acknowledged increment must be stored.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::{Api, Outcome};
use crate::error::HarnessError;
use crate::report::Report;
use crate::scenarios::{BackendKind, Env};
use crate::server::{Server, ServerSpec};

/// Options of the counters scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The backend (with `sqlite` both writers share one server).
    #[arg(long, value_enum, default_value = "postgres")]
    pub backend: BackendKind,
    /// Concurrent writers.
    #[arg(long, default_value_t = 32)]
    pub writers: usize,
    /// Servers over the one store (PostgreSQL only).
    #[arg(long, default_value_t = 2)]
    pub servers: usize,
    /// Counter streams.
    #[arg(long, default_value_t = 4)]
    pub counters: u64,
    /// Increments each writer makes.
    #[arg(long, default_value_t = 100)]
    pub increments: u64,
}

#[derive(Default)]
struct Tally {
    attempts: AtomicU64,
    conflicts: AtomicU64,
    unknown: AtomicU64,
}

/// Runs the scenario.
pub async fn run(env: &Env, o: &Options) -> Result<Report, HarnessError> {
    let fresh = env.fresh(o.backend)?;
    let servers_wanted = if o.backend == BackendKind::Sqlite {
        1
    } else {
        o.servers.max(1)
    };
    let mut servers = Vec::new();
    for _ in 0..servers_wanted {
        servers.push(Server::start(&ServerSpec::new(&env.foldstore, fresh.backend())?).await?);
    }
    let bases: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let api = Api::new(Duration::from_secs(10));
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let tasks: Vec<_> = (0..o.writers)
        .map(|w| {
            let (api, base, tally, o) = (
                api.clone(),
                bases[w % bases.len()].clone(),
                tally.clone(),
                o.clone(),
            );
            tokio::spawn(async move {
                let mut acked: Vec<(String, String)> = Vec::new();
                for i in 0..o.increments {
                    let stream = format!("counter-{}", (w as u64 + i) % o.counters);
                    for _ in 0..1000 {
                        tally.attempts.fetch_add(1, Ordering::SeqCst);
                        let last = api
                            .get_json(&format!(
                                "{base}/streams/{stream}?direction=backwards&limit=1"
                            ))
                            .await;
                        let (expected, value) = match &last {
                            Ok(page) => match page["events"].get(0) {
                                Some(e) => (
                                    json!(e["revision"].as_u64().unwrap_or(0)),
                                    e["data"]["value"].as_u64().unwrap_or(0),
                                ),
                                None => (json!("no_stream"), 0),
                            },
                            Err(HarnessError::Request { detail, .. })
                                if detail.starts_with("404") =>
                            {
                                (json!("no_stream"), 0)
                            }
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        };
                        let id = uuid::Uuid::new_v4().to_string();
                        let event =
                            json!({"id": id, "type": "Incremented", "data": {"value": value + 1}});
                        match api.append(&base, &stream, expected, &[event]).await {
                            Outcome::Ok { .. } => {
                                acked.push((stream.clone(), id));
                                break;
                            }
                            Outcome::Failed { status: 409, .. } => {
                                tally.conflicts.fetch_add(1, Ordering::SeqCst);
                            }
                            Outcome::Failed { .. } => {}
                            Outcome::Unknown { .. } => {
                                tally.unknown.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    // Every counter, read back through the first server.
    let mut stored: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut ids = HashSet::new();
    let mut lost_updates = 0u64;
    let mut examples = Vec::new();
    for c in 0..o.counters {
        let stream = format!("counter-{c}");
        let events = api.read_stream(&bases[0], &stream).await?;
        for (k, e) in events.iter().enumerate() {
            ids.insert(e.id.clone());
            if e.data["value"].as_u64() != Some(k as u64 + 1) {
                lost_updates += 1;
                if examples.len() < 5 {
                    examples.push(format!("{stream}@{k} holds {}", e.data["value"]));
                }
            }
        }
        stored.insert(stream, events.iter().map(|e| e.data.clone()).collect());
    }
    let missing = acked.iter().filter(|(_, id)| !ids.contains(id)).count() as u64;
    let total_stored: usize = stored.values().map(Vec::len).sum();
    let unknown = tally.unknown.load(Ordering::SeqCst);
    for s in servers {
        s.stop().await;
    }
    let mut r = Report::new("counters", fresh.backend().name());
    let attempts = tally.attempts.load(Ordering::SeqCst);
    let conflicts = tally.conflicts.load(Ordering::SeqCst);
    r.figure("servers", servers_wanted as u64);
    r.figure("writers", o.writers as u64);
    r.figure("counters", o.counters);
    r.figure("attempts", attempts);
    r.figure("increments_acked", acked.len() as u64);
    r.figure("conflicts", conflicts);
    r.figure(
        "conflict_percent",
        ((conflicts as f64 * 1000.0 / attempts.max(1) as f64).round() / 10.0).to_string(),
    );
    r.figure("unknown_outcomes", unknown);
    r.figure("seconds", (elapsed.as_secs_f64() * 10.0).round() / 10.0);
    r.zero("lost_updates", lost_updates, &examples);
    r.zero("acked_increments_missing", missing, &[]);
    r.check(
        "every increment acknowledged",
        acked.len() as u64 == o.writers as u64 * o.increments,
        format!("{} of {}", acked.len(), o.writers as u64 * o.increments),
    );
    r.check(
        "stored = acknowledged (+ unknown outcomes)",
        total_stored as u64 >= acked.len() as u64
            && total_stored as u64 <= acked.len() as u64 + unknown,
        format!("{total_stored} stored, {} acknowledged", acked.len()),
    );
    drop(fresh);
    Ok(r)
}
