#!/usr/bin/env bash
# Runs the fan-out scenario against ringcast (both drivers, app and raw modes), every peer and
# the ceiling, in one run, with the server pinned to core 0 and the load generator to core 1, and
# rewrites the "comparison" section of docs/benchmarks.md (absolute figures and ratios).
#
#   benches/compare.sh            full run (release build; fixed rate in ROUNDS=3 alternating
#                                 rounds, --find-max, half load, scaling rows), ~25 minutes
#   BEFORE=old/ringcast benches/compare.sh   also an older build, beside this one, in the same run
#   BEFORE=old/ringcast benches/compare.sh --before-after   only the two builds, alternating, 3 rounds
#   benches/compare.sh --short    CI smoke test (debug build, small load): asserts no loss, no
#                                 duplicates and no errors for every target; claims no timings
set -euo pipefail
cd "$(dirname "$0")/.."
short=0
[ "${1:-}" = "--short" ] && short=1
# --before-after (with BEFORE=<older binary>): only the older build and this one, app and raw
# modes on io_uring, alternating, ROUNDS times (default 3); writes the "before-after" section of
# docs/benchmarks.md with the median ratio of CPU per delivery. AFTER=<binary> measures that
# binary instead of this tree's build.
if [ "${1:-}" = "--before-after" ]; then
    : "${BEFORE:?set BEFORE to the older ringcast binary}"
    subs=${SUBS:-1000}; rate=${RATE:-100}; duration=${DURATION:-5}
    cargo build --release -p ringcast-bench
    after=${AFTER:-}
    if [ -z "$after" ]; then
        cargo build --release -p gateway
        after=target/release/ringcast
    fi
    ulimit -n 20000 || true
    export RINGCAST_WEBSOCKET__OUTBOUND_HIGH_WATER_BYTES=268435456
    export RINGCAST_WEBSOCKET__HEARTBEAT_INTERVAL_MS=600000
    export RINGCAST_ROOMS__ANONYMOUS=publish
    flags="--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --shards 1 --no-pin --raw-endpoint --log-level warn --io-driver io-uring"
    out=$(mktemp)
    for round in $(seq "${ROUNDS:-3}"); do
        for mode in app raw; do
            for which in before after; do
                bin=$BEFORE; [ "$which" = after ] && bin=$after
                echo "== round $round: $which ($mode)" >&2
                taskset -c 1 target/release/ringcast-bench fanout --label "ringcast-$which-io_uring" --mode "$mode" \
                    --spawn "taskset -c 0 $bin $flags" --subscribers "$subs" --rate "$rate" \
                    --duration-secs "$duration" --warmup-secs 2 --json | tee -a "$out" | grep -v '^{' >&2
            done
        done
    done
    python3 scripts/before-after-report.py --write docs/benchmarks.md \
        --command "BEFORE=<ringcast at ${BEFORE_REV:-an older build}> benches/compare.sh --before-after  (SUBS=$subs RATE=$rate DURATION=$duration ROUNDS=${ROUNDS:-3})" "$out"
    echo "docs/benchmarks.md updated" >&2
    exit 0
fi

if [ "$short" = 1 ]; then
    profile=debug; subs=200; rate=50; duration=2; warmup=1
    cargo build -p gateway -p ringcast-bench
else
    profile=release; subs=${SUBS:-1000}; rate=${RATE:-100}; duration=${DURATION:-5}; warmup=2
    cargo build --release -p gateway -p ringcast-bench
fi
(cd benches/peers/node-ws && npm ci --no-audit --no-fund --silent)
(cd benches/peers/socketio && npm ci --no-audit --no-fund --silent)
bin="target/$profile"
ulimit -n 20000 || true
# Large queues and no heartbeats for ringcast, so neither policy interferes with the measurement.
export RINGCAST_WEBSOCKET__OUTBOUND_HIGH_WATER_BYTES=268435456
export RINGCAST_WEBSOCKET__HEARTBEAT_INTERVAL_MS=600000
# The harness connects without tokens (auth is measured separately): let anonymous clients in.
export RINGCAST_ROOMS__ANONYMOUS=publish
server="taskset -c 0"
load="taskset -c 1"
ringcast="$bin/ringcast --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --shards 1 --no-pin --raw-endpoint --log-level warn --io-driver"
targets=(
    "ringcast-io_uring|app|$server $ringcast io-uring"
    "ringcast-epoll|app|$server $ringcast epoll"
    "ringcast-io_uring|raw|$server $ringcast io-uring"
    "ringcast-epoll|raw|$server $ringcast epoll"
    "node-ws|raw|$server node benches/peers/node-ws/server.mjs"
    "socket.io|socketio|$server node benches/peers/socketio/server.mjs"
    "rust-baseline|raw|$server $bin/ringcast-peer-rust"
    "ceiling-write|raw|$server $bin/ringcast-bench ceiling-server --variant write"
    "ceiling-writev|raw|$server $bin/ringcast-bench ceiling-server --variant writev"
    "ceiling-uring|raw|$server $bin/ringcast-bench ceiling-server --variant uring"
)
# BEFORE=<path to an older ringcast binary>: its app and raw modes run first, beside this
# build's, in the same run (a change's before/after figures; the report adds their ratios).
if [ -n "${BEFORE:-}" ]; then
    before="$BEFORE --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --shards 1 --no-pin --raw-endpoint --log-level warn --io-driver"
    targets=(
        "ringcast-before-io_uring|app|$server $before io-uring"
        "${targets[0]}"
        "ringcast-before-io_uring|raw|$server $before io-uring"
        "${targets[2]}"
        "${targets[@]:1:1}"
        "${targets[@]:3}"
    )
fi
out=$(mktemp)
# Fixed rate: every target once per round, ROUNDS rounds (default 3) alternating, so a slow
# moment of the machine touches every target alike; the report takes each target's medians.
rounds=${ROUNDS:-3}
[ "$short" = 1 ] && rounds=1
for round in $(seq "$rounds"); do
    for t in "${targets[@]}"; do
        IFS='|' read -r label mode cmd <<<"$t"
        echo "== round $round/$rounds: $label ($mode)" >&2
        $load "$bin/ringcast-bench" fanout --label "$label" --mode "$mode" --spawn "$cmd" \
            --subscribers "$subs" --rate "$rate" --duration-secs "$duration" --warmup-secs "$warmup" --json \
            | tee -a "$out" | grep -v '^{' >&2
    done
done
if [ "$short" = 0 ]; then
    for t in "${targets[@]}"; do
        IFS='|' read -r label mode cmd <<<"$t"
        echo "== ramp: $label ($mode)" >&2
        found=$($load "$bin/ringcast-bench" fanout --label "$label" --mode "$mode" --spawn "$cmd" \
            --subscribers "${FIND_SUBS:-100}" --rate "${FIND_START:-100}" --max-rate "${FIND_MAX_RATE:-20000}" --duration-secs 3 --warmup-secs 1 --json --find-max \
            | grep '"find-max"')
        echo "$found" | tee -a "$out" >&2
        # The tail a latency-sensitive client sees: the same subscribers at half that maximum.
        half=$(echo "$found" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["max_rate"] / 2))')
        if [ "$half" -gt 0 ]; then
            $load "$bin/ringcast-bench" fanout --label "$label" --mode "$mode" --spawn "$cmd" --tag half-load \
                --subscribers "${FIND_SUBS:-100}" --rate "$half" --duration-secs "${HALF_DURATION:-10}" --warmup-secs 1 --json \
                | tee -a "$out" | grep -v '^{' >&2
        fi
    done
    # How the cost grows: the same 100,000 deliveries/s spread over more subscribers (fewer
    # messages) and over more rooms (one publisher each), ringcast beside the one-write ceiling.
    if [ "${SCALING:-1}" = 1 ]; then
        for shape in "100 1 1000" "1000 1 100" "10000 1 10" "1000 10 1000" "1000 100 10000"; do
            read -r s_subs s_rooms s_rate <<<"$shape"
            for t in "${targets[0]}" "ringcast-io_uring|raw|$server $ringcast io-uring" \
                "ceiling-write|raw|$server $bin/ringcast-bench ceiling-server --variant write"; do
                IFS='|' read -r label mode cmd <<<"$t"
                echo "== scaling: $label ($mode), $s_subs subscribers in $s_rooms rooms, $s_rate msg/s" >&2
                $load "$bin/ringcast-bench" fanout --label "$label" --mode "$mode" --spawn "$cmd" --tag scaling \
                    --subscribers "$s_subs" --rooms "$s_rooms" --publishers "$s_rooms" --rate "$s_rate" \
                    --duration-secs "$duration" --warmup-secs "$warmup" --json \
                    | tee -a "$out" | grep -v '^{' >&2
            done
        done
    fi
fi
# The harness's own floor: the ceiling server (no work but the write), one subscriber, 1,000
# msg/s. Every latency above includes this much of the load generator itself.
echo "== harness floor (ceiling-write, 1 subscriber)" >&2
$load "$bin/ringcast-bench" fanout --label ceiling-write --mode raw --tag floor \
    --spawn "$server $bin/ringcast-bench ceiling-server --variant write" \
    --subscribers 1 --rate 1000 --duration-secs "$duration" --warmup-secs "$warmup" --json \
    | tee -a "$out" | grep -v '^{' >&2
if [ "$short" = 1 ]; then
    python3 scripts/compare-report.py --check "$out"
else
    python3 scripts/compare-report.py --write docs/benchmarks.md \
        --command "${BEFORE:+BEFORE=<ringcast at ${BEFORE_REV:-an older build}> }benches/compare.sh  (SUBS=$subs RATE=$rate DURATION=$duration ROUNDS=$rounds FIND_SUBS=${FIND_SUBS:-100} FIND_START=${FIND_START:-100})" "$out"
    echo "docs/benchmarks.md updated" >&2
fi
