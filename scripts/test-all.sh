#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, then runs formatting,
# lints and every test. `.ci/run` calls this; so can you.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
cargo --version
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --version
cargo clippy --version

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace 2>&1 | tee /tmp/ringcast-test.log
# One closing line for the whole run, from cargo's per-binary summaries.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ncargo: %d passed, %d failed\n", p, f }' /tmp/ringcast-test.log
