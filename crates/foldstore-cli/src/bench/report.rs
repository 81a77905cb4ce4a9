//! Benchmark results: percentiles, the JSON report and its human-readable form.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use super::baseline::Baselines;
use super::machine::Machine;

/// The `p`th percentile (0–100) of `sorted` by the nearest-rank method: the smallest
/// value with at least `p`% of the values at or below it. `None` when empty.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Latencies in milliseconds, sorted.
pub(crate) fn sorted_ms(latencies: &[Duration]) -> Vec<f64> {
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// What a workload measured.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Events written or read in the measured phase.
    pub(crate) events: u64,
    /// How long the measured phase took.
    pub(crate) elapsed: Duration,
    /// One latency per operation.
    pub(crate) latencies: Vec<Duration>,
    /// What one latency measures, for people.
    pub(crate) latency_of: &'static str,
    /// Appends that found the stream at another revision and were retried.
    pub(crate) conflicts: u64,
    /// Whether the workload is a write workload, so that the baselines compare.
    pub(crate) writes: bool,
    /// Peak resident set size of the part the workload cares about, with its scope.
    pub(crate) peak_rss: Option<(f64, &'static str)>,
    /// Workload-specific figures.
    pub(crate) extra: Map<String, Value>,
}

/// The report of one benchmark run; serialized as the last line with `--json`.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The workload's name.
    pub(crate) workload: &'static str,
    /// The store implementation.
    pub(crate) backend: &'static str,
    /// The store's durability setting.
    pub(crate) durability: &'static str,
    /// Concurrent tasks.
    pub(crate) concurrency: u32,
    /// Events in the measured phase.
    pub(crate) events: u64,
    /// Seconds the measured phase took.
    pub(crate) elapsed_s: f64,
    /// Events per second in the measured phase.
    pub(crate) events_per_sec: f64,
    /// Median latency of one operation (see `latency_of`).
    pub(crate) p50_ms: Option<f64>,
    /// 99th percentile latency of one operation.
    pub(crate) p99_ms: Option<f64>,
    /// Worst latency of one operation.
    pub(crate) max_ms: Option<f64>,
    /// What one latency measures.
    pub(crate) latency_of: &'static str,
    /// Operations measured.
    pub(crate) operations: usize,
    /// Appends retried after a wrong expected revision.
    pub(crate) conflicts: u64,
    /// Peak resident set size in MB (see `peak_rss_scope`).
    pub(crate) peak_rss_mb: Option<f64>,
    /// What `peak_rss_mb` covers: `process` (the whole run) or a phase.
    pub(crate) peak_rss_scope: &'static str,
    /// Same-run baselines.
    pub(crate) baselines: Baselines,
    /// `events_per_sec / raw_insert_tx1_per_sec` (write workloads).
    pub(crate) ratio_vs_raw_tx1: Option<f64>,
    /// `events_per_sec / raw_insert_tx1000_per_sec` (write workloads).
    pub(crate) ratio_vs_raw_tx1000: Option<f64>,
    /// `events_per_sec / raw_insert_indexed_tx1_per_sec` (write workloads).
    pub(crate) ratio_vs_raw_indexed_tx1: Option<f64>,
    /// `events_per_sec / raw_insert_indexed_tx1000_per_sec` (write workloads).
    pub(crate) ratio_vs_raw_indexed_tx1000: Option<f64>,
    /// `events_per_sec / fsync_per_sec` (write workloads).
    pub(crate) ratio_vs_fsync: Option<f64>,
    /// `events_per_sec / raw_pg_insert_per_sec` (write workloads on PostgreSQL).
    pub(crate) ratio_vs_raw_pg: Option<f64>,
    /// Where it ran.
    pub(crate) machine: Machine,
    /// The command line that produced this report.
    pub(crate) command: String,
    /// When the run ended, in seconds since the Unix epoch.
    pub(crate) finished_unix_s: u64,
    /// Workload-specific figures.
    #[serde(flatten)]
    pub(crate) extra: Map<String, Value>,
}

/// Everything about the run that is not the outcome.
#[derive(Debug)]
pub(crate) struct RunInfo {
    /// The workload's name.
    pub(crate) workload: &'static str,
    /// The store implementation.
    pub(crate) backend: &'static str,
    /// The durability setting.
    pub(crate) durability: &'static str,
    /// Concurrent tasks.
    pub(crate) concurrency: u32,
    /// Baselines.
    pub(crate) baselines: Baselines,
    /// Machine.
    pub(crate) machine: Machine,
}

/// `a / b` to three decimals; `None` when there is no baseline to divide by.
pub(crate) fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| round(a / b, 3))
}

/// `x` to `digits` decimals.
pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

impl Report {
    /// Builds the report.
    pub(crate) fn new(run: RunInfo, outcome: Outcome) -> Self {
        let secs = outcome.elapsed.as_secs_f64();
        let events_per_sec = if secs > 0.0 {
            round(outcome.events as f64 / secs, 1)
        } else {
            0.0
        };
        let ms = sorted_ms(&outcome.latencies);
        let b = run.baselines;
        let write_ratio = |base: f64| {
            if outcome.writes {
                ratio(events_per_sec, base)
            } else {
                None
            }
        };
        let (peak_rss_mb, peak_rss_scope) = match outcome.peak_rss {
            Some((mb, scope)) => (Some(mb), scope),
            None => (super::machine::peak_rss_mb(), "process"),
        };
        Self {
            workload: run.workload,
            backend: run.backend,
            durability: run.durability,
            concurrency: run.concurrency,
            events: outcome.events,
            elapsed_s: round(secs, 3),
            events_per_sec,
            p50_ms: percentile(&ms, 50.0).map(|x| round(x, 3)),
            p99_ms: percentile(&ms, 99.0).map(|x| round(x, 3)),
            max_ms: ms.last().map(|x| round(*x, 3)),
            latency_of: outcome.latency_of,
            operations: ms.len(),
            conflicts: outcome.conflicts,
            peak_rss_mb: peak_rss_mb.map(|x| round(x, 1)),
            peak_rss_scope,
            ratio_vs_raw_tx1: write_ratio(b.raw_insert_tx1_per_sec),
            ratio_vs_raw_tx1000: write_ratio(b.raw_insert_tx1000_per_sec),
            ratio_vs_raw_indexed_tx1: write_ratio(b.raw_insert_indexed_tx1_per_sec),
            ratio_vs_raw_indexed_tx1000: write_ratio(b.raw_insert_indexed_tx1000_per_sec),
            ratio_vs_fsync: write_ratio(b.fsync_per_sec),
            ratio_vs_raw_pg: b.raw_pg_insert_per_sec.and_then(write_ratio),
            baselines: Baselines {
                fsync_per_sec: round(b.fsync_per_sec, 1),
                raw_insert_tx1_per_sec: round(b.raw_insert_tx1_per_sec, 1),
                raw_insert_tx1000_per_sec: round(b.raw_insert_tx1000_per_sec, 1),
                raw_insert_indexed_tx1000_per_sec: round(b.raw_insert_indexed_tx1000_per_sec, 1),
                raw_insert_indexed_tx1_per_sec: round(b.raw_insert_indexed_tx1_per_sec, 1),
                raw_pg_insert_per_sec: b.raw_pg_insert_per_sec.map(|r| round(r, 1)),
                raw_pg_connections: b.raw_pg_connections,
            },
            machine: run.machine,
            command: std::env::args().collect::<Vec<_>>().join(" "),
            finished_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            extra: outcome.extra,
        }
    }

    /// The human-readable summary, one fact per line.
    pub(crate) fn human_lines(&self) -> Vec<String> {
        let opt = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        let mut lines = vec![
            format!(
                "workload {} on {} (durability {}), concurrency {}",
                self.workload, self.backend, self.durability, self.concurrency
            ),
            format!(
                "  {} events in {:.2} s: {:.0} events/s",
                self.events, self.elapsed_s, self.events_per_sec
            ),
            format!(
                "  latency of one {} ({} measured): p50 {} ms, p99 {} ms, max {} ms",
                self.latency_of,
                self.operations,
                opt(self.p50_ms),
                opt(self.p99_ms),
                opt(self.max_ms)
            ),
        ];
        if self.conflicts > 0 {
            lines.push(format!(
                "  conflicts (wrong expected revision, retried): {}",
                self.conflicts
            ));
        }
        for (k, v) in &self.extra {
            lines.push(format!("  {k}: {v}"));
        }
        if let Some(mb) = self.peak_rss_mb {
            lines.push(format!("  peak RSS ({}): {mb:.1} MB", self.peak_rss_scope));
        }
        let b = &self.baselines;
        lines.push(format!(
            "  baselines: fsync {:.0}/s; raw SQLite insert 1 row/tx {:.0}/s, 1000 rows/tx {:.0}/s; with a unique id and (stream, revision): 1 row/tx {:.0}/s, 1000 rows/tx {:.0}/s",
            b.fsync_per_sec,
            b.raw_insert_tx1_per_sec,
            b.raw_insert_tx1000_per_sec,
            b.raw_insert_indexed_tx1_per_sec,
            b.raw_insert_indexed_tx1000_per_sec
        ));
        if let (Some(pg), Some(connections)) = (b.raw_pg_insert_per_sec, b.raw_pg_connections) {
            let ratio = self
                .ratio_vs_raw_pg
                .map_or_else(String::new, |r| format!(" (this run: {r:.2}x)"));
            lines.push(format!(
                "  baseline: raw PostgreSQL insert 1 row/tx from {connections} connections {pg:.0}/s{ratio}"
            ));
        }
        if let (Some(r1), Some(r1000), Some(rf)) = (
            self.ratio_vs_raw_tx1,
            self.ratio_vs_raw_tx1000,
            self.ratio_vs_fsync,
        ) {
            lines.push(format!(
                "  ratios: {r1:.2}x raw tx1, {r1000:.2}x raw tx1000, {rf:.2}x fsync rate"
            ));
        }
        let m = &self.machine;
        lines.push(format!(
            "  machine: {} CPUs ({}), kernel {}, {} at {}, load average {}",
            m.nproc,
            m.cpu.as_deref().unwrap_or("unknown CPU"),
            m.kernel,
            m.filesystem,
            m.mount_point,
            m.loadavg_1m
                .map_or_else(|| "unknown".to_owned(), |l| l.to_string())
        ));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 99.5), Some(100.0));
    }

    #[test]
    fn percentile_small_and_empty() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0], 50.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0], 51.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 99.0), Some(5.0));
    }

    #[test]
    fn sorted_ms_sorts_and_converts() {
        let ms = sorted_ms(&[
            Duration::from_millis(3),
            Duration::from_micros(500),
            Duration::from_millis(1),
        ]);
        assert_eq!(ms, vec![0.5, 1.0, 3.0]);
    }
}
