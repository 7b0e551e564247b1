#!/usr/bin/env bash
# Runs the Autobahn TestSuite client cases (kosoku -m fuzzingserver) against the Rust client
# SDK's WebSocket layer (clients/rust/examples/autobahn_client.rs) and fails unless every case
# ends OK, NON-STRICT or INFORMATIONAL. The SDK does not offer permessage-deflate, so the
# compression sections 12 and 13 are UNIMPLEMENTED by design and are counted apart.
# The JSON report is kept in reports/autobahn-client/index.json.
set -euo pipefail
cd "$(dirname "$0")/.."
out=reports/autobahn-client
rm -rf "$out"
mkdir -p "$out"
cargo build -q -p ringcast-client --example autobahn_client
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
kosoku -m fuzzingserver "127.0.0.1:$port" -o "$out" >"$out/kosoku.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
start=$(date +%s)
target/debug/examples/autobahn_client "127.0.0.1:$port"
echo "autobahn client: $(($(date +%s) - start)) s"
for _ in $(seq 50); do [ -s "$out/index.json" ] && break; sleep 0.2; done
python3 scripts/autobahn-check.py "$out/index.json" client --unimplemented '12.*' '13.*'
