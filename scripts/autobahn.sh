#!/usr/bin/env bash
# Runs the Autobahn TestSuite (517 cases, via kosoku) against ringcast's /echo endpoint on one
# I/O driver and fails unless every case ends OK, NON-STRICT or INFORMATIONAL.
# Usage: scripts/autobahn.sh DRIVER [BINARY]   (DRIVER: io-uring | epoll)
# The JSON report is kept in reports/autobahn-DRIVER/index.json.
set -euo pipefail
cd "$(dirname "$0")/.."
driver="$1"
binary="${2:-target/debug/ringcast}"
out="reports/autobahn-$driver"
rm -rf "$out"
mkdir -p "$out"
log="$out/server.log"
# Autobahn section 9 sends 16 MiB messages; the echo endpoint runs with room for them.
RINGCAST_WEBSOCKET__MAX_MESSAGE_BYTES=20000000 RINGCAST_WEBSOCKET__OUTBOUND_HIGH_WATER_BYTES=64000000 \
    "$binary" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --shards 2 --no-pin \
    --io-driver "$driver" --echo-endpoint --log-level warn >"$out/stdout" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q "ringcast listening" "$out/stdout" 2>/dev/null && break
    sleep 0.1
done
addr=$(sed -n 's/.*public=\([^ ]*\).*/\1/p' "$out/stdout")
[ -n "$addr" ] || { echo "ringcast did not start:"; cat "$log"; exit 1; }
echo "autobahn: ringcast ($driver) at $addr"
start=$(date +%s)
# kosoku exits non-zero when a case fails; the checker below prints which.
kosoku -m fuzzingclient "ws://$addr/echo" -p 8 -o "$out" >"$out/kosoku.log" 2>&1 || true
echo "autobahn: $(($(date +%s) - start)) s"
python3 scripts/autobahn-check.py "$out/index.json" "$driver"
