//! `foldstore bench rehydrate`: runs the built binary on a small stream and checks the
//! report's fields (the figures themselves are recorded in docs/benchmarks.md).

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_rehydrate_reports_large_and_small_stream_load_times() {
    // Not /tmp, which may be tmpfs: the bench refuses to run there.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_foldstore"))
        .current_dir(dir.path())
        .args(["bench", "rehydrate", "--events", "2000", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap();
    let report: Value = serde_json::from_str(last).unwrap();
    assert_eq!(report["workload"], "rehydrate");
    assert_eq!(report["large_stream_events"], 2000);
    assert_eq!(report["small_stream_events"], 100);
    assert_eq!(report["snapshot_every"], 100);
    for field in [
        "large_stream_ms",
        "small_stream_ms",
        "large_to_small_ratio",
        "large_stream_lagging_snapshot_ms",
        "large_stream_full_replay_ms",
        "p50_ms",
    ] {
        assert!(
            report[field].as_f64().is_some_and(|v| v > 0.0),
            "{field} in {last}"
        );
    }
    assert!(report["baselines"]["fsync_per_sec"].as_f64().unwrap() > 0.0);
}
