#!/usr/bin/env bash
# The Pusher protocol, like for like: the same `fanout --mode pusher` load (subscribers on
# /app/<key>, events through the signed HTTP API) against ringcast and, where they are installed,
# Soketi and Sockudo, side by side in one run. Writes the Pusher section of docs/benchmarks.md
# (or, with --short, only checks that ringcast delivers everything exactly once).
#
#   SOCKUDO=/path/to/sockudo \
#   SOKETI="node /tmp/soketi/node_modules/@soketi/soketi/bin/server.js start" benches/pusher-compare.sh
#
# Soketi installs with gateway/tests/clients/soketi-reference.sh (an npm override replaces its
# GitHub-hosted uWebSockets.js); Sockudo with `cargo install sockudo --no-default-features
# --features local,v2` (needs protoc: apt-get install protobuf-compiler).
#   benches/pusher-compare.sh --short
#
# A peer that is not installed is recorded as such (with the reason in PEER_NOTES) in the
# section, not silently left out.
set -euo pipefail
cd "$(dirname "$0")/.."
short=0
[ "${1:-}" = "--short" ] && short=1
cargo build --release -p gateway -p ringcast-bench >&2
ulimit -n 20000 || true
load="taskset -c 1 target/release/ringcast-bench fanout --mode pusher --pusher-app app-id:app-key:app-secret --json"
duration=${DURATION:-10}
[ "$short" = 1 ] && duration=2
conf=$(mktemp --suffix .toml)
cat > "$conf" <<'TOML'
[[pusher.apps]]
id = "app-id"
key = "app-key"
secret = "app-secret"
TOML
out=$(mktemp)
runs=${RUNS:-2}
[ "$short" = 1 ] && runs=1
run_cases() { # label, then the harness's server arguments (each case RUNS times: single runs vary)
    local label=$1; shift
    for subs in 100 1000; do
        for run in $(seq 1 "$runs"); do
            $load --label "$label:$subs:$run" --subscribers "$subs" --rooms 1 --rate 100 \
                --duration-secs "$duration" --warmup-secs 1 "$@" | tee -a "$out" | grep -v '^{' >&2
        done
        if [ "$short" = 1 ]; then break; fi
    done
}
run_cases ringcast --spawn "taskset -c 0 target/release/ringcast --config $conf --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --shards 1 --no-pin --log-level warn"
if [ "$short" = 1 ]; then
    python3 scripts/pusher-report.py --check "$out"
    exit 0
fi
# A peer on a fixed port: started here, loaded by address and pid.
peer() { # label, port, command...
    local label=$1 port=$2; shift 2
    taskset -c 0 "$@" > "/tmp/ringcast-peer-$label.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do
        (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.2
    done
    sleep 1
    run_cases "$label" --addr "127.0.0.1:$port" --server-pid "$pid" || echo "{\"label\":\"$label:failed\"}" >> "$out"
    # Sockudo drains for a while on SIGTERM: give it 5 s, then SIGKILL.
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
# Both peers get the same app and no limit that a 1,000-subscriber run would hit (their defaults
# cap connections and events per second per app).
if [ -n "${SOCKUDO:-}" ]; then
    peer sockudo 6001 env HOST=127.0.0.1 PORT=6001 METRICS_ENABLED=false RATE_LIMITER_ENABLED=false \
        SOCKUDO_DEFAULT_APP_ID=app-id SOCKUDO_DEFAULT_APP_KEY=app-key SOCKUDO_DEFAULT_APP_SECRET=app-secret \
        SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS=100000 SOCKUDO_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SECOND=100000 \
        $SOCKUDO
fi
if [ -n "${SOKETI:-}" ]; then
    peer soketi 6002 env SOKETI_HOST=127.0.0.1 SOKETI_PORT=6002 SOKETI_METRICS_ENABLED=false \
        SOKETI_DEFAULT_APP_ID=app-id SOKETI_DEFAULT_APP_KEY=app-key SOKETI_DEFAULT_APP_SECRET=app-secret \
        $SOKETI
fi
python3 scripts/pusher-report.py --write docs/benchmarks.md \
    --command "benches/pusher-compare.sh  (DURATION=$duration RUNS=$runs; SOCKUDO and SOKETI as in its header)" \
    --notes "${PEER_NOTES:-}" "$out"
echo "docs/benchmarks.md updated" >&2
