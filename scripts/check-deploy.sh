#!/usr/bin/env bash
# Checks every shipped deploy file with its own tool: the ringcast config with `check-config`,
# the systemd unit with `systemd-analyze verify`, the HAProxy configs with `haproxy -c`, the nginx
# config with `nginx -t`, the Prometheus config, alert rules and their unit tests with
# `promtool`, and the Grafana dashboard as JSON. Paths to certificates and keys are pointed at
# throwaway files made here; nothing else is changed.
# Usage: scripts/check-deploy.sh [RINGCAST_BINARY]   (default target/debug/ringcast)
set -uo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/ringcast}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=scripts/check-lib.sh
. scripts/check-lib.sh

# Throwaway key material for the paths the files name.
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/jwt.key" 2>/dev/null
openssl ec -in "$tmp/jwt.key" -pubout -out "$tmp/jwt.pub" 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=ringcast.test -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
cat "$tmp/tls.crt" "$tmp/tls.key" >"$tmp/tls.pem"

# The example configuration, as shipped (no key: the package installs it as the default), and
# with its [[auth.keys]] block uncommented and pointed at a throwaway key.
check "ringcast check-config deploy/systemd/ringcast.toml" "$bin" check-config deploy/systemd/ringcast.toml
sed -E -e 's/^#(\[\[auth\.keys\]\]|kid = |alg = |public_key_file = )/\1/' \
    -e "s|/etc/ringcast/jwt/2026-11.pub|$tmp/jwt.pub|" deploy/systemd/ringcast.toml >"$tmp/ringcast.toml"
check "ringcast check-config deploy/systemd/ringcast.toml with [[auth.keys]]" \
    bash -c '"$1" check-config "$2" | grep -q "^kid = \"2026-11\""' _ "$bin" "$tmp/ringcast.toml"

# The unit, with the binary and config where this checkout has them.
mkdir -p "$tmp/unit"
sed -e "s|/usr/local/bin/ringcast|$bin|g" -e "s|/etc/ringcast/ringcast.toml|$tmp/ringcast.toml|g" \
    deploy/systemd/ringcast.service >"$tmp/unit/ringcast.service"
check "systemd-analyze verify deploy/systemd/ringcast.service" systemd-analyze verify "$tmp/unit/ringcast.service"

export LB_BIND=127.0.0.1:18000 LB_NODE_A=127.0.0.1:18081 LB_NODE_B=127.0.0.1:18082 \
    LB_NODE_A_ADMIN_HOST=127.0.0.1 LB_NODE_A_ADMIN_PORT=19091 \
    LB_NODE_B_ADMIN_HOST=127.0.0.1 LB_NODE_B_ADMIN_PORT=19092
check "haproxy -c deploy/haproxy/haproxy.cfg" haproxy -c -f deploy/haproxy/haproxy.cfg
check "haproxy -c deploy/haproxy/haproxy-tls-passthrough.cfg" haproxy -c -f deploy/haproxy/haproxy-tls-passthrough.cfg
sed "s|/etc/haproxy/certs/ringcast.pem|$tmp/tls.pem|" deploy/haproxy/haproxy-tls-termination.cfg >"$tmp/haproxy-tls.cfg"
check "haproxy -c deploy/haproxy/haproxy-tls-termination.cfg" haproxy -c -f "$tmp/haproxy-tls.cfg"
check "haproxy -c refuses a missing variable" bash -c '! env -u LB_NODE_A haproxy -c -f deploy/haproxy/haproxy.cfg >/dev/null 2>&1'

mkdir -p "$tmp/nginx/logs"
sed -e "s|/etc/nginx/certs/ringcast.crt|$tmp/tls.crt|" -e "s|/etc/nginx/certs/ringcast.key|$tmp/tls.key|" \
    deploy/nginx/ringcast.conf >"$tmp/nginx/ringcast.conf"
cat >"$tmp/nginx/nginx.conf" <<CONF
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log;
events {}
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    include $tmp/nginx/ringcast.conf;
}
CONF
check "nginx -t deploy/nginx/ringcast.conf" nginx -t -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf"

check "promtool check config deploy/prometheus/prometheus.yml" promtool check config deploy/prometheus/prometheus.yml
check "promtool check rules deploy/prometheus/alerts.yml" promtool check rules deploy/prometheus/alerts.yml
check "promtool test rules deploy/prometheus/alerts_test.yml" promtool test rules deploy/prometheus/alerts_test.yml
check "deploy/grafana/ringcast.json is JSON" python3 -m json.tool deploy/grafana/ringcast.json

# Every ringcast_* name the monitoring files use exists in the code.
missing=$(grep -ohE 'ringcast_[a-z_]+' deploy/prometheus/alerts.yml deploy/grafana/ringcast.json | sort -u |
    sed -E 's/_(bucket|sum|count)$//' | sort -u | while read -r m; do
        grep -rqF "\"$m\"" gateway/src broker-bridge/src || echo "$m"
    done)
check "every metric in alerts.yml and ringcast.json exists in the code" test -z "$missing"
[ -n "$missing" ] && echo "      missing: $missing"

echo "deploy checks: $pass passed, $fail failed"
[ "$fail" = 0 ]
