//! Stuck and slow consumers: many clients open `/all/subscribe` and never read, one
//! client reads normally, and a writer appends 1-KiB events. The server's resident
//! memory must stay under a bound, every stuck connection must be closed by the
//! server within seconds of its client being declared too slow, the memory must come
//! back down once the stuck clients are gone, and the normal subscriber must still
//! receive every event in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{Api, Outcome};
use crate::error::HarnessError;
use crate::report::Report;
use crate::scenarios::{BackendKind, Env};
use crate::server::{Server, ServerSpec, rss_bytes};
use crate::sse::follow;

/// Options of the stuck-consumer scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Clients that subscribe and never read.
    #[arg(long, default_value_t = 200)]
    pub stuck: usize,
    /// 1-KiB events to append.
    #[arg(long, default_value_t = 50_000)]
    pub events: usize,
    /// The bound on the server's resident memory, in MiB.
    #[arg(long, default_value_t = 100)]
    pub rss_limit_mib: u64,
    /// How long after the last append the stuck connections must be closed, in
    /// seconds (the server declares a client too slow after 10 s of a full buffer).
    #[arg(long, default_value_t = 20)]
    pub close_within_s: u64,
}

/// Runs the scenario.
pub async fn run(env: &Env, o: &Options) -> Result<Report, HarnessError> {
    let fresh = env.fresh(BackendKind::Sqlite)?;
    let spec = ServerSpec::new(&env.foldstore, fresh.backend())?;
    let server = Server::start(&spec).await?;
    let base = spec.url();
    let pid = server.pid;
    let rss_start = server.rss_bytes().unwrap_or(0);
    let peak = Arc::new(AtomicU64::new(rss_start));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                if let Some(rss) = rss_bytes(pid) {
                    peak.fetch_max(rss, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut stuck = Vec::new();
    for _ in 0..o.stuck {
        let mut s = TcpStream::connect(("127.0.0.1", spec.port))
            .await
            .map_err(|e| HarnessError::io("connect a stuck client", e))?;
        s.write_all(
            b"GET /all/subscribe?from=start HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .map_err(|e| HarnessError::io("send a stuck client's request", e))?;
        stuck.push(s);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let until = Arc::new(AtomicU64::new(0));
    let normal = tokio::spawn(follow(
        format!("{base}/all/subscribe?from=start"),
        None,
        stop.clone(),
        until.clone(),
    ));
    let api = Api::new(Duration::from_secs(30));
    let pad = "z".repeat(1000);
    let mut written = 0usize;
    let mut last_position = 0u128;
    while written < o.events {
        let n = (o.events - written).min(100);
        let body: Vec<_> = (0..n)
            .map(|i| json!({"type": "Big", "data": {"i": written + i, "pad": pad}}))
            .collect();
        match api.append(&base, "big-1", json!("any"), &body).await {
            Outcome::Ok { position, .. } => {
                written += n;
                last_position = position;
            }
            other => {
                return Err(HarnessError::request(
                    "append while clients are stuck",
                    format!("{other:?}"),
                ));
            }
        }
    }
    let written_at = Instant::now();
    until.store(
        u64::try_from(last_position).unwrap_or(u64::MAX),
        Ordering::SeqCst,
    );
    stop.store(true, Ordering::SeqCst);
    let normal = tokio::time::timeout(Duration::from_secs(120), normal)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();

    // Stuck connections: closed by the server (EOF after what it had sent) in time?
    let deadline = written_at + Duration::from_secs(o.close_within_s);
    tokio::time::sleep_until(deadline.into()).await;
    let rss_stuck = rss_bytes(pid).unwrap_or(0);
    // Drain every stuck socket at once: one the server closed ends (EOF) within a
    // moment; one it keeps open does not.
    let drains: Vec<_> = stuck
        .drain(..)
        .map(|mut s| {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 16];
                let eof = tokio::time::timeout(Duration::from_secs(3), async {
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                })
                .await
                .is_ok();
                (eof, s)
            })
        })
        .collect();
    let mut closed = 0usize;
    for d in drains {
        if let Ok((eof, s)) = d.await {
            closed += usize::from(eof);
            stuck.push(s);
        }
    }
    drop(stuck);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = rss_bytes(pid).unwrap_or(0);
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.await;
    server.stop().await;

    let mib = |b: u64| (b as f64 / 1048576.0 * 10.0).round() / 10.0;
    let peak = peak.load(Ordering::SeqCst);
    let limit = o.rss_limit_mib << 20;
    let in_order = normal.ids.windows(2).all(|w| w[0] < w[1]);
    let mut r = Report::new("slow-consumers", "sqlite");
    r.figure("stuck_clients", o.stuck as u64);
    r.figure("events_1kib", o.events as u64);
    r.figure("rss_start_mib", mib(rss_start));
    r.figure("rss_peak_mib", mib(peak));
    r.figure("rss_with_stuck_clients_mib", mib(rss_stuck));
    r.figure("rss_after_clients_left_mib", mib(rss_after));
    r.figure("stuck_connections_closed", closed as u64);
    r.check(
        format!("server RSS stays under {} MiB", o.rss_limit_mib),
        peak < limit,
        format!("peak {} MiB", mib(peak)),
    );
    r.check(
        format!(
            "every stuck connection is closed within {} s",
            o.close_within_s
        ),
        closed == o.stuck,
        format!("{closed} of {}", o.stuck),
    );
    r.check(
        format!(
            "RSS after the stuck clients left is under {} MiB",
            o.rss_limit_mib
        ),
        rss_after < limit,
        format!("{} MiB", mib(rss_after)),
    );
    r.check(
        "the reading subscriber received every event, in order",
        normal.ids.len() == o.events && in_order,
        format!("{} of {}, in order: {in_order}", normal.ids.len(), o.events),
    );
    drop(fresh);
    Ok(r)
}
