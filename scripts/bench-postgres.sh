#!/usr/bin/env bash
# Runs the `foldstore bench` workloads on the PostgreSQL backend, RUNS times each
# (default 3), keeping each report in docs/bench-results/postgres-*.json. Each run uses
# a fresh schema that the bench drops. From the repository root, on a quiet machine:
#   DATABASE=postgres://root@127.0.0.1:5432/test scripts/bench-postgres.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
db="${DATABASE:-postgres://root@127.0.0.1:5432/test}"
out=docs/bench-results
mkdir -p "$out"
cargo build --release --quiet -p foldstore-cli
bin=target/release/foldstore

bench() {
    local name="$1"; shift
    for i in $(seq 1 "$runs"); do
        echo "== postgres $name run $i: foldstore bench $* --database <url>" >&2
        "$bin" bench "$@" --database "$db" --json | tail -n 1 > "$out/postgres-$name-$i.json"
    done
}

bench append-1-c64 append-1 --concurrency 64 --events 100000
bench append-batch-c1 append-batch
bench append-batch-c4 append-batch --concurrency 4
bench read-all read-all
