#!/usr/bin/env bash
# Before/after figures for the `low-latency` tuning profile on this host: the same fan-out and
# throughput ramp with the host's sysctls as they are, then with `ringcast tune apply --profile
# low-latency` applied (as root), then the original values are written back. Writes the tuning
# section of docs/benchmarks.md, including which settings the host refused.
#
#   sudo benches/tuning.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p gateway -p ringcast-bench >&2
ulimit -n 20000 || true
bin=target/release/ringcast
out=$(mktemp)
saved=$(mktemp)
# What the profile touches, as it is now (restored at the end).
for key in $($bin tune apply --profile low-latency --dry-run | sed -n 's/^- \([^ ]*\) = .*/\1/p'); do
    echo "$key=$(cat "/proc/sys/${key//.//}" 2>/dev/null | tr -s '\t ' '  ')" >>"$saved"
done
had_conf=0
[ -e /etc/sysctl.d/90-ringcast.conf ] && had_conf=1
restore() {
    # apply also saved the profile for the next boot: undo that too unless it was there before.
    [ "$had_conf" = 0 ] && rm -f /etc/sysctl.d/90-ringcast.conf
    while IFS='=' read -r key value; do
        [ -n "$value" ] && echo "$value" >"/proc/sys/${key//.//}" 2>/dev/null || true
    done <"$saved"
    echo "restored the host's original values of: $(cut -d= -f1 "$saved" | tr '\n' ' ')" >&2
}
trap restore EXIT
export RINGCAST_ROOMS__ANONYMOUS=publish
export RINGCAST_WEBSOCKET__OUTBOUND_HIGH_WATER_BYTES=268435456
export RINGCAST_WEBSOCKET__HEARTBEAT_INTERVAL_MS=600000
server="taskset -c 0 $bin --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --shards 1 --no-pin --log-level warn"
load="taskset -c 1 target/release/ringcast-bench"
run() {
    local label=$1
    $load fanout --label "$label" --spawn "$server" --subscribers 1000 --rate 100 \
        --duration-secs "${DURATION:-10}" --json | tee -a "$out" | grep -v '^{' >&2
    $load fanout --label "$label" --spawn "$server" --subscribers 100 --rate 100 --max-rate 20000 \
        --duration-secs 3 --warmup-secs 1 --find-max --json | grep '"find-max"' | tee -a "$out" >&2
}
run before
$bin tune check --profile low-latency >"$out.check-before" || true
$bin tune apply --profile low-latency 2>&1 | tee "$out.apply" >&2
$bin tune check --profile low-latency >"$out.check-after" || true
run after
python3 scripts/tuning-report.py --write docs/benchmarks.md --command "sudo benches/tuning.sh  (DURATION=${DURATION:-10})" \
    --apply-log "$out.apply" --check-after "$out.check-after" "$out"
echo "docs/benchmarks.md updated" >&2
