//! Concurrent writers: each appends batches of 1 to `max_batch` events with fresh ids
//! to streams shared with the others, records every request in the [`Ledger`], and
//! keeps going through server restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::client::{Api, Outcome};
use crate::oracle::{Ledger, Request};

/// The shape of the load.
#[derive(Debug, Clone)]
pub struct Load {
    /// Concurrent writers.
    pub writers: usize,
    /// Streams the writers share (`{prefix}{n}`).
    pub streams: u64,
    /// The stream name prefix.
    pub prefix: String,
    /// Events per append, at most.
    pub max_batch: usize,
    /// Filler bytes in each event's data.
    pub pad: usize,
    /// A pause between appends (none for full speed).
    pub pause: Duration,
}

/// What the writers have done so far, for scenarios that wait on progress.
#[derive(Debug)]
pub struct Progress {
    /// Acknowledged appends.
    pub acked: AtomicU64,
    started: Instant,
    last_ack_ms: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Self {
            acked: AtomicU64::new(0),
            started: Instant::now(),
            last_ack_ms: AtomicU64::new(0),
        }
    }

    /// When the last acknowledgement came, as time since the writers started.
    pub fn last_ack(&self) -> Duration {
        Duration::from_millis(self.last_ack_ms.load(Ordering::SeqCst))
    }

    /// Now, as time since the writers started.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until `n` more appends than now are acknowledged, up to `limit`; the time
    /// it took, or `None`.
    pub async fn wait_for_acks(&self, n: u64, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let target = self.acked.load(Ordering::SeqCst) + n;
        while self.acked.load(Ordering::SeqCst) < target {
            if start.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Some(start.elapsed())
    }
}

/// Running writers; [`Writers::stop`] ends them.
#[derive(Debug)]
pub struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    /// Their progress.
    pub progress: Arc<Progress>,
}

impl Writers {
    /// Starts `load.writers` writers against the servers at `bases` (writer `w` uses
    /// `bases[w % bases.len()]`).
    pub fn start(api: &Api, bases: &[String], ledger: Arc<Ledger>, load: &Load) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::new());
        let tasks = (0..load.writers)
            .map(|w| {
                let (api, base, ledger, stop, progress, load) = (
                    api.clone(),
                    bases[w % bases.len()].clone(),
                    ledger.clone(),
                    stop.clone(),
                    progress.clone(),
                    load.clone(),
                );
                tokio::spawn(async move {
                    let pad = "x".repeat(load.pad);
                    let mut seq = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let (stream, count) = {
                            let mut rng = rand::rng();
                            (
                                format!("{}{}", load.prefix, rng.random_range(0..load.streams)),
                                rng.random_range(1..=load.max_batch),
                            )
                        };
                        let events: Vec<(String, String, serde_json::Value)> = (0..count)
                            .map(|i| {
                                seq += 1;
                                (
                                    uuid::Uuid::new_v4().to_string(),
                                    "Tick".to_owned(),
                                    json!({"writer": w, "seq": seq, "of": [i, count], "pad": pad}),
                                )
                            })
                            .collect();
                        let body: Vec<_> = events
                            .iter()
                            .map(|(id, ty, data)| json!({"id": id, "type": ty, "data": data}))
                            .collect();
                        let outcome = api.append(&base, &stream, json!("any"), &body).await;
                        let ok = matches!(outcome, Outcome::Ok { .. });
                        ledger.record(Request {
                            stream,
                            events,
                            outcome,
                        });
                        if ok {
                            progress.acked.fetch_add(1, Ordering::SeqCst);
                            progress
                                .last_ack_ms
                                .store(progress.now().as_millis() as u64, Ordering::SeqCst);
                            if !load.pause.is_zero() {
                                tokio::time::sleep(load.pause).await;
                            }
                        } else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            progress,
        }
    }

    /// Stops the writers and waits for their last requests.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
