#!/usr/bin/env bash
# Memory per idle connection, and where it goes: N idle WebSocket connections on one shard,
#   1. the shipped build (mimalloc): the server's RSS per connection, and the kernel's share
#      (slab caches and TCP buffer pages, both ends of each connection being on this machine);
#   2. a heap-profiling build (`--features dhat-heap`): the live bytes of every allocation site
#      at the heap's peak, grouped by what holds them, per connection;
# and rewrites the "memory" section of docs/benchmarks.md.
#
#   benches/memory.sh            10,000 connections on /ws (CONNS=, WS_PATH= to change)
#   KEEP=dir benches/memory.sh   also keeps the raw results (and the commit) in dir
#   BEFORE=dir benches/memory.sh adds a before/after comparison with a run kept in dir
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${CONNS:-10000}
path=${WS_PATH:-/ws}
cargo build --release -p gateway --features dhat-heap
cp target/release/ringcast target/release/ringcast-dhat
cargo build --release -p gateway -p ringcast-bench
ulimit -n 20000 || true
export RINGCAST_ROOMS__ANONYMOUS=publish
flags="--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --shards 1 --no-pin --raw-endpoint --log-level warn --io-driver io-uring"
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
git rev-parse --short HEAD > "$out/rev"
echo "== shipped build (mimalloc)" >&2
taskset -c 1 target/release/ringcast-bench idle --label ringcast --spawn "taskset -c 0 target/release/ringcast $flags" \
    --connections "$conns" --processes 2 --wave 20 --path "$path" --json | tee "$out/idle.jsonl" | grep -v '^{' >&2
echo "== heap-profiling build (dhat)" >&2
DHAT_OUT_FILE="$out/dhat-heap.json" taskset -c 1 target/release/ringcast-bench idle --label ringcast-dhat \
    --spawn "taskset -c 0 target/release/ringcast-dhat $flags" \
    --connections "$conns" --processes 2 --wave 20 --path "$path" --stop-gracefully --json | tee "$out/idle-dhat.jsonl" | grep -v '^{' >&2
python3 scripts/memory-report.py --write docs/benchmarks.md ${BEFORE:+--before "$BEFORE"} \
    --command "${BEFORE:+BEFORE=<the run at $(cat "$BEFORE/rev" 2>/dev/null)> }benches/memory.sh  (CONNS=$conns WS_PATH=$path)" "$out/idle.jsonl" "$out/idle-dhat.jsonl" "$out/dhat-heap.json"
echo "docs/benchmarks.md updated" >&2
