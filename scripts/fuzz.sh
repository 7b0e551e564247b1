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
#
# Crates: proto-codec/fuzz (frame_header, decoder, inflate, handshake, protocol_op, server_event)
# and gateway/fuzz (config, jwt). Each target's check is a function in the crate's src/lib.rs,
# which the crate's tests/fuzz_seeds.rs also replays every committed input through on stable.
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

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly install cargo-fuzz --locked
fi

fuzz=(cargo +nightly fuzz)
failed=()
for crate in "${CRATES[@]}"; do
    targets=$("${fuzz[@]}" list --fuzz-dir "$crate")
    for t in $targets; do
        [[ $# -eq 0 || "$wanted" == *" $t "* ]] || continue
        corpus="$crate/corpus/$t"
        inputs=("$crate/seeds/$t")
        [[ -d "$crate/regressions/$t" ]] && inputs+=("$crate/regressions/$t")
        mkdir -p "$corpus"
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
            -print_final_stats=1 >"$log" 2>&1; then
            grep -E "#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)" "$log" || true
            echo "corpus/$t: $(find "$corpus" -type f | wc -l) files"
        else
            tail -40 "$log" >&2
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
