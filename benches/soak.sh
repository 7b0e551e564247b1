#!/usr/bin/env bash
# Soak: steady load with churn for a bounded time (default 10 minutes), sampling the server's
# RSS and open descriptors (ringcast-bench soak). Writes the soak section of docs/benchmarks.md;
# with --short (CI) it runs 30 s and only checks the verdict.
#
#   benches/soak.sh              # DURATION=600
#   benches/soak.sh --short      # 30 s, checked
set -euo pipefail
cd "$(dirname "$0")/.."
short=0
[ "${1:-}" = "--short" ] && short=1
cargo build --release -p gateway -p ringcast-bench >&2
ulimit -n 20000 || true
# Slow consumers must be shed within a few seconds: a small outbound mark.
export RINGCAST_ROOMS__ANONYMOUS=publish RINGCAST_WEBSOCKET__MAX_MESSAGE_BYTES=16384 \
       RINGCAST_WEBSOCKET__OUTBOUND_HIGH_WATER_BYTES=65536 \
       RINGCAST_LIMITS__HANDSHAKES_PER_IP_PER_SECOND=100000 RINGCAST_LIMITS__HANDSHAKE_BURST=100000
duration=${DURATION:-600}
[ "$short" = 1 ] && duration=30
out=$(mktemp)
taskset -c 1 target/release/ringcast-bench soak \
    --spawn "taskset -c 0 target/release/ringcast --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --shards 1 --no-pin --log-level warn" \
    --duration-secs "$duration" --rooms 10 --subscribers 200 --rate 500 --churn 40 --json | tee "$out" | grep -v '^{'
[ "$short" = 1 ] && { echo "soak smoke: 1 passed, 0 failed"; exit 0; }
python3 scripts/soak-report.py --write docs/benchmarks.md --command "benches/soak.sh  (DURATION=$duration)" "$out"
echo "docs/benchmarks.md updated" >&2
