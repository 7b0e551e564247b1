#!/bin/sh
# Installs and starts Soketi 1.6.1, the reference Pusher-protocol server the pusher-*.mjs scripts
# were developed against (not a dependency of the tests: a tool for comparisons and benchmarks).
#
#   sh soketi-reference.sh [DIR=/tmp/soketi] [PORT=6001]     # foreground; Ctrl-C or kill to stop
#
# App: id app1, key key1, secret secret1, client events on; user authentication on when
# USER_AUTH=true (Soketi then closes connections that do not sign in within 30 s: keep it off for
# load runs). `npm install @soketi/soketi` alone fails here: Soketi pins uWebSockets.js to a GitHub
# tarball (github.com/uNetworking/uWebSockets.js#v20.10.0), which npm fetches with git over the
# network (no git host is reachable). The npm-published build @trufflesuite/uws-js-unofficial
# 20.30.0-unofficial.0 (it ships uws_linux_x64_115.node, for Node 20) replaces it through npm
# "overrides".
set -eu
DIR=${1:-/tmp/soketi}
PORT=${2:-6001}
mkdir -p "$DIR"
cd "$DIR"
if [ ! -d node_modules/@soketi/soketi ]; then
  cat > package.json <<'JSON'
{
  "name": "soketi-reference",
  "private": true,
  "overrides": { "uWebSockets.js": "npm:@trufflesuite/uws-js-unofficial@20.30.0-unofficial.0" }
}
JSON
  npm install --no-audit --no-fund @soketi/soketi@1.6.1
fi
export SOKETI_HOST=127.0.0.1 SOKETI_PORT="$PORT" SOKETI_METRICS_ENABLED=false \
  SOKETI_DEFAULT_APP_ID=app1 SOKETI_DEFAULT_APP_KEY=key1 SOKETI_DEFAULT_APP_SECRET=secret1 \
  SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES=true \
  SOKETI_DEFAULT_APP_USER_AUTHENTICATION="${USER_AUTH:-false}" SOKETI_DEBUG="${SOKETI_DEBUG:-false}"
exec node node_modules/@soketi/soketi/bin/server.js start
