//! Clients that subscribe and never read cannot pin the server's memory, nor keep their
//! connections: 200 of them open `GET /all/subscribe` on a `foldstore serve` process
//! (its own process, so that its resident memory is its alone), never read a byte, and
//! 50,000 events of 1 KiB are appended. The server's peak resident memory (sampled
//! from `/proc/PID/status` every 20 ms) must stay under 100 MB, and every stuck
//! connection must be closed by the server within seconds (its count of open sockets
//! falls back, the subscriber gauge to 0, each one counted as too slow), while the
//! stuck clients still do not read.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLIENTS: usize = 200;
const EVENTS: usize = 50_000;
const BATCH: usize = 500;
const RSS_LIMIT_KB: u64 = 100 * 1000;

/// A `foldstore serve` child, killed when dropped.
struct Server {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_foldstore"))
            .args([
                "--data-dir",
                dir.path().to_str().unwrap(),
                "serve",
                "--port",
                "0",
            ])
            .env_remove("FOLDSTORE_TOKENS_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"));
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        Self {
            child,
            addr,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resident memory of `pid` in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The server's TCP connections to `clients` (local ports) that are still open, and the
/// bytes waiting in their send queues (`/proc/net/tcp`; the server's side of a closed
/// connection is gone, or waits in `FIN_WAIT2`/`TIME_WAIT` holding nothing).
fn server_side(server_port: u16, clients: &[u16]) -> (usize, u64) {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |field: &str| u16::from_str_radix(field.rsplit(':').next().unwrap(), 16).unwrap();
    let (mut open, mut queued) = (0, 0);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, state, queues) = (fields[1], fields[2], fields[3], fields[4]);
        if port(local) != server_port || !clients.contains(&port(remote)) {
            continue;
        }
        // 05 FIN_WAIT2, 06 TIME_WAIT, 07 CLOSE: closed, nothing held.
        if !matches!(state, "05" | "06" | "07") {
            open += 1;
            queued += u64::from_str_radix(queues.split(':').next().unwrap(), 16).unwrap();
        }
    }
    (open, queued)
}

async fn metric(client: &reqwest::Client, addr: &str, name: &str) -> f64 {
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in metrics"))
        .parse()
        .unwrap()
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns how long it took.
async fn wait_for<F: Future<Output = bool>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_subscribers_are_closed_and_do_not_pin_the_servers_memory() {
    let server = Server::start();
    let pid = server.pid();
    let addr = server.addr.clone();
    let http = reqwest::Client::new();
    // One request first, so the baseline includes a warmed-up server.
    assert_eq!(metric(&http, &addr, "foldstore_subscribers").await, 0.0);
    let rss_before = rss_kb(pid);
    let server_port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();

    let peak = Arc::new(AtomicU64::new(rss_before));
    let peak_queued = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));

    // The stuck clients: they send the subscription request and never read.
    let mut stuck = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        socket
            .write_all(
                b"GET /all/subscribe?from=end HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n",
            )
            .await
            .unwrap();
        stuck.push(socket);
    }
    let ports: Vec<u16> = stuck
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    let subscribed = wait_for(Duration::from_secs(30), || async {
        metric(&http, &addr, "foldstore_subscribers").await == CLIENTS as f64
    })
    .await;
    assert!(
        subscribed.is_some(),
        "the {CLIENTS} subscriptions did not start"
    );
    let sampler = std::thread::spawn({
        let (peak, peak_queued, sampling, ports) = (
            peak.clone(),
            peak_queued.clone(),
            sampling.clone(),
            ports.clone(),
        );
        move || {
            let mut round = 0u64;
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                if round.is_multiple_of(10) {
                    peak_queued.fetch_max(server_side(server_port, &ports).1, Ordering::Relaxed);
                }
                round += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });

    // 50,000 events of 1 KiB, by 4 writers.
    let appending = Instant::now();
    let pad = "x".repeat(1024);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (http, addr, pad) = (http.clone(), addr.clone(), pad.clone());
            tokio::spawn(async move {
                for b in (w..EVENTS / BATCH).step_by(4) {
                    let events: Vec<_> = (0..BATCH)
                        .map(
                            |i| json!({"type": "Loaded", "data": {"i": b * BATCH + i, "pad": pad}}),
                        )
                        .collect();
                    let response = http
                        .post(format!("http://{addr}/streams/load-{w}"))
                        .header("content-type", "application/json")
                        .body(json!({"expected_revision": "any", "events": events}).to_string())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let appended = appending.elapsed();

    // Every stuck connection is closed by the server while its client still does not
    // read: the server's sockets fall back to what it had before the clients came.
    let closed = wait_for(Duration::from_secs(30), || async {
        server_side(server_port, &ports).0 == 0
    })
    .await;
    let rss_after = rss_kb(pid);
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    let peak_queued = peak_queued.load(Ordering::Relaxed);
    println!(
        "{CLIENTS} stuck clients, {EVENTS} events of 1 KiB appended in {appended:?}: server RSS {rss_before} kB before, peak {peak} kB, {rss_after} kB after; peak kernel send queues {} kB; stuck connections closed {closed:?} after the last append",
        peak_queued / 1024
    );
    let closed = closed.unwrap_or_else(|| {
        panic!(
            "{} stuck connections are still open 30 s after the last append",
            server_side(server_port, &ports).0
        )
    });
    assert!(closed < Duration::from_secs(25), "closed after {closed:?}");
    assert!(
        peak < RSS_LIMIT_KB,
        "peak RSS {peak} kB is over {RSS_LIMIT_KB} kB"
    );
    assert_eq!(metric(&http, &addr, "foldstore_subscribers").await, 0.0);
    assert_eq!(
        metric(
            &http,
            &addr,
            "foldstore_slow_subscribers_disconnected_total"
        )
        .await,
        CLIENTS as f64
    );

    // The clients find their connections closed once they read what reached them.
    for mut socket in stuck {
        let mut buf = vec![0u8; 64 * 1024];
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "a stuck client's connection is still open");
    }
}
