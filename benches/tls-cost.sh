#!/usr/bin/env bash
# The cost of ringcast's TLS path: the same binary, configuration and load, through the plain
# listener and through the TLS listener (rustls, TLS 1.3, ECDSA P-256 test certificate), side by
# side in one run. Writes the TLS section of docs/benchmarks.md (or, with --short, only checks
# that both paths deliver everything exactly once: the CI smoke test).
#
#   benches/tls-cost.sh            # fan-out at a fixed rate, the throughput ramp, a handshake storm
#   benches/tls-cost.sh --short    # a 2 s fan-out through each path
set -euo pipefail
cd "$(dirname "$0")/.."
short=0
[ "${1:-}" = "--short" ] && short=1
cargo build --release -p gateway -p ringcast-bench >&2
ulimit -n 20000 || true
fixtures=gateway/tests/fixtures
export RINGCAST_ROOMS__ANONYMOUS=publish
export RINGCAST_WEBSOCKET__OUTBOUND_HIGH_WATER_BYTES=268435456
export RINGCAST_WEBSOCKET__HEARTBEAT_INTERVAL_MS=600000
export RINGCAST_TLS__LISTEN=127.0.0.1:0
export RINGCAST_TLS__CERT_FILE="$PWD/$fixtures/tls-a.crt"
export RINGCAST_TLS__KEY_FILE="$PWD/$fixtures/tls-a.key"
server="taskset -c 0 target/release/ringcast --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --shards 1 --no-pin --log-level warn"
load="taskset -c 1 target/release/ringcast-bench"
subs=${SUBS:-1000}
duration=${DURATION:-10}
[ "$short" = 1 ] && { subs=200; duration=2; }
out=$(mktemp)
for path in plain tls; do
    tls=()
    [ "$path" = tls ] && tls=(--tls-ca "$fixtures/tls-ca.crt")
    echo "== $path" >&2
    $load fanout --label "$path" --spawn "$server" --subscribers "$subs" --rate 100 \
        --duration-secs "$duration" --json "${tls[@]}" | tee -a "$out" | grep -v '^{' >&2
    if [ "$short" = 0 ]; then
        $load fanout --label "$path" --spawn "$server" --subscribers 100 --rate 100 --max-rate 20000 \
            --duration-secs 3 --warmup-secs 1 --find-max --json "${tls[@]}" | grep '"find-max"' | tee -a "$out" >&2
        $load storm --label "$path" --spawn "$server" --connections "${STORM:-5000}" --rate 1000 \
            --json "${tls[@]}" | tee -a "$out" | grep -v '^{' >&2
    fi
done
if [ "$short" = 1 ]; then
    python3 scripts/tls-report.py --check "$out"
else
    python3 scripts/tls-report.py --write docs/benchmarks.md \
        --command "benches/tls-cost.sh  (SUBS=$subs DURATION=$duration STORM=${STORM:-5000})" "$out"
    echo "docs/benchmarks.md updated" >&2
fi
