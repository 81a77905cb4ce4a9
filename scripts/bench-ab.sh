#!/usr/bin/env bash
# Interleaved A/B runs of one `foldstore bench` command with two (or more) binaries, so
# that both see the same drift of a noisy machine. Each report (the JSON last line) is
# kept as <out>/<binary name>-<n>.json; compare each to its own same-run baselines.
#
#   scripts/bench-ab.sh <runs> <out dir> <binary>... -- <bench arguments>
#   scripts/bench-ab.sh 3 /tmp/ab ./foldstore-before ./foldstore-after -- \
#       append-1 --concurrency 1
#
# Run it from a directory on the disk under test (not a tmpfs): each run's store and
# baselines live in the current directory and are removed afterwards.
set -euo pipefail
runs="$1" out="$2"; shift 2
bins=()
while [ "$1" != "--" ]; do bins+=("$1"); shift; done
shift
mkdir -p "$out"
for i in $(seq 1 "$runs"); do
    for bin in "${bins[@]}"; do
        name="$(basename "$bin")"
        dir="./ab-data-$name"
        rm -rf "$dir"
        echo "== $name run $i: $*" >&2
        "$bin" bench "$@" --data-dir "$dir" --json | tail -n 1 > "$out/$name-$i.json"
        rm -rf "$dir"
    done
done
