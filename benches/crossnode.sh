#!/usr/bin/env bash
# The latency the Redis hop adds: one embedded node, one node on Redis, and publishers on node A
# with subscribers on node B (both on one Redis), with the same load, side by side in one run.
# Writes the cross-node section of docs/benchmarks.md (or, with --short, only checks that every
# case delivers everything exactly once: the CI smoke test).
#
#   benches/crossnode.sh            # 10 subscribers (the hop alone) and 1,000 subscribers
#   benches/crossnode.sh --short    # 2 s per case, 100 subscribers
set -euo pipefail
cd "$(dirname "$0")/.."
short=0
[ "${1:-}" = "--short" ] && short=1
cargo build --release -p gateway -p ringcast-bench >&2
ulimit -n 20000 || true
load="taskset -c 1 target/release/ringcast-bench"
duration=${DURATION:-10}
out=$(mktemp)
if [ "$short" = 1 ]; then
    $load crossnode --server-cpus 0 --subscribers 100 --duration-secs 2 --warmup-secs 1 --json \
        | tee -a "$out" | grep -v '^{' >&2
    python3 scripts/crossnode-report.py --check "$out"
    exit 0
fi
for subs in 10 1000; do
    $load crossnode --server-cpus 0 --subscribers "$subs" --duration-secs "$duration" --json \
        | sed "s/\"label\":\"/\"label\":\"$subs:/" | tee -a "$out" | grep -v '^{' >&2
done
python3 scripts/crossnode-report.py --write docs/benchmarks.md \
    --command "benches/crossnode.sh  (DURATION=$duration)" "$out"
echo "docs/benchmarks.md updated" >&2
