#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, then runs formatting, lints,
# unit/property/differential tests, the integration tests against the real binary on both I/O
# drivers (with Python and Node clients), and the Autobahn conformance suite.
# `.ci/run` calls this; so can you.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "tools"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt-get update -qq && apt-get install -y -qq nodejs npm
fi
if ! command -v python3 >/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3 python3-pip
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'websockets>=13' 'kosoku>=0.1'
(cd gateway/tests/clients && npm ci --no-audit --no-fund --silent)
# Headless Chromium: the collaborative-editing test (gateway/tests/crdt.rs) and the demo e2e.
command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium fonts-dejavu-core; }
command -v taskset >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux; }
# TLS tests drive the gateway with openssl s_client and curl.
for tool in openssl curl; do
    command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool"; }
done
# The Redis bridge tests start real redis-server processes (standalone and a 3-primary cluster).
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }
command -v redis-cli >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-tools; }
# The failover test runs the shipped HAProxy config; the deploy checks validate every shipped file
# with its own tool (haproxy -c, nginx -t, promtool, systemd-analyze verify).
for pkg in haproxy:haproxy nginx:nginx promtool:prometheus systemd-analyze:systemd; do
    command -v "${pkg%%:*}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${pkg#*:}"; }
done
cargo --version; cargo fmt --version; cargo clippy --version
python3 -c 'import websockets; print("websockets", websockets.__version__)'
node --version; command -v kosoku; redis-server --version

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "import circles in the gateway (none of more than three files: docs/architecture.md §5)"
python3 scripts/import-cycles.py --max 3 gateway/src

log=$(mktemp)
step "cargo test (every crate; the gateway on io_uring)"
RINGCAST_IO_DRIVER=io-uring cargo test --workspace 2>&1 | tee -a "$log"

step "deploy files, each checked by its own tool"
scripts/check-deploy.sh target/debug/ringcast 2>&1 | tee -a "$log"

step "Debian package: cargo deb, dpkg -i, files/user/--version/check-config, dpkg -r, dpkg -P leaves nothing"
scripts/check-package.sh 2>&1 | tee -a "$log"

step "container build file, linted by hadolint (no builder works here: docs/decisions.md)"
scripts/check-container.sh 2>&1 | tee -a "$log"

step "gateway integration tests on epoll"
RINGCAST_IO_DRIVER=epoll cargo test -p gateway --test gateway --test interop --test security --test tls --test delivery --test sse --test api --test opfuzz 2>&1 | tee -a "$log"

step "benchmark harness smoke test (every target: no loss, no duplicates, no errors)"
benches/compare.sh --short 2>&1 | tee -a "$log"

step "TypeScript client SDK against the real gateway (node:test)"
(cd clients/js && npm ci --no-audit --no-fund --silent && npm test) 2>&1 | tee -a "$log"

step "demo dashboard end to end in headless Chromium (playwright-core)"
(cd clients/js/e2e && npm ci --no-audit --no-fund --silent && npm test) 2>&1 | tee -a "$log"

step "TLS path smoke test (plain and TLS listeners: no loss, no duplicates)"
benches/tls-cost.sh --short 2>&1 | tee -a "$log"

step "cross-node smoke test (embedded, one Redis node, two Redis nodes: no loss, no duplicates)"
benches/crossnode.sh --short 2>&1 | tee -a "$log"

step "Pusher harness smoke test (pusher-protocol subscribers, signed HTTP API events: no loss, no duplicates)"
benches/pusher-compare.sh --short 2>&1 | tee -a "$log"

step "fair egress smoke test (a calm room keeps its p99 within 10 ms beside a flood)"
benches/fairness.sh --short 2>&1 | tee -a "$log"

step "soak smoke test (30 s of churn: descriptors and RSS back to their level, nothing lost)"
benches/soak.sh --short 2>&1 | tee -a "$log"

# One driver: the codec is the same on both, and the epoll driver's I/O is covered by the epoll
# integration tests above (`scripts/autobahn.sh epoll` runs it there by hand).
step "Autobahn TestSuite (kosoku) on io_uring"
scripts/autobahn.sh io-uring target/release/ringcast | tee -a "$log"

step "Autobahn client cases against the Rust client SDK's WebSocket layer"
scripts/autobahn-client.sh | tee -a "$log"

# One closing line for the whole run, from every runner's own summary lines.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^autobahn [a-z-]+: [0-9]+ passed/ { p += $3; f += $5 }
     /^compare smoke: [0-9]+ passed/ { p += $3; f += $5 }
     /^tls smoke: [0-9]+ passed/ { p += $3; f += $5 }
     /^crossnode smoke: [0-9]+ passed/ { p += $3; f += $5 }
     /^fairness smoke: [0-9]+ passed/ { p += $3; f += $5 }
     /^soak smoke: [0-9]+ passed/ { p += $3; f += $5 }
     /^pusher smoke: [0-9]+ passed/ { p += $3; f += $5 }
     /^deploy checks: [0-9]+ passed/ { p += $3; f += $5 }
     /^package checks: [0-9]+ passed/ { p += $3; f += $5 }
     /^container checks: [0-9]+ passed/ { p += $3; f += $5 }
     /^# pass [0-9]+$/ { p += $3 }
     /^# fail [0-9]+$/ { f += $3 }
     /^ℹ pass [0-9]+$/ { p += $3 }
     /^ℹ fail [0-9]+$/ { f += $3 }
     END { printf "\n%d passed, %d failed\n", p, f }' "$log"
