#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser: the targets of both fuzz crates, one after another.
#
#   scripts/fuzz.sh [--short | SECONDS] [TARGET...]   run each target SECONDS (default 300;
#                                                     --short: 60); default: every target
#   scripts/fuzz.sh --promote [TARGET...]             minimize each working corpus (cargo fuzz
#                                                     cmin), then add to seeds/<target>/ a small
#                                                     set of its inputs (set cover, edges without
#                                                     hit counts) reaching every edge the seeds
#                                                     do not
#   FUZZ_ARGS='-fork=1 -ignore_crashes=1' scripts/fuzz.sh ...
#                                                     libFuzzer flags added after (so overriding)
#                                                     the ones below; this one goes on after a
#                                                     crash, saving each, for a target with a
#                                                     known finding not fixed yet
#
# Crates: proto-codec/fuzz (frame_header, decoder, inflate, handshake, protocol_op, server_event)
# and gateway/fuzz (config, jwt, yrs_update, awareness, pusher_api, stream_query, node_live). Each target's
# check is a function in the crate's src/lib.rs, which the crate's tests/fuzz_seeds.rs also
# replays every committed input through on stable.
# Inputs: <crate>/fuzz/corpus/<target>/ (working corpus, not committed; new inputs land here),
# seeds/<target>/ and regressions/<target>/ (committed). A crash, leak, timeout (-timeout, in
# seconds) or an RSS over -rss_limit_mb stops that target, is saved under
# <crate>/fuzz/artifacts/<target>/ and makes this script exit non-zero after the other targets.
# Minimize it with `cargo +nightly fuzz tmin --fuzz-dir <crate>/fuzz <target> <artifact>`, add
# it to regressions/<target>/, then fix the bug.
#
# Sanitizers: cargo fuzz builds with AddressSanitizer by default (-s address), which on Linux
# includes LeakSanitizer; libFuzzer's -detect_leaks=1 (its default under ASan, passed explicitly
# here) makes a leak found at the end of an input a failure like a crash. Targets are built with
# debug assertions and overflow checks (-a), so an arithmetic overflow is a finding too.
#
# Unwinding: yrs_update and awareness need panics to unwind, because the gateway contains yrs's
# panics with catch_unwind (gateway::contain, docs/decisions.md), which -Cpanic=abort would turn
# into aborts. No flag is needed for it: cargo fuzz (0.13) adds no -Cpanic=abort to RUSTFLAGS, and
# gateway/fuzz's release profile says panic = "unwind". libfuzzer-sys's panic hook aborts on
# every panic, even a caught one; those two checks install gateway::contain::install_hook over it
# (under cfg(fuzzing)), which aborts only outside contain. RUSTFLAGS asking for abort is refused.
#
# Allocations, for the targets that feed yrs (yrs_update, awareness): yrs reserves memory by the
# counts an update or awareness message declares (try_reserve in Update::decode,
# AwarenessUpdate::decode, ...), so four bytes ask for gigabytes (docs/reliability.md §2, finding
# F1, inputs in regressions/). In production a reservation the allocator refuses is a decode
# error, one it grants costs the shard the time to initialise it; under ASan a refused one aborts
# (allocator_may_return_null=0) and libFuzzer reports any malloc over -malloc_limit_mb as a crash,
# so these targets would stop on F1 within seconds. They run with ASan refusing (null) any single
# allocation over 64 MB: try_reserve then fails as a refused one does in production, and an
# infallible allocation that size still aborts and is a finding. FUZZ_STRICT_ALLOC=1 runs them
# without that (F1's inputs then fail until vendor/yrs bounds its reservations).
# Needs the nightly toolchain and cargo-fuzz (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

CRATES=(proto-codec/fuzz gateway/fuzz)
mode=run
seconds=300
case "${1:-}" in
--short) seconds=60; shift ;;
--promote) mode=promote; shift ;;
-*) echo "usage: $0 [--short | SECONDS | --promote] [TARGET...]" >&2; exit 2 ;;
'' | *[!0-9]*) ;;
*) seconds=$1; shift ;;
esac
wanted=" $* "
if [[ "${RUSTFLAGS:-}" == *panic=abort* ]]; then
    echo "RUSTFLAGS has panic=abort: gateway::contain (yrs_update, awareness) needs unwinding" >&2
    exit 2
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly install cargo-fuzz --locked
fi

fuzz=(cargo +nightly fuzz)
failed=()
# ASAN_OPTIONS for a target: the caller's, plus those of "Allocations" above (cargo fuzz adds its
# own to them).
caller_asan=${ASAN_OPTIONS:-}
# libFuzzer's final lines and statistics; in fork mode (FUZZ_ARGS) its last status line and a
# count of the failures it went on after, by kind.
summary() {
    grep -E "#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)" "$1" || true
    grep -E "^#[0-9]+: cov:" "$1" | tail -1 || true
    grep -E "ERROR: AddressSanitizer: [a-z-]+|ERROR: libFuzzer: [a-z-]+|panicked at [^ ]+" -o "$1" |
        sed -E 's/:[0-9]+:$//' | sort | uniq -c || true
}
asan_options() {
    local opts=$caller_asan
    if [[ ${FUZZ_STRICT_ALLOC:-0} != 1 && ( $1 == yrs_update || $1 == awareness ) ]]; then
        opts="${opts:+$opts:}allocator_may_return_null=1:max_allocation_size_mb=64"
    fi
    echo "$opts"
}
for crate in "${CRATES[@]}"; do
    targets=$("${fuzz[@]}" list --fuzz-dir "$crate")
    for t in $targets; do
        [[ $# -eq 0 || "$wanted" == *" $t "* ]] || continue
        corpus="$crate/corpus/$t"
        inputs=("$crate/seeds/$t")
        [[ -d "$crate/regressions/$t" ]] && inputs+=("$crate/regressions/$t")
        mkdir -p "$corpus"
        export ASAN_OPTIONS
        ASAN_OPTIONS=$(asan_options "$t")
        if [[ $mode == promote ]]; then
            echo "== $crate $t: cmin, then merge into seeds"
            "${fuzz[@]}" cmin -a --fuzz-dir "$crate" "$t" "$corpus" >/dev/null 2>&1
            "${fuzz[@]}" run -a --fuzz-dir "$crate" "$t" "$crate/seeds/$t" "$corpus" -- \
                -merge=1 -set_cover_merge=1 -use_counters=0 2>&1 |
                grep -E "MERGE-OUTER: [0-9]+ new files" || true
            echo "seeds/$t: $(find "$crate/seeds/$t" -type f | wc -l) files, $(du -sk "$crate/seeds/$t" | cut -f1) KiB"
            continue
        fi
        echo "== $crate $t: ${seconds}s"
        log="$(mktemp)"
        # A crash, a leak, a timeout or a build failure makes cargo fuzz exit non-zero.
        if "${fuzz[@]}" run -a --fuzz-dir "$crate" "$t" "$corpus" "${inputs[@]}" -- \
            -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -detect_leaks=1 \
            -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1; then
            summary "$log"
            echo "corpus/$t: $(find "$corpus" -type f | wc -l) files"
        else
            tail -40 "$log" >&2
            summary "$log" >&2
            echo "fuzz target $t FAILED; artifacts in $crate/artifacts/$t" >&2
            failed+=("$t")
        fi
        rm -f "$log"
    done
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
if [[ $mode == run ]]; then
    echo "every selected fuzz target ran ${seconds}s without a finding"
fi
