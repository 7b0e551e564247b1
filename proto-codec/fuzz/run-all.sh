#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 300), one after another.
# Needs a nightly toolchain and cargo-fuzz (installed here if missing). Crashes land in
# artifacts/<target>/; turn each into a regression test before fixing it.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-300}"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly install cargo-fuzz --locked
fi
targets=$(cargo +nightly fuzz list)
cargo +nightly fuzz build >/dev/null
for t in $targets; do
    mkdir -p "corpus/$t" "seeds/$t"
    echo "== $t: ${SECONDS_EACH}s"
    log="$(mktemp)"
    # A build failure, a crash or a timeout makes libFuzzer (and so this script) exit non-zero.
    if ! cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz target $t FAILED; artifacts in proto-codec/fuzz/artifacts/$t" >&2
        exit 1
    fi
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|Done [0-9]+ runs" "$log" || true
    rm -f "$log"
done
echo "all fuzz targets ran ${SECONDS_EACH}s each without a crash"
