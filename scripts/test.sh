#!/usr/bin/env bash
# The README's test command: installs PathoFlash with its test dependencies into the current Python,
# makes sure headless Chromium is there for the viewer test, then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

"$PY" -m pip install --quiet --disable-pip-version-check -e '.[test]'

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "scripts/test.sh: the viewer test needs Debian's chromium (apt-get install chromium)" >&2
        exit 1
    fi
fi

exec "$PY" -m pytest "$@"
