#!/usr/bin/env bash
# Builds the Debian package (`cargo deb -p gateway`: a release build of the gateway and
# [package.metadata.deb] in gateway/Cargo.toml), installs it with `dpkg -i` on this machine, checks
# the files, their owners and modes, the user, `ringcast --version` and `ringcast check-config`,
# that the service was neither enabled nor started, then removes it (`dpkg -r`: binary gone,
# conffile kept) and purges it (`dpkg -P`: nothing left). Exits non-zero if any check fails.
# Needs root and dpkg (Debian/Ubuntu); installs cargo-deb if it is missing.
# Refuses to run where a `ringcast` user or /etc/ringcast exists that the package did not make
# (a hand install: the purge would remove them).
# Usage: scripts/check-package.sh
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

if [ "$(id -u)" != 0 ]; then
    echo "check-package: needs root (dpkg -i / -P)" >&2
    exit 2
fi
installed() { dpkg-query -W -f='${Status}' ringcast 2>/dev/null | grep -q 'install ok installed\|config-files'; }
if installed; then
    echo "check-package: a ringcast package is on this machine already (an earlier run?); purging it first"
    dpkg -P ringcast >/dev/null || exit 2
fi
if getent passwd ringcast >/dev/null || getent group ringcast >/dev/null || [ -e /etc/ringcast ]; then
    echo "check-package: a ringcast user/group or /etc/ringcast exists and is not the package's; not touching it" >&2
    exit 2
fi

# shellcheck source=scripts/check-lib.sh
. scripts/check-lib.sh
# owner:group and octal mode of a path, as `stat` prints them.
has_mode() { [ "$(stat -c '%U:%G %a' "$1")" = "$2" ] || { echo "$1: $(stat -c '%U:%G %a' "$1"), want $2"; return 1; }; }
# No running process is the packaged binary (other ringcast processes may run on this machine).
packaged_binary_not_running() {
    local exe
    for exe in /proc/[0-9]*/exe; do
        if [ "$(readlink "$exe" 2>/dev/null)" = /usr/bin/ringcast ]; then
            echo "running: ${exe%/exe}"
            return 1
        fi
    done
}

# Leave nothing behind if a check fails half way.
trap 'installed && { echo "check-package: purging the package after a failure"; dpkg -P ringcast >/dev/null; }' EXIT

if ! command -v cargo-deb >/dev/null; then
    echo "==> cargo install cargo-deb --locked"
    cargo install cargo-deb --locked || exit 1
fi
echo "==> cargo deb -p gateway"
if ! deb=$(cargo deb -p gateway | tail -n 1) || [ ! -f "$deb" ]; then
    echo "FAIL  cargo deb -p gateway did not produce a package"
    exit 1
fi
echo "package: $deb ($(du -h "$deb" | cut -f1))"
files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }')

echo "==> dpkg -i"
check "dpkg -i installs the package" dpkg -i "$deb"
check "dpkg -l: installed" bash -c 'dpkg -l ringcast | grep -q "^ii  ringcast "'
check "/usr/bin/ringcast root:root 0755" has_mode /usr/bin/ringcast "root:root 755"
check "/etc/ringcast root:ringcast 0750" has_mode /etc/ringcast "root:ringcast 750"
check "/etc/ringcast/ringcast.toml root:ringcast 0640" has_mode /etc/ringcast/ringcast.toml "root:ringcast 640"
check "/etc/ringcast/ringcast.toml is a conffile" bash -c 'dpkg-query -W -f="\${Conffiles}" ringcast | grep -q "^ /etc/ringcast/ringcast.toml "'
check "the conffile is deploy/systemd/ringcast.toml" cmp /etc/ringcast/ringcast.toml deploy/systemd/ringcast.toml
check "systemd unit 0644" has_mode /usr/lib/systemd/system/ringcast.service "root:root 644"
check "systemd unit drop-in 0644" has_mode /usr/lib/systemd/system/ringcast.service.d/10-package.conf "root:root 644"
check "the unit runs /usr/bin/ringcast" bash -c 'grep -qx "ExecStart=/usr/bin/ringcast --config /etc/ringcast/ringcast.toml" /usr/lib/systemd/system/ringcast.service.d/10-package.conf &&
    grep -qx "ExecStartPre=/usr/bin/ringcast check-config /etc/ringcast/ringcast.toml" /usr/lib/systemd/system/ringcast.service.d/10-package.conf'
if command -v systemd-analyze >/dev/null; then
    check "systemd-analyze verify ringcast.service (with its drop-in)" systemd-analyze verify /usr/lib/systemd/system/ringcast.service
fi
for profile in low-latency high-connections; do
    for f in sysctl.conf limits.conf profile.toml; do
        check "tuning profile $profile/$f" has_mode "/usr/share/ringcast/tuning/profiles/$profile/$f" "root:root 644"
    done
    check "ringcast tune apply --dry-run --profile /usr/share/ringcast/tuning/profiles/$profile" \
        /usr/bin/ringcast tune apply --dry-run --profile "/usr/share/ringcast/tuning/profiles/$profile"
done
check "/usr/share/doc/ringcast/copyright" test -s /usr/share/doc/ringcast/copyright
check "/usr/share/doc/ringcast/README.md" test -s /usr/share/doc/ringcast/README.md
check "user ringcast: system uid, group ringcast, no login shell" bash -c '
    IFS=: read -r _ _ uid gid _ home shell < <(getent passwd ringcast)
    [ "$uid" -lt 1000 ] && [ "$(getent group ringcast | cut -d: -f3)" = "$gid" ] &&
        [ "$shell" = /usr/sbin/nologin ] && [ "$home" = /nonexistent ] && [ ! -e /nonexistent ]'
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
version=$(grep -m1 '^version = ' Cargo.toml | cut -d'"' -f2)
check "ringcast --version names $version, commit $commit and the drivers" \
    bash -c '/usr/bin/ringcast --version | tee /dev/stderr | grep -qxF "ringcast $1 (commit $2, drivers: io_uring epoll)"' _ "$version" "$commit"
check "ringcast check-config /etc/ringcast/ringcast.toml" /usr/bin/ringcast check-config /etc/ringcast/ringcast.toml
check "ringcast check-config as the ringcast user" setpriv --reuid=ringcast --regid=ringcast --init-groups \
    /usr/bin/ringcast check-config /etc/ringcast/ringcast.toml
check "the service is not enabled" bash -c '! ls /etc/systemd/system/*.wants/ringcast.service 2>/dev/null | grep -q . &&
    ! systemctl is-enabled --quiet ringcast.service 2>/dev/null'
if [ -d /run/systemd/system ]; then
    check "the service is not active" bash -c '! systemctl is-active --quiet ringcast.service'
fi
check "the packaged binary is not running" packaged_binary_not_running

echo "==> dpkg -r"
check "dpkg -r ringcast" dpkg -r ringcast
check "the binary is gone" test ! -e /usr/bin/ringcast
check "the unit is gone" test ! -e /usr/lib/systemd/system/ringcast.service
check "the conffile is kept" test -f /etc/ringcast/ringcast.toml
check "dpkg -l: config files only" bash -c 'dpkg -l ringcast | grep -q "^rc  ringcast "'

echo "==> dpkg -P"
check "dpkg -P ringcast" dpkg -P ringcast
check "no /etc/ringcast" test ! -e /etc/ringcast
check "no /var/lib/ringcast" test ! -e /var/lib/ringcast
check "no /usr/share/ringcast" test ! -e /usr/share/ringcast
check "no /usr/share/doc/ringcast" test ! -e /usr/share/doc/ringcast
check "no /usr/lib/systemd/system/ringcast.service.d" test ! -e /usr/lib/systemd/system/ringcast.service.d
check "no user ringcast" bash -c '! getent passwd ringcast'
check "no group ringcast" bash -c '! getent group ringcast'
left=$(for f in $files; do [ -e "$f" ] && echo "$f"; done)
check "every file of the package is gone" test -z "$left"
check "dpkg -l ringcast: not installed" bash -c '! dpkg-query -W -f="\${Status}" ringcast 2>/dev/null | grep -q "installed\|config-files"'

echo "package checks: $pass passed, $fail failed ($(($(date +%s) - started)) s)"
[ "$fail" = 0 ]
