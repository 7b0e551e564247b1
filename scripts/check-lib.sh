# shellcheck shell=bash
# What the check scripts share (source it): `check NAME COMMAND...` runs the command, prints
# `ok`/`FAIL` with its output's tail, and counts into $pass and $fail.
pass=0
fail=0
check() {
    local name=$1
    shift
    if out=$("$@" 2>&1); then
        echo "ok    $name"
        pass=$((pass + 1))
    else
        echo "FAIL  $name"
        echo "$out" | sed 's/^/      /' | tail -20
        fail=$((fail + 1))
    fi
}
