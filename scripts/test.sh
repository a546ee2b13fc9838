#!/usr/bin/env bash
# Run ragtune's test suite with everything it needs, on Debian/Ubuntu:
#   1. Debian's chromium and fonts-noto-cjk (the report's end-to-end test renders report.html in headless
#      Chromium and fails without it), installed with apt-get when missing (needs root or sudo);
#   2. ragtune itself, editable, with the dev extras;
#   3. pytest, with any arguments given to this script:  bash scripts/test.sh -q tests/report
# RAGTUNE_SKIP_INSTALL=1 skips steps 1 and 2.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${RAGTUNE_SKIP_INSTALL:-0}" != "1" ]]; then
    packages=()
    command -v chromium >/dev/null 2>&1 || packages+=(chromium)
    dpkg -s fonts-noto-cjk >/dev/null 2>&1 || packages+=(fonts-noto-cjk)
    if ((${#packages[@]})); then
        if ! command -v apt-get >/dev/null 2>&1; then
            echo "scripts/test.sh: ${packages[*]} missing and apt-get is not available; install Chromium and a" \
                 "CJK font (Noto Sans CJK) yourself, with chromium on PATH" >&2
            exit 1
        fi
        sudo=""
        if [[ "$(id -u)" != "0" ]]; then
            command -v sudo >/dev/null 2>&1 || { echo "scripts/test.sh: installing ${packages[*]} needs root" >&2; exit 1; }
            sudo="sudo"
        fi
        echo "scripts/test.sh: installing ${packages[*]} with apt-get" >&2
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
    fi
    python -m pip install -q torch==2.13.0 -e '.[dev]'
fi

exec python -m pytest "$@"
