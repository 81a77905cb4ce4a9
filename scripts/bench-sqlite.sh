#!/usr/bin/env bash
# Runs every `foldstore bench` workload on the embedded SQLite backend, RUNS times each
# (default 3), and keeps each report (the JSON last line) in docs/bench-results/.
# docs/benchmarks.md is written from these files. Run it on a quiet machine, from the
# repository root: scripts/bench-sqlite.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
out=docs/bench-results
mkdir -p "$out"
cargo build --release --quiet -p foldstore-cli
bin=target/release/foldstore

bench() {
    local name="$1"; shift
    for i in $(seq 1 "$runs"); do
        echo "== $name run $i: foldstore bench $*" >&2
        "$bin" bench "$@" --json | tail -n 1 > "$out/$name-$i.json"
    done
}

bench append-1-c64 append-1 --concurrency 64
bench append-1-c1 append-1 --concurrency 1
bench append-batch-c1 append-batch
bench append-batch-c10 append-batch --concurrency 10
bench read-all read-all
bench read-stream read-stream
bench subscribe-latency subscribe-latency --concurrency 64
bench rehydrate rehydrate
